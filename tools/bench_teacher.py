"""How much the teacher's strength moves the students, and the gaps between them, at one label fraction.

`bench_search`'s teacher is a plain 32-64-128 CNN trained with cross-entropy
for 15 epochs on every label of the split, no augmentation. This tool trains
it beside the same network trained for `--strong-epochs` with random shifts
(`TrainConfig.augment`), then distils each of `--students` from each teacher at
`--label-fraction` with the search's recipe (batch 16, one thread,
`--final-epochs`, KD α `--alpha`, τ `--tau`) at each of `--lrs`, and prints
validation and test accuracy. Trainings run two at a time; nothing is timed.

    .venv/bin/python tools/bench_teacher.py --split-seed 0 --label-fraction 0.1
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

STUDENTS = ("16-32-64", "16-16-32:1-2-2", "24-24-48:1-1-2", "8-16-32")


def plain_ref(item: str) -> str:
    """`W1-W2-W3[:C1-C2-C3]` as a zoo reference."""
    widths, _, convs = item.partition(":")
    return f"zoo:plain:widths={widths}" + (f",convs={convs}" if convs else "")


def data_and_logits(args, strong: bool):
    """The students' data at the label fraction and the logits of the weak or the strong teacher (trained once)."""
    import torch

    from bench_search import CHANNELS, IMAGE_SIZE
    from bench_students import bench_teacher
    from compressor.data.datasets import load_dataset
    from compressor.models.teachers import teacher_inputs
    from compressor.train.distill import LogitsCache, logits_accuracy

    torch.set_num_threads(1)
    full = load_dataset(args.data, image_size=IMAGE_SIZE, channels=CHANNELS, seed=args.split_seed)
    raw = load_dataset(args.data, image_size=IMAGE_SIZE, channels=CHANNELS, seed=args.split_seed,
                       label_fraction=args.label_fraction)
    epochs = args.strong_epochs if strong else args.teacher_epochs
    teacher = bench_teacher(full.normalised(full.student_preprocessing()), epochs, args.cache, augment=strong)
    logits = LogitsCache(args.cache).get(teacher, teacher_inputs(teacher, raw).dataset)
    data = raw.normalised(raw.student_preprocessing())
    return data, logits, logits_accuracy(logits["test"], data.test_y)


def train_one(job: tuple) -> tuple[float, float]:
    student, lr, strong, args = job
    from compressor.search import recipe
    from compressor.search.config import SearchConfig
    from compressor.spaces import spec_from_ref

    data, logits, _ = data_and_logits(args, strong)
    config = SearchConfig(space="zoo", seed=args.seed, final_epochs=args.final_epochs)
    train = recipe.train_config(config, {"lr": lr, "kd_alpha": args.alpha, "kd_tau": args.tau})
    _, result = recipe.train_spec(spec_from_ref(plain_ref(student), seed=0), data, train, logits, evaluate_test=True)
    return result.val_accuracy, result.test_accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits-cluttered")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), metavar="W1-W2-W3[:C1-C2-C3]")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.05, 0.15])
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--tau", type=float, default=2.0)
    parser.add_argument("--final-epochs", type=int, default=15)
    parser.add_argument("--teacher-epochs", type=int, default=15, help="bench_search's teacher")
    parser.add_argument("--strong-epochs", type=int, default=30, help="the shifted-image teacher's epochs")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_search/cache"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    teachers = {strong: data_and_logits(args, strong)[2] for strong in (False, True)}
    jobs = [(s, lr, strong, args) for strong in (False, True) for s in args.students for lr in args.lrs]
    with ProcessPoolExecutor(2) as pool:
        results = dict(zip([j[:3] for j in jobs], pool.map(train_one, jobs)))
    print(f"\n{args.data} split {args.split_seed}, labels {args.label_fraction:g}: KD α {args.alpha:g} τ {args.tau:g}, "
          f"{args.final_epochs} epochs; val % / test %\n")
    names = {False: f"teacher {args.teacher_epochs} ep ({100 * teachers[False]:.2f}% test)",
             True: f"teacher {args.strong_epochs} ep shifted ({100 * teachers[True]:.2f}% test)"}
    print("| student | " + " | ".join(f"{names[t]}, lr {lr:g}" for t in (False, True) for lr in args.lrs) + " |")
    print("|---|" + "---:|" * (2 * len(args.lrs)))
    for s in args.students:
        cells = [results[(s, lr, t)] for t in (False, True) for lr in args.lrs]
        print(f"| plain {s} | " + " | ".join(f"{100 * v:.2f} / {100 * t:.2f}" for v, t in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
