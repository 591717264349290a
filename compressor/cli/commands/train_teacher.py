"""`compressor train-teacher`: train a teacher for users who have none (and for the demo)."""

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
    from compressor.models.build import build_from_arch

    dataset = dataset_from_args(args)
    torch.manual_seed(args.seed)
    model = build_from_arch(args.arch, dataset.num_classes, dataset.input_shape)
    if not args.json:
        err_console.print(f"training {args.arch} on {dataset.name} ({len(dataset.train_x)} images, "
                          f"{dataset.input_shape}) for {args.epochs} epochs...")
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
    save_checkpoint(args.out, Checkpoint(model.state_dict(), args.arch, dataset.num_classes, dataset.input_shape, meta))
    if args.json:
        print_json({**meta, "checkpoint": args.out, "params": sum(p.numel() for p in model.parameters())})
    else:
        print_table(None, ["teacher", "params", "val acc %", "test acc %", "seconds", "checkpoint"],
                    [(args.arch, sum(p.numel() for p in model.parameters()), round(100 * result.val_accuracy, 2),
                      round(100 * result.test_accuracy, 2), round(result.seconds, 1), args.out)])
    return 0
