"""The final choice: the search's best families and the baseline trained in full, the best on validation kept.

The search ranks families after short trainings (its fidelities: 1 and 3
epochs by default). That ranking is not the one that counts: on
digits-cluttered with 10% of the labels, the family the search put first
after 3 epochs lost to the plain CNN it had ranked below it by 3 points on
average after 15 (BENCHMARKS.md, "Does the search earn its place?"). So the
student is not the search's first family but the best of a few *finalists*
trained as the student is trained:

1. **Finalists** (`finalist_records`): the top `finalists` families by the
   rule that picks the best one (`search.analysis.best_record`: the highest
   fidelity reached first, then validation accuracy, ties within one
   validation image to the faster), distinct by architecture. When the
   highest fidelity holds fewer families, the next fidelity down fills in.
2. Each is finished on the baseline's terms (compressor.pipeline.finish:
   width filled by measurement, lr/KD tuned) and trained for `final_epochs`
   with the student's recipe, its checkpoint kept under `RUN_DIR/finalists/`.
3. **With `--baseline`, the hand-designed baseline is a finalist too**: it
   is trained for `final_epochs` with the same recipe anyway, so comparing
   it costs nothing more. It competes only when its width was measured
   within the budget (a baseline of which no width fits is trained and
   reported, never shipped). The student is then by construction at least the
   baseline's validation accuracy; when no searched finalist is ahead of it,
   the student *is* the baseline's network and the run says so rather than
   ship the weaker searched one.
4. **The choice** (`choose`): the best validation accuracy after the final
   training; candidates within one validation image of it are a tie, which
   goes to the faster (the latency measured for it: its fill session, its
   screening, or the baseline's width session, all drift-corrected), then to
   the search's order. Test accuracy plays no part; it is reported for every
   finalist (`report.json` `student.finalists`), so what the search alone
   would have given stays visible beside what was shipped.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from compressor.search.store import TrialRecord


def finalist_records(records: Sequence[TrialRecord], count: int, tolerance: float = 0.0) -> list[TrialRecord]:
    """The `count` families to train in full, best first (the module docstring, step 1).

    Each pick is `best_record` over the families not yet picked; a family whose architecture params
    equal a picked one's (a strategy may propose a point twice) is passed over.
    """
    from compressor.search.analysis import best_record

    left = [r for r in records if r.status == "ok"]
    picked: list[TrialRecord] = []
    while left and len(picked) < count:
        best = best_record(left, tolerance=tolerance)
        picked.append(best)
        arch = _arch_key(best)
        left = [r for r in left if r.proposal != best.proposal and _arch_key(r) != arch]
    return picked


def _arch_key(record: TrialRecord) -> str:
    return json.dumps(record.params.get("arch"), sort_keys=True, default=str)


def choose(candidates: Sequence[dict[str, Any]], tolerance: float) -> int:
    """The index of the student among `candidates` (each with "val_accuracy" and "latency_ms"), step 4 above.

    Candidates within `tolerance` of the best validation accuracy are a tie; the tie goes to the lowest
    latency (None counts as slowest), then to the earlier candidate (the search's order, the baseline last).
    """
    if not candidates:
        raise ValueError("no candidate to choose from")
    leader = max(c["val_accuracy"] for c in candidates)
    tied = [i for i, c in enumerate(candidates) if c["val_accuracy"] >= leader - tolerance]
    return min(tied, key=lambda i: (math.inf if candidates[i].get("latency_ms") is None
                                    else candidates[i]["latency_ms"], i))


def summary(candidate: dict[str, Any], chosen: bool) -> dict[str, Any]:
    """What report.json keeps of a finalist: where it came from, its accuracies, latency and whether it was chosen."""
    keys = ("name", "source", "proposal", "fidelity", "member", "search_val_accuracy", "val_accuracy",
            "test_accuracy", "latency_ms", "params", "lr", "kd_alpha", "kd_tau")
    return {**{k: candidate.get(k) for k in keys}, "chosen": chosen}


def choice_text(finalists: Sequence[dict[str, Any]], epochs: int) -> str:
    """One line for a person: which candidate became the student and against what, by validation accuracy."""
    chosen = next(f for f in finalists if f["chosen"])
    others = [f for f in finalists if not f["chosen"]]
    described = ", ".join(f"{f['name']} {100 * f['val_accuracy']:.2f}%" for f in others)
    head = f"student: {chosen['name']}, val {100 * chosen['val_accuracy']:.2f}% after {epochs} epochs"
    if chosen["source"] == "baseline":
        return (head + f"; no searched finalist was ahead of the hand-designed baseline on validation ({described}),"
                " so the student is the baseline's network")
    return head + (f", chosen over {described}" if described else "")
