"""Benchmark: how far one network's budget verdict moves between side-by-side sessions, by the statistic judged.

Five plain CNNs of the digits-cluttered benchmark's range (32x32 grey input, 10
classes; or `--networks`, any architecture reference, at `--input-shape`) are
measured side by side with the drift reference on `cpu-1t`, in `--sessions`
sessions one after another in one process (`check_side_by_side`, the target's
seconds per model as the final session measures, or `--seconds` a session).
For each network and session the ratio of its p50 to the reference's in that
session is computed three ways from the same runs: over each model's quiet
runs (what the verdicts use, `profilers.side_by_side`, "The quiet median"),
over the quiet runs with the anchor at the lowest 1% alone (before the anchor
had a floor at the `QUIET_LOW_RANK`-th lowest run) and over all runs. Printed
per network: the median ratio, its range and spread (max - min) / median over
the sessions. Then the verdicts at a budget set `--margin` (3%) above the quiet
median ratio of `--near` (plain 16-32-64, or the first of `--networks`): how
many sessions judged it within, borderline or over with each statistic
(`on_target.latency_verdict`, the rule of `check_on_target`).

Run: .venv/bin/python tools/bench_verdicts.py [--sessions 12]
     .venv/bin/python tools/bench_verdicts.py --networks torchvision:mobilenet_v3_small torchvision:resnet18 \
         --input-shape 3x64x64 --seconds 0.9   # short sessions of larger models, a few hundred runs each
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NETWORKS = ["zoo:plain:widths=8-16-32", "zoo:plain:widths=16-32-64", "zoo:plain:widths=16-16-32,convs=1-2-2",
            "zoo:plain:widths=16-16-48,convs=1-2-2", "zoo:plain:widths=32-64-128"]
SHAPE = (1, 32, 32)
STATISTICS = ("quiet", "quiet, 1% anchor", "all")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--networks", nargs="+", default=NETWORKS, metavar="ARCH",
                        help="architecture references (zoo:..., torchvision:NAME, nago) measured beside the reference")
    parser.add_argument("--input-shape", default="1x32x32",
                        help="the networks' input, CxHxW (the reference's is 1x32x32)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds a session, all models (default: the target's per model)")
    parser.add_argument("--near", default=None, help="the network the budget is set near (default: plain 16-32-64 "
                        "with the default networks, else the first)")
    parser.add_argument("--margin", type=float, default=0.03, help="budget = (1 + margin) x its quiet median ratio")
    args = parser.parse_args()
    near = args.near or ("zoo:plain:widths=16-32-64" if args.networks == NETWORKS else args.networks[0])
    from compressor.cli.common import parse_shape
    from compressor.errors import UserError

    try:
        shape = parse_shape(args.input_shape)
    except UserError as exc:
        parser.exit(2, f"{exc}\n")

    import torch

    import profilers.side_by_side as side_by_side
    from compressor.cli.console import print_table
    from compressor.models.build import build_from_arch
    from compressor.models.on_target import DriftReference, check_side_by_side, latency_verdict
    from profilers.host import cpu_model
    from profilers.side_by_side import bootstrap_interval
    from targets import load_target

    torch.set_num_threads(1)
    target = load_target("cpu-1t")
    target = dataclasses.replace(target, budgets=dataclasses.replace(target.budgets, latency_ms=None))
    models = {ref: build_from_arch(ref, 10, shape) for ref in args.networks}
    reference = DriftReference.start(target, SHAPE, 10)
    print(f"{cpu_model()}; cpu-1t, {len(models)} networks at {args.input_shape} with the drift reference, "
          f"{args.sessions} sessions", flush=True)
    found = {name: {statistic: [] for statistic in STATISTICS} for name in models}

    def quiet_at_one_percent(samples, ref_samples, comparison):
        floor, side_by_side.QUIET_LOW_RANK = side_by_side.QUIET_LOW_RANK, 1
        try:
            return bootstrap_interval(samples, ref_samples, confidence=comparison.confidence, seed=comparison.seed,
                                      quiet=True)
        finally:
            side_by_side.QUIET_LOW_RANK = floor

    for index in range(args.sessions):
        session = check_side_by_side(dict(models), target, SHAPE, input_shapes={n: shape for n in models},
                                     reference=reference, seconds=args.seconds, name="verdicts")
        comparison = session.comparison
        ref_samples = comparison.samples_ms[comparison.reference]
        for name in models:
            samples = comparison.samples_ms[session.index(name)]
            found[name]["quiet"].append(comparison.ratios[session.index(name)])
            found[name]["quiet, 1% anchor"].append(quiet_at_one_percent(samples, ref_samples, comparison))
            found[name]["all"].append(bootstrap_interval(samples, ref_samples, confidence=comparison.confidence,
                                                         seed=comparison.seed))
        print(f"session {index + 1}: {comparison.rounds} rounds; " + " | ".join(
            f"{statistic} " + " ".join(f"{found[n][statistic][-1].value:.3f}" for n in models)
            for statistic in STATISTICS), flush=True)

    rows = []
    for name in models:
        row = [name.split(":", 2)[-1]]
        for statistic in STATISTICS:
            values = [i.value for i in found[name][statistic]]
            median = statistics.median(values)
            row += [f"{median:.3f}", f"{min(values):.3f}-{max(values):.3f}",
                    f"{100 * (max(values) - min(values)) / median:.1f}%"]
        rows.append(row)
    print_table("ratio to the drift reference over the sessions",
                ["network"] + [f"{statistic}: {column}" for statistic in STATISTICS
                               for column in ("median", "range", "spread")], rows)
    budget = (1 + args.margin) * statistics.median(i.value for i in found[near]["quiet"])
    counts = []
    for statistic in STATISTICS:
        verdicts = [latency_verdict(i.scaled(1 / budget)) for i in found[near][statistic]]
        counts.append([statistic] + [str(verdicts.count(v)) for v in ("within", "borderline", "over")])
    print_table(f"verdicts on {near.split(':', 2)[-1]} at a budget of {budget:.3f}x the reference",
                ["statistic", "within", "borderline", "over"], counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
