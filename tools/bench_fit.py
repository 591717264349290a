"""Fit to budget on and off: the same search (digits, cpu-1t, a tight latency budget, one seed) three ways.

`off` screens proposals as asked (`fill_fraction=None`) from an empty latency
cache; `on (cold)` sizes them to 0.8 of the budget, its latency model starting
empty (it fits once it has `MIN_SAMPLES` measured members); `on (warm)` is the
same search again with the calibration the cold run left (a second run on
this machine). Per run: screenings, the share over budget, proposals skipped
unmeasured, networks measured to calibrate a cold model (not screenings), the
model's Kendall tau, the share of the search's time spent training, the best
validation accuracy at the highest fidelity, and seconds.

    .venv/bin/python tools/bench_fit.py --trials 12 --floor-multiple 2.5
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def teacher_checkpoint(out: Path) -> str:
    """A small plain CNN trained 3 epochs on digits (made once, kept in `out`)."""
    path = out / "teacher.pt"
    if not path.is_file():
        from compressor.data.datasets import load_dataset
        from compressor.models.checkpoint import Checkpoint, save_checkpoint
        from compressor.spaces import build_model, spec_from_ref
        from compressor.train.distill import TrainConfig, train_student

        data = load_dataset("digits")
        data = data.normalised(data.student_preprocessing())
        spec = spec_from_ref("zoo:plain:widths=32-64-128", seed=0)
        model = build_model(spec, data.input_shape, data.num_classes)
        train_student(model, data, TrainConfig(epochs=3, seed=0), evaluate_test=False)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, Checkpoint(model.state_dict(), spec.to_json(), data.num_classes, data.input_shape,
                                         preprocessing=data.preprocessing))
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--floor-multiple", type=float, default=2.5, help="latency budget = this x the runtime floor")
    parser.add_argument("--out", default="runs/bench_fit")
    args = parser.parse_args()

    import torch

    from compressor.models.on_target import check_floor
    from compressor.pipeline.compress import compress
    from profilers.host import cpu_model
    from targets import load_target

    torch.set_num_threads(1)
    out = Path(args.out)
    shutil.rmtree(out / "runs", ignore_errors=True)
    shutil.rmtree(out / "cache-off", ignore_errors=True)
    shutil.rmtree(out / "cache-on", ignore_errors=True)
    teacher = teacher_checkpoint(out)
    floor = check_floor(load_target("cpu-1t"), (3, 32, 32))
    budget = args.floor_multiple * floor
    print(f"{cpu_model()}; cpu-1t floor {floor:.4f} ms -> budget {budget:.4f} ms p50; {args.trials} trials, "
          f"seed {args.seed}", flush=True)
    rows = []
    for label, fill, cache in (("off", None, "cache-off"), ("on (cold)", 0.8, "cache-on"), ("on (warm)", 0.8, "cache-on")):
        started = time.time()
        report = compress(teacher, out=out / "runs" / label.replace(" ", "").replace("(", "-").replace(")", ""),
                          data="digits", target="cpu-1t", latency_ms=budget, cache_dir=out / cache,
                          trials=args.trials, seed=args.seed, fill_fraction=fill, final_epochs=1, export=False,
                          quiet=True).report
        search, model = report["search"], report["search"]["latency_model"]
        best = max((p["val_accuracy"] for p in search["pareto"]), default=None)
        rows.append((label, model["screenings"], model["over_budget_share"], model["skipped"], model["fitted"],
                     model["calibration"], model["kendall_tau"], search["train_fraction"], best,
                     time.time() - started))
        print(rows[-1], flush=True)
    print("\n| fit to budget | screenings | over budget | skipped unmeasured | fitted | calibration | Kendall tau "
          "| time training | best val acc | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, screenings, over, skipped, fitted, calibration, tau, train, best, seconds in rows:
        print(f"| {label} | {screenings} | {100 * over:.0f}% | {skipped} | {fitted} | {calibration} | "
              f"{'-' if tau is None else f'{tau:.2f}'} | {100 * train:.0f}% | "
              f"{'-' if best is None else f'{100 * best:.2f}%'} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
