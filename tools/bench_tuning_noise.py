"""How far apart do a finalist's final trainings land: its lr/KD knobs against the training's seed.

Two lr/KD tunings of one network (the same 16 one-epoch evaluations, from
different first points) ended 0.65-3.15 validation points apart after the
final training on digits-cluttered with 10% of the labels (BENCHMARKS.md,
"Finalists that were one network"), and that gap decided which student
shipped. This tool tells apart the two things the gap can be: the knobs, or
the draw of one training. It takes a finalist of a stored `bench_search` run
(its filled network and member seed, `RUN_DIR/trials.sqlite` meta
`finalists`), trains it for `--epochs` with each `--knobs` set (lr, KD α, τ)
under each of `--seeds` (s: the run seed s, which orders the data and draws
the augmentation, and the member seed + s, which draws the weights; seed 0
with the run's tuned knobs reproduces its finalist), and prints validation and test accuracy per
training and mean ± std per knob set. Nothing is timed; trainings run in
`--workers` processes.

    .venv/bin/python tools/bench_tuning_noise.py runs/bench_tpe2/digits-cluttered/split1/labels0.1/random \
        --finalist p2-f3 --split-seed 1 --label-fraction 0.1 --cache runs/bench_tpe2/cache \
        --knobs 0.1767,0.8985,1.0855 0.1889,0.8943,5.9777 0.1,0.5,4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def finalist(run_dir: Path, key: str) -> dict:
    """The finalist's filled arch params and member seed."""
    from compressor.search.store import TrialStore

    store = TrialStore(run_dir / "trials.sqlite")
    try:
        found = (store.get_meta("finalists") or {}).get(key)
        if found is None:
            sys.exit(f"{run_dir}: no finalist {key!r}; finalists: {', '.join(store.get_meta('finalists') or {})}")
        record = next(r for r in store.records() if [r.proposal, r.fidelity] == found["identity"][1:])
        return {"arch": found["fill"]["arch"], "seed": record.seeds[found["member"]]}
    finally:
        store.close()


def train(job: tuple) -> tuple[float, float]:
    """Validation and test accuracy of one final training (a worker process)."""
    network, knobs, seed, args = job
    import torch

    from bench_search import student_data
    from compressor.search import recipe
    from compressor.search.config import SearchConfig
    from compressor.spaces import get_space

    torch.set_num_threads(1)
    data, logits = student_data(args.data, args.split_seed, args.label_fraction, args.teacher_epochs, args.cache)
    spec = get_space("all").sample(network["arch"], network["seed"] + seed)
    config = SearchConfig(space="all", seed=seed, final_epochs=args.epochs)
    lr, alpha, tau = knobs
    _, result = recipe.train_spec(spec, data, recipe.train_config(config, {"lr": lr, "kd_alpha": alpha, "kd_tau": tau}),
                                  logits, evaluate_test=True)
    if result.status != "ok":
        raise RuntimeError(f"training failed: {result.reason}")
    return result.val_accuracy, result.test_accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a bench_search run directory (RUN_DIR/trials.sqlite)")
    parser.add_argument("--finalist", required=True, help="its key in meta finalists, e.g. p2-f3")
    parser.add_argument("--data", default="digits-cluttered")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--label-fraction", type=float, default=1.0)
    parser.add_argument("--knobs", nargs="+", required=True, help="lr,kd_alpha,kd_tau sets")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="run seeds (the run's own: 0)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--teacher-epochs", type=int, default=15, help="bench_search's teacher (cached)")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_search/cache"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    knobs = [tuple(float(v) for v in k.split(",")) for k in args.knobs]
    if any(len(k) != 3 for k in knobs):
        sys.exit("--knobs: each set is lr,kd_alpha,kd_tau")
    network = finalist(args.run, args.finalist)
    jobs = [(network, k, seed, args) for k in knobs for seed in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(train, jobs))
    print(f"{args.run} {args.finalist}: {network['arch']}, {args.epochs} epochs\n")
    print("| lr, KD α, τ | " + " | ".join(f"seed {s}: val / test %" for s in args.seeds)
          + " | val mean ± std | test mean ± std |")
    print("|---|" + "---:|" * (len(args.seeds) + 2))
    for i, k in enumerate(knobs):
        rows = results[i * len(args.seeds):(i + 1) * len(args.seeds)]
        val, test = [100 * v for v, _ in rows], [100 * t for _, t in rows]
        spread = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        print(f"| {k[0]:.3f}, {k[1]:.2f}, {k[2]:.2f} | " + " | ".join(f"{v:.2f} / {t:.2f}" for v, t in zip(val, test))
              + f" | {statistics.mean(val):.2f} ± {spread(val):.2f} | {statistics.mean(test):.2f} ± {spread(test):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
