"""Reading a search's records: the best family, the Pareto front of each fidelity, why nothing fit.

Pure functions of `TrialRecord` lists (what `Schedule.run` returns), used by
the pipeline's final training and report.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

from compressor.search.store import TrialRecord


def best_record(records: list[TrialRecord], tolerance: float = 0.0) -> TrialRecord | None:
    """The feasible evaluation to train last: best score at the highest fidelity reached, the faster on a tie.

    The score is the search's ranking figure (`TrialRecord.score`: from the
    members' mean cross-entropy on validation). Families whose score is
    within `tolerance` of the best one's are a tie, and the tie goes to the
    lowest latency (the screened figure, the same measure for all); then to
    the higher score, then to the earlier proposal. The pipeline passes one
    validation image (1 / the validation split's size): scores closer than
    that differ by less than one image's worth of probability and are equal
    for any purpose. The spread of a family's members
    (their std) would be the statistician's tolerance, but with the default 2
    members it is itself a noisy figure, and it could trade points of accuracy
    for speed that no budget asked for.
    """
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        return None
    top = max(r.fidelity for r in ok)
    at_top = [r for r in ok if r.fidelity == top]
    leader = max(r.score for r in at_top)
    tied = [r for r in at_top if r.score >= leader - tolerance]
    return min(tied, key=lambda r: (math.inf if r.latency_ms is None else r.latency_ms, -r.score, r.proposal))


def failure_summary(records: list[TrialRecord]) -> str:
    """'28 over budget (latency p50 # ms > budget # ms), 2 failed (...)': the most common reasons, for a person."""
    reasons = Counter()
    for rec in records:
        if rec.status in ("ok", "repeat"):
            continue
        # Group numeric variations of one reason ("... 0.31 ms > ..." and "... 0.42 ms > ...").
        key = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "#", rec.reason.split(";")[0].partition("\n")[0])[:80]
        reasons[("over budget" if rec.status == "infeasible" else "failed", key)] += 1
    return ", ".join(f"{n} {status} ({key})" for (status, key), n in reasons.most_common(3))


def pareto_front(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """One front per fidelity: the feasible families not dominated in (higher accuracy, lower latency) there.

    Accuracies after 1 epoch and after 9 do not compare, so each fidelity has
    its own front, over every family evaluated at it. The points are listed by
    fidelity, then latency; each carries its `fidelity` (report.json's
    `search.pareto`), so a reader takes the front of one fidelity by filtering.
    """
    front = []
    for fidelity in sorted({r.fidelity for r in records if r.status == "ok"}):
        points = sorted((r for r in records if r.status == "ok" and r.fidelity == fidelity),
                        key=lambda r: (r.latency_ms, -r.val_accuracy, r.proposal))
        best = -math.inf
        for rec in points:
            if rec.val_accuracy > best:
                front.append({"proposal": rec.proposal, "fidelity": rec.fidelity, "latency_ms": rec.latency_ms,
                              "val_accuracy": rec.val_accuracy, "params": rec.n_params, "macs": rec.macs})
                best = rec.val_accuracy
    return front


def json_safe(value: Any) -> Any:
    """`value` as it will read back from JSON (tuples as lists, anything else unknown as its str)."""
    return json.loads(json.dumps(value, default=str))
