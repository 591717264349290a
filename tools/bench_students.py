"""The searched student against hand-designed students: same teacher, same epochs, with KD, one run.

Students: the winner of a `compressor compress` run (its `best.pt` architecture,
retrained here from scratch like the others), the zoo's adapted families at
their defaults (plain, MobileNetV2, MobileNetV3-small, ResNet, ShuffleNetV2)
and torchvision's stock MobileNetV2 / MobileNetV3-small. Each is trained with
the same KD settings and epochs, then measured on the target: test accuracy,
parameters, MACs, p50 latency, and whether it meets the run's latency budget.

    .venv/bin/python tools/bench_students.py --run runs/demo --epochs 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HAND_DESIGNED = ("zoo:plain", "zoo:mobilenet_v2", "zoo:mobilenet_v3_small", "zoo:resnet", "zoo:shufflenet_v2",
                 "torchvision:mobilenet_v2", "torchvision:mobilenet_v3_small")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a compress/demo run directory")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--tau", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import profilers
    import torch
    from targets import load_target

    from compressor.models.checkpoint import load_checkpoint
    from compressor.data.datasets import load_dataset
    from compressor.train.distill import LogitsCache, TrainConfig, train_student
    from compressor.models.build import build_from_arch
    from compressor.models.onnx_export import export_onnx
    from compressor.models.teachers import load_teacher, teacher_inputs

    torch.set_num_threads(1)
    run = Path(args.run)
    report = json.loads((run / "report.json").read_text())
    raw = load_dataset("digits")
    data = raw.normalised(raw.student_preprocessing())
    teacher = load_teacher(report["teacher"]["ref"], num_classes=data.num_classes, input_shape=data.input_shape)
    logits = LogitsCache().get(teacher, teacher_inputs(teacher, raw).dataset)
    target = load_target("cpu-1t").with_budgets(latency_ms=report["budgets"]["latency_ms"])
    shape = (1, *data.input_shape)
    searched = load_checkpoint(run / "best.pt").arch
    rows = []
    for name, arch in [("searched (nago, from the run)", searched)] + [(a, a) for a in HAND_DESIGNED]:
        torch.manual_seed(args.seed)
        model = build_from_arch(arch, data.num_classes, data.input_shape)
        started = time.time()
        result = train_student(model, data, TrainConfig(epochs=args.epochs, alpha=args.alpha, tau=args.tau,
                                                        seed=args.seed, threads=1), teacher_logits=logits)
        profile = profilers.measure(export_onnx(model, shape), target, input_shape=shape, memory=False)
        fits = not profilers.budget_violations(profile, target.budgets)
        rows.append((name, result.test_accuracy, profile["params"], profile["macs"], profile["latency_ms"]["p50"], fits))
        print(f"{name}: {100 * result.test_accuracy:.2f}% in {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"\nteacher {teacher.arch}: test {100 * report['teacher']['test_accuracy']:.2f}%, "
          f"latency budget {report['budgets']['latency_ms']:.3f} ms p50 on cpu-1t; "
          f"KD α={args.alpha} τ={args.tau}, {args.epochs} epochs, seed {args.seed}\n")
    print("| student | test acc | params | MACs | p50 ms (cpu-1t) | meets budget |\n|---|---|---|---|---|---|")
    for name, acc, params, macs, p50, fits in rows:
        print(f"| {name} | {100 * acc:.2f}% | {params:,} | {macs:,} | {p50:.3f} | {'yes' if fits else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
