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


def best_so_far(records, trials: int, first_fidelity: int) -> list[float]:
    """Best feasible validation accuracy at the smallest fidelity after 1..trials proposals."""
    by_proposal = {r.proposal: r for r in records if r.fidelity == first_fidelity}
    curve, best = [], 0.0
    for p in range(trials):
        rec = by_proposal.get(p)
        if rec is not None and rec.status == "ok":
            best = max(best, rec.val_accuracy)
        curve.append(best)
    return curve


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

    from compressor.baselines import hand_designed_baseline
    from compressor.data import load_dataset
    from compressor.pipeline import DataOptions, compress
    from compressor.teachers import load_teacher

    import profilers
    from targets import load_target

    torch.set_num_threads(1)
    fidelities = tuple(int(x) for x in args.fidelities.split(","))
    out = Path(args.out)
    latency = args.latency_ms
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
                                  fidelities=fidelities, final_epochs=1, export=False, quiet=True)
                records = result.records
                runs[strategy].append({
                    "curve": best_so_far(records, args.trials, fidelities[0]),
                    "screen_s": statistics.median(r.screen_s for r in records if r.fidelity == fidelities[0]),
                    "outside_training": 1 - sum(r.train_s for r in records) / sum(r.total_s for r in records),
                    "seconds": time.time() - started,
                })
                print(f"lf={fraction} {strategy} seed={seed}: best {runs[strategy][-1]['curve'][-1]:.4f} "
                      f"in {runs[strategy][-1]['seconds']:.0f} s", flush=True)
        dataset = load_dataset("digits", label_fraction=fraction)
        teacher = load_teacher(args.teacher, num_classes=dataset.num_classes, input_shape=dataset.input_shape)
        baseline = hand_designed_baseline(teacher, dataset, "cpu-1t", latency_ms=latency, epochs=fidelities[-1])
        results[fraction] = {"latency_ms": latency, "runs": runs, "baseline": baseline}

    print()
    for fraction, res in results.items():
        print(f"## label fraction {fraction}: latency budget {res['latency_ms']:.3f} ms p50 on cpu-1t")
        print("| proposals | " + " | ".join(f"{s} median best val acc" for s in ("tpe", "random")) + " |")
        print("|---|---|---|")
        median_curve = {s: [statistics.median(run["curve"][i] for run in res["runs"][s]) for i in range(args.trials)]
                        for s in ("tpe", "random")}
        for i in sorted({0, 3, 7, args.trials // 2 - 1, args.trials - 1}):
            print(f"| {i + 1} | {100 * median_curve['tpe'][i]:.2f}% | {100 * median_curve['random'][i]:.2f}% |")
        random_final = median_curve["random"][-1]
        reach = next((i + 1 for i, v in enumerate(median_curve["tpe"]) if v >= random_final), None)
        print(f"\nTPE reaches random's final best ({100 * random_final:.2f}%) after "
              f"{reach if reach else 'more than ' + str(args.trials)} proposals (median over seeds).")
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
