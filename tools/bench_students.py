"""The searched student against hand-designed students; with --baselines, the old baseline against the fair one.

Students: the winner of a `compressor compress` run (its `best.pt` architecture,
retrained here from scratch like the others), the zoo's adapted families at
their defaults (plain, MobileNetV2, MobileNetV3-small, ResNet, ShuffleNetV2)
and torchvision's stock MobileNetV2 / MobileNetV3-small. Each is trained with
the same KD settings and epochs, then measured on the target: test accuracy,
parameters, MACs, p50 latency, and whether it meets the run's latency budget.

    .venv/bin/python tools/bench_students.py --run runs/demo --epochs 10

`--baselines` compares the hand-designed baseline as `compress --baseline`
trained it before (the widest of five fixed plain-CNN widths that fits, batch
32, the trainer's default lr 0.1 / α 0.5 / τ 4, with and without KD, the
better on validation) with the fair one (compressor.pipeline.baselines: the
widest plain CNN within the budget from one side-by-side session, lr/KD tuned
in `--trials` evaluations at 1 epoch, the student's recipe), at one latency
budget, per seed: test accuracy. The teacher (a plain CNN, trained once and
cached) and the data split are fixed; the seed is the training seed.

    .venv/bin/python tools/bench_students.py --baselines --data digits-cluttered --seeds 0,1
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
    parser.add_argument("--run", help="a compress/demo run directory (required without --baselines)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--tau", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baselines", action="store_true", help="old baseline vs the fair, tuned one")
    parser.add_argument("--data", default="digits-cluttered", help="--baselines: the dataset")
    parser.add_argument("--seeds", default="0,1", help="--baselines: training seeds")
    parser.add_argument("--trials", type=int, default=12, help="--baselines: the search's trials (tuning evaluations)")
    parser.add_argument("--final-epochs", type=int, default=10, help="--baselines: epochs of both baselines")
    parser.add_argument("--budget-x", type=float, default=4.0,
                        help="--baselines: latency budget as a multiple of the 8-16-32 plain CNN's p50 on cpu-1t")
    parser.add_argument("--teacher-epochs", type=int, default=6, help="--baselines: the teacher's epochs")
    args = parser.parse_args()
    if args.baselines:
        return compare_baselines(args)
    if not args.run:
        parser.error("--run is required (or pass --baselines)")

    import torch
    from targets import load_target

    from compressor.models.checkpoint import load_checkpoint
    from compressor.data.datasets import load_dataset
    from compressor.train.distill import LogitsCache, TrainConfig, train_student
    from compressor.models.build import build_from_arch
    from compressor.models.on_target import check_on_target
    from compressor.models.teachers import load_teacher, teacher_inputs

    torch.set_num_threads(1)
    run = Path(args.run)
    report = json.loads((run / "report.json").read_text())
    raw = load_dataset("digits")
    data = raw.normalised(raw.student_preprocessing())
    teacher = load_teacher(report["teacher"]["ref"], num_classes=data.num_classes, input_shape=data.input_shape)
    logits = LogitsCache().get(teacher, teacher_inputs(teacher, raw).dataset)
    target = load_target("cpu-1t").with_budgets(latency_ms=report["budgets"]["latency_ms"])
    searched = load_checkpoint(run / "best.pt").arch
    rows = []
    for name, arch in [("searched (nago, from the run)", searched)] + [(a, a) for a in HAND_DESIGNED]:
        torch.manual_seed(args.seed)
        model = build_from_arch(arch, data.num_classes, data.input_shape)
        started = time.time()
        result = train_student(model, data, TrainConfig(epochs=args.epochs, alpha=args.alpha, tau=args.tau,
                                                        seed=args.seed, threads=1), teacher_logits=logits)
        checked = check_on_target(model, target, data.input_shape, memory=False)
        profile, fits = checked.profile, checked.fits
        rows.append((name, result.test_accuracy, profile["params"], profile["macs"], profile["latency_ms"]["p50"], fits))
        print(f"{name}: {100 * result.test_accuracy:.2f}% in {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"\nteacher {teacher.arch}: test {100 * report['teacher']['test_accuracy']:.2f}%, "
          f"latency budget {report['budgets']['latency_ms']:.3f} ms p50 on cpu-1t; "
          f"KD α={args.alpha} τ={args.tau}, {args.epochs} epochs, seed {args.seed}\n")
    print("| student | test acc | params | MACs | p50 ms (cpu-1t) | meets budget |\n|---|---|---|---|---|---|")
    for name, acc, params, macs, p50, fits in rows:
        print(f"| {name} | {100 * acc:.2f}% | {params:,} | {macs:,} | {p50:.3f} | {'yes' if fits else 'no'} |")
    return 0


OLD_WIDTHS = ("8-16-32", "12-24-48", "16-32-64", "24-48-96", "32-64-128")
TEACHER_ARCH = "zoo:plain:widths=32-64-128"


def old_baseline(data, target, logits, epochs: int, seed: int, reference) -> dict:
    """The baseline as `compress --baseline` trained it up to this change (kept here to measure the difference)."""
    import torch

    from compressor.models.on_target import check_on_target
    from compressor.spaces import build_model, spec_from_ref
    from compressor.train.distill import TrainConfig, train_student

    chosen = None
    for widths in OLD_WIDTHS:
        spec = spec_from_ref(f"zoo:plain:widths={widths}", seed=seed)
        fits = check_on_target(build_model(spec, data.input_shape, data.num_classes), target, data.input_shape,
                               reference=reference).fits
        if chosen is None or fits:
            chosen = (widths, spec)
        if not fits:
            break
    widths, spec = chosen
    best = None
    for kd in (True, False):
        torch.manual_seed(seed)
        model = build_model(spec, data.input_shape, data.num_classes)
        result = train_student(model, data, TrainConfig(epochs=epochs, seed=seed, threads=1),
                               teacher_logits=logits if kd else None, evaluate_test=True)
        if result.status == "ok" and (best is None or result.val_accuracy > best[1].val_accuracy):
            best = (kd, result)
    return {"widths": widths, "kd": best[0], "val": best[1].val_accuracy, "test": best[1].test_accuracy}


def bench_teacher(data, epochs: int, cache, augment: bool = False):
    """A plain-CNN teacher trained with cross-entropy on `data`, cached by (data, arch, epochs[, augmentation])."""
    import hashlib

    import torch

    from compressor.models.checkpoint import Checkpoint, save_checkpoint
    from compressor.models.teachers import load_teacher
    from compressor.spaces import build_model, spec_from_ref
    from compressor.train.distill import TrainConfig, train_student
    from profilers import host

    identity = [data.identity, TEACHER_ARCH, epochs] + (["shifted"] if augment else [])
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:12]
    path = host.cache_root(cache) / "bench" / f"teacher-{key}.pt"
    if not path.is_file():
        spec = spec_from_ref(TEACHER_ARCH, seed=0)
        torch.manual_seed(0)
        model = build_model(spec, data.input_shape, data.num_classes)
        result = train_student(model, data, TrainConfig(epochs=epochs, alpha=0.0, lr=0.05, threads=2, augment=augment),
                               evaluate_test=True)
        print(f"teacher {TEACHER_ARCH}: test {100 * result.test_accuracy:.2f}% in {result.seconds:.0f} s",
              file=sys.stderr, flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, Checkpoint(model.state_dict(), spec.to_json(), data.num_classes, data.input_shape,
                                         preprocessing=data.preprocessing))
    return load_teacher(str(path), num_classes=data.num_classes, input_shape=data.input_shape)


def bench_setup(data_ref: str, teacher_epochs: int):
    """(data normalised for students, the cached teacher's logits, cpu-1t, a drift reference started on it)."""
    from targets import load_target

    from compressor.data.datasets import load_dataset
    from compressor.models.on_target import DriftReference
    from compressor.models.teachers import teacher_inputs
    from compressor.train.distill import LogitsCache

    raw = load_dataset(data_ref, image_size=32, channels=1)
    data = raw.normalised(raw.student_preprocessing())
    teacher = bench_teacher(data, teacher_epochs, None)
    logits = LogitsCache().get(teacher, teacher_inputs(teacher, raw).dataset)
    cpu = load_target("cpu-1t")
    return data, logits, cpu, DriftReference.start(cpu, data.input_shape, data.num_classes)


def compare_baselines(args) -> int:
    import statistics
    import tempfile

    import torch

    from compressor.pipeline.baselines import hand_designed_baseline, open_tuning_store
    from compressor.search.config import SearchConfig
    from compressor.train.distill import logits_accuracy

    torch.set_num_threads(1)
    data, logits, cpu, reference = bench_setup(args.data, args.teacher_epochs)
    target = cpu.with_budgets(latency_ms=args.budget_x * reference.start_ms)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.time()
        old = old_baseline(data, target, logits, args.final_epochs, seed, reference)
        old_s = time.time() - started
        config = SearchConfig(trials=args.trials, fidelities=(1,), final_epochs=args.final_epochs, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            store = open_tuning_store(Path(tmp) / "baseline.sqlite", seed)
            started = time.time()
            fair = hand_designed_baseline(data, target, config, logits, store=store, reference=reference)
            store.close()
        fair_s = time.time() - started
        rows.append((seed, old, old_s, fair, fair_s))
        print(f"seed {seed}: old {old['widths']} {100 * old['test']:.2f}% ({old_s:.0f} s), fair "
              f"{fair['width']['widths']} {100 * fair['test_accuracy']:.2f}% ({fair_s:.0f} s)", file=sys.stderr,
              flush=True)
    print(f"\n{args.data}, 32 px grey; teacher {TEACHER_ARCH} ({args.teacher_epochs} epochs): test "
          f"{100 * logits_accuracy(logits['test'], data.test_y):.2f}%; latency budget {target.budgets.latency_ms:.4f} ms "
          f"p50 on cpu-1t ({args.budget_x:g}x the 8-16-32 plain CNN); {args.final_epochs} epochs; fair tuning: "
          f"{args.trials} evaluations at 1 epoch\n")
    print("| seed | old: widths | old: KD | old: test acc | fair: widths | fair: lr, KD (tuned) | fair: tuning val acc "
          "| fair: test acc | old s | fair s |\n|---|---|---|---|---|---|---|---|---|---|")
    for seed, old, old_s, fair, fair_s in rows:
        kd = f"α {fair['kd_alpha']:.2f} τ {fair['kd_tau']:.1f}" if fair["kd"] else "off"
        print(f"| {seed} | {old['widths']} | {'on' if old['kd'] else 'off'} (α 0.5 τ 4, lr 0.1, batch 32) | "
              f"{100 * old['test']:.2f}% | {fair['width']['widths']} | lr {fair['lr']:.3g}, {kd}, batch "
              f"{fair['recipe']['batch_size']} | {100 * fair['tuning']['val_accuracy']:.2f}% | "
              f"{100 * fair['test_accuracy']:.2f}% | {old_s:.0f} | {fair_s:.0f} |")
    print(f"\nmedian test accuracy: old {100 * statistics.median(r[1]['test'] for r in rows):.2f}%, fair "
          f"{100 * statistics.median(r[3]['test_accuracy'] for r in rows):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
