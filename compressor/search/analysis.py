"""Reading a search's records: the best family, the Pareto front, why nothing fit.

Pure functions of `TrialRecord` lists (what `Schedule.run` returns), used by
the pipeline's final training and report.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from compressor.search.store import TrialRecord


def best_record(records: list[TrialRecord]) -> TrialRecord | None:
    """The feasible evaluation with the best mean validation accuracy at the highest fidelity reached."""
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        return None
    top = max(r.fidelity for r in ok)
    return max((r for r in ok if r.fidelity == top), key=lambda r: (r.val_accuracy, -r.proposal))


def failure_summary(records: list[TrialRecord]) -> str:
    """'28 over budget (latency p50 # ms > budget # ms), 2 failed (...)': the most common reasons, for a person."""
    reasons = Counter()
    for rec in records:
        if rec.status == "ok":
            continue
        # Group numeric variations of one reason ("... 0.31 ms > ..." and "... 0.42 ms > ...").
        key = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "#", rec.reason.split(";")[0].partition("\n")[0])[:80]
        reasons[("over budget" if rec.status == "infeasible" else "failed", key)] += 1
    return ", ".join(f"{n} {status} ({key})" for (status, key), n in reasons.most_common(3))


def pareto_front(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """Feasible families not dominated in (higher accuracy, lower latency), at each one's highest fidelity."""
    latest: dict[int, TrialRecord] = {}
    for rec in records:
        if rec.status == "ok" and (rec.proposal not in latest or rec.fidelity > latest[rec.proposal].fidelity):
            latest[rec.proposal] = rec
    points = sorted(latest.values(), key=lambda r: (r.latency_ms, -r.val_accuracy))
    front, best = [], -1.0
    for rec in points:
        if rec.val_accuracy > best:
            front.append({"proposal": rec.proposal, "fidelity": rec.fidelity, "latency_ms": rec.latency_ms,
                          "val_accuracy": rec.val_accuracy, "params": rec.n_params, "macs": rec.macs})
            best = rec.val_accuracy
    return front


def json_safe(value: Any) -> Any:
    """`value` as it will read back from JSON (tuples as lists, anything else unknown as its str)."""
    return json.loads(json.dumps(value, default=str))
