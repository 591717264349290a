"""Benchmark: how far one network's budget verdict moves between side-by-side sessions, quiet median against all runs.

Five plain CNNs of the digits-cluttered benchmark's range (32x32 grey input, 10
classes) are measured side by side with the drift reference on `cpu-1t`, in
`--sessions` sessions one after another in one process (`check_side_by_side`,
the target's seconds per model, as the final session measures). For each
network and session the ratio of its p50 to the reference's in that session is
computed two ways from the same runs: over each model's quiet runs (what the
verdicts use, `profilers.side_by_side`, "The quiet median") and over all runs
(what they used before). Printed per network: the median ratio, its range and
spread (max - min) / median over the sessions. Then the verdicts at a budget set
`--margin` (3%) above the quiet median ratio of `--near` (plain 16-32-64): how
many sessions judged it within, borderline or over with each statistic
(`on_target.latency_verdict`, the rule of `check_on_target`).

Run: .venv/bin/python tools/bench_verdicts.py [--sessions 12]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--near", default="zoo:plain:widths=16-32-64", help="the network the budget is set near")
    parser.add_argument("--margin", type=float, default=0.03, help="budget = (1 + margin) x its quiet median ratio")
    args = parser.parse_args()

    import torch

    from compressor.cli.console import print_table
    from compressor.models.on_target import DriftReference, check_side_by_side, latency_verdict
    from compressor.spaces import build_model, spec_from_ref
    from profilers.host import cpu_model
    from profilers.side_by_side import bootstrap_interval
    from targets import load_target

    torch.set_num_threads(1)
    target = load_target("cpu-1t")
    target = dataclasses.replace(target, budgets=dataclasses.replace(target.budgets, latency_ms=None))
    models = {ref: build_model(spec_from_ref(ref, seed=0), SHAPE, 10) for ref in NETWORKS}
    reference = DriftReference.start(target, SHAPE, 10)
    print(f"{cpu_model()}; cpu-1t, {len(NETWORKS)} plain CNNs at 32x32 with the drift reference, "
          f"{args.sessions} sessions", flush=True)
    found = {name: {"quiet": [], "all": []} for name in NETWORKS}
    for index in range(args.sessions):
        session = check_side_by_side(dict(models), target, SHAPE, reference=reference, name="verdicts")
        comparison = session.comparison
        ref_samples = comparison.samples_ms[comparison.reference]
        for name in NETWORKS:
            samples = comparison.samples_ms[session.index(name)]
            found[name]["quiet"].append(comparison.ratios[session.index(name)])
            found[name]["all"].append(bootstrap_interval(samples, ref_samples, confidence=comparison.confidence,
                                                         seed=comparison.seed))
        print(f"session {index + 1}: {comparison.rounds} rounds; quiet "
              + " ".join(f"{found[n]['quiet'][-1].value:.3f}" for n in NETWORKS) + " | all runs "
              + " ".join(f"{found[n]['all'][-1].value:.3f}" for n in NETWORKS), flush=True)

    rows = []
    for name in NETWORKS:
        row = [name.split(":", 2)[2]]
        for statistic in ("quiet", "all"):
            values = [i.value for i in found[name][statistic]]
            median = statistics.median(values)
            row += [f"{median:.3f}", f"{min(values):.3f}-{max(values):.3f}",
                    f"{100 * (max(values) - min(values)) / median:.1f}%"]
        rows.append(row)
    print_table("ratio to the drift reference over the sessions",
                ["network", "quiet median", "range", "spread", "all runs median", "range", "spread"], rows)
    budget = (1 + args.margin) * statistics.median(i.value for i in found[args.near]["quiet"])
    counts = []
    for statistic in ("quiet", "all"):
        verdicts = [latency_verdict(i.scaled(1 / budget)) for i in found[args.near][statistic]]
        counts.append([statistic] + [str(verdicts.count(v)) for v in ("within", "borderline", "over")])
    print_table(f"verdicts on {args.near.split(':', 2)[2]} at a budget of {budget:.3f}x the reference",
                ["statistic", "within", "borderline", "over"], counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
