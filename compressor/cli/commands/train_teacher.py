"""`compressor train-teacher`: train a teacher for users who have none (and for the demo).

The checkpoint records what the teacher was trained on, so `compress` and
`distill` feed it the same: the preprocessing (the training split's
per-channel mean and std at this size) and, for a torchvision architecture,
the stem (`--stem auto`: the small-image stem for inputs of up to 64 px,
compressor.models.build), stored in the arch string.
"""

from __future__ import annotations

import argparse

from compressor.cli.common import positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from compressor.data.datasets import add_data_args

    parser = sub.add_parser(
        "train-teacher",
        help="train a teacher network on your data",
        description="Train a classifier (a torchvision architecture or a zoo family) with cross-entropy, "
        "optionally with random-shift augmentation, and save a compressor checkpoint usable as --teacher.",
    )
    parser.add_argument("--arch", default="torchvision:resnet18", help="torchvision:ARCH or zoo:FAMILY (default %(default)s)")
    parser.add_argument("--stem", choices=("auto", "small", "imagenet"), default="auto",
                        help="torchvision archs: small = 3x3 stride-1 first conv and no max-pool (keeps a small "
                             "image's resolution), imagenet = torchvision's stock stem; auto = small for images of "
                             "up to 64 px (default auto)")
    add_data_args(parser)
    parser.add_argument("--epochs", type=positive_int, default=15, help="epochs (default %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=0.05, help="peak learning rate (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default %(default)s)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="random shifts of up to 3 px (default on)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--out", required=True, help="checkpoint file to write, e.g. teacher.pt")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compressor.cli.console import epoch_progress
    import torch

    from compressor.models.checkpoint import Checkpoint, save_checkpoint
    from compressor.cli.console import err_console, print_json, print_table
    from compressor.data.datasets import dataset_from_args
    from compressor.train.distill import TrainConfig, train_student
    from compressor.models.build import auto_stem, build_from_arch, parse_torchvision_arch, torchvision_arch

    raw = dataset_from_args(args)
    dataset = raw.normalised(raw.student_preprocessing())
    arch, stem = args.arch, None
    if arch.startswith("torchvision:"):
        name, stem = parse_torchvision_arch(arch)
        if ":stem=" not in arch:
            stem = auto_stem(dataset.input_shape) if args.stem == "auto" else args.stem
        arch = torchvision_arch(name, stem)
    torch.manual_seed(args.seed)
    model = build_from_arch(arch, dataset.num_classes, dataset.input_shape)
    if not args.json:
        if stem is not None:
            err_console.print("stem: " + ("small-image (3x3 stride-1 first conv, no max-pool) for "
                                          f"{dataset.input_shape[1]} px inputs; --stem imagenet keeps torchvision's"
                                          if stem == "small" else "torchvision's stock ImageNet stem"), markup=False)
        err_console.print(f"training {arch} on {dataset.name} ({len(dataset.train_x)} images, "
                          f"{dataset.input_shape}) for {args.epochs} epochs...", markup=False)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, augment=args.augment,
                         seed=args.seed, alpha=0.0)
    result = train_student(model, dataset, config, evaluate_test=True,
                           progress=None if args.json else epoch_progress)
    if result.status != "ok":
        from compressor.errors import UserError

        raise UserError(f"training failed: {result.reason}")
    meta = {"val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy, "epochs": args.epochs,
            "augment": args.augment, "data": dataset.name, "data_split": dataset.split_identity,
            "seconds": result.seconds}
    save_checkpoint(args.out, Checkpoint(model.state_dict(), arch, dataset.num_classes, dataset.input_shape, meta,
                                         preprocessing=dataset.preprocessing))
    if args.json:
        print_json({**meta, "arch": arch, "preprocessing": dataset.preprocessing.to_dict(), "checkpoint": args.out,
                    "params": sum(p.numel() for p in model.parameters())})
    else:
        print_table(None, ["teacher", "params", "val acc %", "test acc %", "seconds", "checkpoint"],
                    [(arch, sum(p.numel() for p in model.parameters()), round(100 * result.val_accuracy, 2),
                      round(100 * result.test_accuracy, 2), round(result.seconds, 1), args.out)])
    return 0
