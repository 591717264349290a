"""Teacher preprocessing, right and wrong: teacher and distilled-student accuracy on a generated ImageFolder.

sklearn's 1,797 digits are written as grayscale PNG files (upsampled to
`--size` px, one folder per class) and read back with `imagefolder:`. A
teacher is trained on the raw [0, 1] pixels with the project's trainer and
exported to ONNX without metadata (an "ONNX teacher from elsewhere"). Then,
for each `--teacher-preprocess` choice, the teacher's validation accuracy is
measured on the inputs that choice produces, and one student is distilled
from the teacher's logits on those inputs (the same student, seed and
epochs every time), as `compressor distill` does. `none` is what the teacher
was trained on; `dataset` (compressor's former behaviour for every teacher)
and `imagenet` are wrong for it.

With `--stem-epochs N`, a `torchvision:resnet18` teacher is also trained on
the same images (normalised with the training split's statistics, as
`train-teacher` does) with torchvision's ImageNet stem and with the
small-image stem `train-teacher` now picks below 64 px, N epochs each.

    .venv/bin/python tools/bench_preprocess.py [--size 28] [--teacher-epochs 10] [--student-epochs 10] [--stem-epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_digits(root: Path, size: int) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((size, size), Image.BILINEAR).save(folder / f"{i}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--teacher", default="zoo:plain:widths=16-32-64")
    parser.add_argument("--student", default="zoo:plain:widths=8-16-32")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--student-epochs", type=int, default=10)
    parser.add_argument("--choices", nargs="+", default=["none", "dataset", "imagenet"])
    parser.add_argument("--stem-epochs", type=int, default=0, help="also compare ResNet-18 stems (0: skip)")
    args = parser.parse_args()

    import torch

    from compressor.data.datasets import load_dataset
    from compressor.models.onnx_export import export_onnx
    from compressor.models.teachers import alternative_accuracies, check_teacher_accuracy, load_teacher, teacher_inputs
    from compressor.spaces import build_model, spec_from_ref
    from compressor.train.distill import LogitsCache, TrainConfig, logits_accuracy, train_student

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_digits(root / "digits", args.size)
        raw = load_dataset(f"imagefolder:{root / 'digits'}", image_size=args.size, channels=1)
        torch.manual_seed(0)
        net = build_model(spec_from_ref(args.teacher), raw.input_shape, raw.num_classes)
        started = time.perf_counter()
        trained = train_student(net, raw, TrainConfig(epochs=args.teacher_epochs, seed=0, alpha=0.0, lr=0.05),
                                evaluate_test=True)
        print(f"teacher {args.teacher} trained on raw pixels: val {trained.val_accuracy:.2%}, "
              f"test {trained.test_accuracy:.2%} ({time.perf_counter() - started:.0f} s)")
        export_onnx(net, (1, *raw.input_shape), root / "teacher.onnx")
        teacher = load_teacher(str(root / "teacher.onnx"), num_classes=raw.num_classes, input_shape=raw.input_shape)
        student_data = raw.normalised(raw.student_preprocessing())
        print(f"| --teacher-preprocess | teacher val acc | student ({args.student}, {args.student_epochs} ep, KD) "
              "val acc | student test acc | hint |")
        print("|---|---:|---:|---:|---|")
        for choice in args.choices:
            inputs = teacher_inputs(teacher, raw, choice)
            logits = LogitsCache(root / "cache").get(teacher, inputs.dataset)
            accuracy = logits_accuracy(logits["val"], raw.val_y)
            _, hint = check_teacher_accuracy(accuracy, len(raw.val_y), raw.num_classes,
                                             alternatives=alternative_accuracies(inputs))
            torch.manual_seed(0)
            student = build_model(spec_from_ref(args.student), raw.input_shape, raw.num_classes)
            result = train_student(student, student_data, TrainConfig(epochs=args.student_epochs, seed=0, threads=1),
                                   teacher_logits=logits, evaluate_test=True)
            print(f"| {choice} | {accuracy:.2%} | {result.val_accuracy:.2%} | {result.test_accuracy:.2%} | "
                  f"{'printed' if hint else '-'} |")
        if args.stem_epochs:
            from compressor.models.build import build_from_arch

            print(f"\n| ResNet-18 stem ({args.size} px, {args.stem_epochs} ep, shifts) | val acc | test acc | seconds |")
            print("|---|---:|---:|---:|")
            for arch in ("torchvision:resnet18", "torchvision:resnet18:stem=small"):
                torch.manual_seed(0)
                model = build_from_arch(arch, raw.num_classes, raw.input_shape)
                result = train_student(model, student_data, TrainConfig(epochs=args.stem_epochs, seed=0, alpha=0.0,
                                                                        lr=0.05, augment=True, threads=2),
                                       evaluate_test=True)
                print(f"| {arch} | {result.val_accuracy:.2%} | {result.test_accuracy:.2%} | {result.seconds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
