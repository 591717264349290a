"""KD overhead and where KD pays off, on digits, side by side in one run.

1. Epoch time of the same student trained with plain cross-entropy, with KD
   from the teacher-logits cache, and with KD running the teacher online (no
   cache), interleaved over several repeats; medians and ratios.
2. Accuracy (mean ± std over seeds) of the teacher, of a small student
   without KD and of the same student with KD, with all training labels and
   with only a stratified 10% of them (the teacher's logits still cover every
   training image: the transfer-set case).

    .venv/bin/python tools/bench_kd.py --teacher runs/teacher.pt [--student zoo:plain:widths=8-16-32] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="a teacher checkpoint (compressor train-teacher)")
    parser.add_argument("--student", default="zoo:plain:widths=8-16-32")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--tau", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--timing-only", action="store_true", help="skip the accuracy table")
    args = parser.parse_args()

    import torch

    from compressor.data.datasets import load_dataset
    from compressor.train.distill import LogitsCache, TrainConfig, logits_accuracy, train_student
    from compressor.models.build import build_from_arch
    from compressor.models.teachers import load_teacher, teacher_inputs

    torch.set_num_threads(1)
    raw = load_dataset("digits")
    data = raw.normalised(raw.student_preprocessing())
    teacher = load_teacher(args.teacher, num_classes=data.num_classes, input_shape=data.input_shape)
    logits = LogitsCache().get(teacher, teacher_inputs(teacher, raw).dataset)

    def student(seed):
        torch.manual_seed(seed)
        return build_from_arch(args.student, data.num_classes, data.input_shape)

    # 1. epoch time, interleaved so that machine noise hits every variant alike; one warm-up round not counted
    times = {"ce": [], "kd_cache": [], "kd_online": []}
    for repeat in range(args.repeats + 1):
        for name in times:
            config = TrainConfig(epochs=1, threads=1, alpha=0.0 if name == "ce" else args.alpha, tau=args.tau)
            result = train_student(student(0), data, config, evaluate_test=False,
                                   teacher_logits=logits if name == "kd_cache" else None,
                                   teacher=teacher if name == "kd_online" else None)
            if repeat:
                times[name].append(result.seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: statistics.median(t / c for t, c in zip(v, times["ce"])) for k, v in times.items()}
    print(f"## KD epoch time ({args.student}, digits 32 px, {args.repeats} interleaved repeats)\n")
    print("| training | median epoch s | median ratio to CE (per repeat) |\n|---|---|---|")
    for name, label in (("ce", "plain cross-entropy"), ("kd_cache", "KD, cached logits"),
                        ("kd_online", "KD, teacher online (no cache)")):
        print(f"| {label} | {med[name]:.3f} | {ratio[name]:.2f} |")

    if args.timing_only:
        return 0
    # 2. accuracy, all labels and 10% labels
    rows = []
    teacher_acc = logits_accuracy(logits["test"], data.test_y)
    rows.append(("teacher " + teacher.arch, "all", [teacher_acc]))
    for fraction in (1.0, 0.1):
        subset = load_dataset("digits", label_fraction=fraction)
        subset = subset.normalised(subset.student_preprocessing())
        for kd in (False, True):
            accs = []
            for seed in args.seeds:
                started = time.time()
                result = train_student(student(seed), subset, TrainConfig(epochs=args.epochs, seed=seed, threads=1,
                                                                          alpha=args.alpha if kd else 0.0,
                                                                          tau=args.tau),
                                       teacher_logits=logits if kd else None)
                accs.append(result.test_accuracy)
                print(f"  {fraction:.0%} labels, kd={kd}, seed {seed}: {100 * result.test_accuracy:.2f}% "
                      f"({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
            rows.append((f"{args.student} {'KD α=%g τ=%g' % (args.alpha, args.tau) if kd else 'no KD'}",
                         f"{fraction:.0%}", accs))
    print(f"\n## Test accuracy on digits ({args.epochs} epochs, seeds {args.seeds})\n")
    print("| model | labels | test accuracy (mean ± std) |\n|---|---|---|")
    for name, labels, accs in rows:
        std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {labels} | {100 * statistics.mean(accs):.2f} ± {100 * std:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
