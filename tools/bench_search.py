"""Search efficiency: TPE against random under a tight cpu-1t latency budget, side by side.

For each label regime (all labels; 10% of labels) and each seed, one TPE run
and one random run with the same number of proposals, the same teacher, data,
budgets and fidelities. Reports, per regime: the median best feasible
validation accuracy after each number of proposals, the proposals TPE needs
to reach random's final best, the median screening cost per candidate
(build + export + profile), the fraction of trial time spent outside
training, and the best hand-designed student (a plain conv-BN-ReLU stack, the
largest of a few widths that meets the budget) trained with the same epochs.

    .venv/bin/python tools/bench_search.py --teacher runs/teacher.pt --trials 16 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def summarize(records, trials: int, fidelities: tuple[int, ...]) -> dict:
    """Best feasible validation accuracy after 1..trials trained families (at the smallest fidelity, the
    one every family has), the best at the highest fidelity, and how many proposals were screened."""
    first = [r for r in sorted(records, key=lambda r: r.id) if r.fidelity == fidelities[0]]
    curve, best = [], 0.0
    for rec in first:
        if rec.status == "infeasible":
            continue
        if rec.status == "ok":
            best = max(best, rec.val_accuracy)
        curve.append(best)
    curve += [best] * (trials - len(curve))
    top = [r.val_accuracy for r in records if r.status == "ok" and r.fidelity == fidelities[-1]]
    return {"curve": curve[:trials], "best_top": max(top, default=0.0), "screened": len(first),
            "feasible": sum(r.status == "ok" for r in first)}


def existing_budget(out: Path) -> float | None:
    """The latency budget of earlier runs in `out` (so that they resume instead of being refused)."""
    from compressor.search.store import TrialStore

    for path in sorted(out.glob("*/trials.sqlite")):
        store = TrialStore(path)
        try:
            fingerprint = store.get_meta("fingerprint")
        finally:
            store.close()
        if fingerprint:
            return fingerprint["target"]["budgets"]["latency_ms"]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label-fractions", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--latency-ms", type=float, help="latency budget (default: the teacher's p50 / 20)")
    parser.add_argument("--fidelities", default="1,3")
    parser.add_argument("--family-size", type=int, default=1)
    parser.add_argument("--out", default="runs/bench_search")
    args = parser.parse_args()

    import torch

    from compressor.pipeline.baselines import hand_designed_baseline
    from compressor.data.datasets import load_dataset
    from compressor.pipeline.compress import DataOptions, compress
    from compressor.models.teachers import load_teacher

    import profilers
    from targets import load_target

    torch.set_num_threads(1)
    fidelities = tuple(int(x) for x in args.fidelities.split(","))
    out = Path(args.out)
    latency = args.latency_ms or existing_budget(out)
    if latency is None:
        data = load_dataset("digits")
        teacher = load_teacher(args.teacher, num_classes=data.num_classes, input_shape=data.input_shape)
        shape = (1, *data.input_shape)
        teacher_p50 = profilers.measure(teacher.onnx_bytes(shape), load_target("cpu-1t"), input_shape=shape,
                                        memory=False)["latency_ms"]["p50"]
        latency = teacher_p50 / 20
        print(f"teacher p50 {teacher_p50:.3f} ms on cpu-1t -> latency budget {latency:.3f} ms", flush=True)
    results = {}
    for fraction in args.label_fractions:
        options = DataOptions(label_fraction=fraction)
        runs = {"tpe": [], "random": []}
        for seed in args.seeds:
            for strategy in ("tpe", "random"):
                started = time.time()
                result = compress(args.teacher, out=out / f"lf{fraction}-{strategy}-s{seed}", data="digits",
                                  target="cpu-1t", latency_ms=latency, data_options=options, trials=args.trials,
                                  strategy=strategy, seed=seed, family_size=args.family_size,
                                  fidelities=fidelities, final_epochs=1, export=False, quiet=True, resume=True)
                records = result.records
                runs[strategy].append({
                    **summarize(records, args.trials, fidelities),
                    "screen_s": statistics.median(r.screen_s for r in records if r.fidelity == fidelities[0]),
                    "outside_training": 1 - sum(r.train_s for r in records) / sum(r.total_s for r in records),
                    "seconds": sum(r.total_s for r in records),
                })
                run = runs[strategy][-1]
                print(f"lf={fraction} {strategy} seed={seed}: {run['feasible']} feasible of {run['screened']} screened, "
                      f"best {run['curve'][-1]:.4f} at {fidelities[0]} ep, {run['best_top']:.4f} at {fidelities[-1]} ep "
                      f"({run['seconds']:.0f} s of search, {time.time() - started:.0f} s now)", flush=True)
        dataset = load_dataset("digits", label_fraction=fraction)
        dataset = dataset.normalised(dataset.student_preprocessing())
        teacher = load_teacher(args.teacher, num_classes=dataset.num_classes, input_shape=dataset.input_shape)
        baseline = hand_designed_baseline(teacher, dataset, "cpu-1t", latency_ms=latency, epochs=fidelities[-1])
        results[fraction] = {"latency_ms": latency, "runs": runs, "baseline": baseline}

    print()
    for fraction, res in results.items():
        print(f"## label fraction {fraction}: latency budget {res['latency_ms']:.3f} ms p50 on cpu-1t")
        print(f"| trained families | " + " | ".join(f"{s} median best val acc ({fidelities[0]} ep)"
                                                  for s in ("tpe", "random")) + " |")
        print("|---|---|---|")
        median_curve = {s: [statistics.median(run["curve"][i] for run in res["runs"][s]) for i in range(args.trials)]
                        for s in ("tpe", "random")}
        for i in sorted({0, 3, 7, args.trials // 2 - 1, args.trials - 1}):
            print(f"| {i + 1} | {100 * median_curve['tpe'][i]:.2f}% | {100 * median_curve['random'][i]:.2f}% |")
        random_final = median_curve["random"][-1]
        reach = next((i + 1 for i, v in enumerate(median_curve["tpe"]) if v >= random_final), None)
        print(f"\nTPE reaches random's final best ({100 * random_final:.2f}%) after "
              f"{reach if reach else 'more than ' + str(args.trials)} trained families (median over seeds).")
        for strategy in ("tpe", "random"):
            runs = res["runs"][strategy]
            counts = ", ".join(f"{r['feasible']}/{r['screened']}" for r in runs)
            tops = ", ".join(f"{100 * r['best_top']:.2f}%" for r in runs)
            print(f"{strategy}: feasible/screened per seed {counts}; best val acc at {fidelities[-1]} epochs "
                  f"per seed {tops}")
        all_runs = res["runs"]["tpe"] + res["runs"]["random"]
        print(f"median screening cost per candidate: {statistics.median(r['screen_s'] for r in all_runs):.2f} s; "
              f"time outside training: {100 * statistics.median(r['outside_training'] for r in all_runs):.0f}%")
        base = res["baseline"]
        print(f"hand-designed baseline {base['name']}: val acc {100 * base['val_accuracy']:.2f}%, "
              f"p50 {base['profile']['latency_ms']['p50']:.3f} ms, {base['params']:,} params "
              f"({'meets' if base['meets_budget'] else 'over'} the budget)\n")
    (out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
