"""`compressor distill`: train one given student from a teacher (the hand-designed baseline users compare against)."""

from __future__ import annotations

import argparse

from compressor.cli.common import positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from compressor.data.datasets import add_data_args
    from compressor.train.distill import TrainConfig
    from compressor.models.teachers import add_teacher_args

    parser = sub.add_parser(
        "distill",
        help="train one given student with knowledge distillation from a teacher",
        description="Train STUDENT (torchvision:ARCH, zoo:FAMILY[:knob=value,...], nago, or an ArchSpec JSON file) "
        "with the KD loss (1-α)·CE + α·τ²·KL from the teacher's cached logits, or with plain cross-entropy "
        "(--no-kd); saves DIR/student.pt (state dict + architecture) and DIR/result.json.",
    )
    add_teacher_args(parser, required=False)
    parser.add_argument("--student", required=True, help="torchvision:ARCH, zoo:FAMILY[:k=v,...], nago, or SPEC.json")
    add_data_args(parser)
    parser.add_argument("--epochs", type=positive_int, default=15, help="epochs (default %(default)s)")
    parser.add_argument("--alpha", type=float, default=0.5, help="KD weight α in [0, 1] (default %(default)s)")
    parser.add_argument("--tau", type=positive_float, default=4.0, help="KD temperature τ (default %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=TrainConfig.lr, help="peak learning rate (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size, help="batch size (default %(default)s)")
    parser.add_argument("--no-kd", action="store_true", help="plain cross-entropy, no teacher")
    parser.add_argument("--seed", type=int, default=0, help="seed of the student's initialisation and training")
    parser.add_argument("--cache-dir", help="teacher-logits cache (default $COMPRESSOR_CACHE or ~/.cache/compressor)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compressor.cli.console import epoch_progress
    import json
    from pathlib import Path

    import torch

    from compressor.models.checkpoint import Checkpoint, save_checkpoint
    from compressor.cli.console import print_json, print_table
    from compressor.data.datasets import dataset_from_args
    from compressor.train.distill import LogitsCache, TrainConfig, train_student
    from compressor.errors import UserError
    from compressor.models.build import build_from_arch
    from compressor.cli.console import err_console
    from compressor.models.teachers import (alternative_accuracies, check_teacher_accuracy, min_accuracy_from_args,
                                            teacher_from_args, teacher_inputs)
    from compressor.train.distill import logits_accuracy

    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    if not args.no_kd and not args.teacher:
        raise UserError("--teacher is required unless --no-kd is given")
    min_accuracy = min_accuracy_from_args(args)
    raw = dataset_from_args(args)
    dataset = raw.normalised(raw.student_preprocessing())
    logits, teacher_summary = None, {}
    if not args.no_kd:
        inputs = teacher_inputs(teacher_from_args(args, raw), raw, args.teacher_preprocess)
        logits = LogitsCache(args.cache_dir).get(inputs.teacher, inputs.dataset)
        teacher_accuracy = logits_accuracy(logits["val"], dataset.val_y)
        alternatives = alternative_accuracies(inputs)
        line, hint = check_teacher_accuracy(teacher_accuracy, len(dataset.val_y), dataset.num_classes, min_accuracy,
                                            alternatives)
        if not args.json:
            err_console.print(inputs.describe(), markup=False)
            err_console.print(line, markup=False)
            if hint:
                err_console.print(f"[yellow]hint[/]: {hint}")
        teacher_summary = {"teacher_val_accuracy": teacher_accuracy,
                           "teacher_preprocessing": inputs.preprocessing.to_dict(), "teacher_hint": hint,
                           "teacher_preprocessing_alternatives": alternatives}
    arch = _arch_string(args.student, args.seed)
    torch.manual_seed(args.seed)
    model = build_from_arch(arch, dataset.num_classes, dataset.input_shape)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                         alpha=0.0 if args.no_kd else args.alpha, tau=args.tau)
    result = train_student(model, dataset, config, teacher_logits=logits, evaluate_test=True,
                           progress=None if args.json else epoch_progress)
    if result.status != "ok":
        raise UserError(f"training failed: {result.reason}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in model.parameters())
    summary = {"student": args.student, "kd": not args.no_kd, "alpha": config.alpha, "tau": config.tau,
               "epochs": args.epochs, "label_fraction": dataset.label_fraction, "params": params,
               "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
               "seconds": result.seconds, "loss_curve": result.loss_curve, "checkpoint": str(out / "student.pt"),
               "preprocessing": dataset.preprocessing.to_dict(), **teacher_summary}
    save_checkpoint(out / "student.pt", Checkpoint(model.state_dict(), arch, dataset.num_classes,
                                                   dataset.input_shape, meta=summary,
                                                   preprocessing=dataset.preprocessing))
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print_json(summary)
    else:
        print_table(None, ["student", "KD", "params", "val acc %", "test acc %", "seconds", "checkpoint"],
                    [(args.student, "no" if args.no_kd else f"α={config.alpha:g} τ={config.tau:g}", params,
                      round(100 * result.val_accuracy, 2), round(100 * result.test_accuracy, 2),
                      round(result.seconds, 1), summary["checkpoint"])])
    return 0


def _arch_string(ref: str, seed: int) -> str:
    """What the checkpoint stores: torchvision:NAME as is, anything from a space as its ArchSpec JSON."""
    if ref.startswith("torchvision:"):
        return ref
    from compressor.spaces import spec_from_ref

    return spec_from_ref(ref, seed=seed).to_json()
