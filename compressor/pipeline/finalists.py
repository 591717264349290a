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
   fidelity reached first, then its score (from its cross-entropy), ties
   within one validation image to the faster), distinct by network and, with
   `--baseline`, other than the baseline's network (the plain warm start at
   the baseline's width, which reaches the highest fidelity as every warm
   start does, would otherwise take a finalist's place to be trained twice).
   Distinct *once filled* (step 2 grows each along its family's size ladder,
   so plain 8-8-16 and 16-16-32 with the same depths become one network):
   `compress._distinct_finalists` fills them in order and passes over one
   that fills to an earlier finalist's network or the baseline's, the next
   family taking its place (`report["finalists_merged"]`). Before, 5-minute
   searches on digits-cluttered trained the deeper plain warm start's
   network twice, as the warm start and as a proposal with other knobs, in
   every TPE run and in one random run of six.
   When the highest fidelity holds fewer families, the next fidelity down
   fills in. **The budget-filling plain warm starts are finalists too**,
   whatever their rank (`kept`: the hand-designed networks the search starts
   from, measured within the budget in the baseline's width session; with
   `--baseline` the baseline's own network is the baseline finalist
   instead): a searched family replaces one only by beating it after the
   full training, not after 3 epochs. Why: with 5 minutes of TPE on
   digits-cluttered with 10% of the labels, two plain networks TPE found
   were ahead of the deeper plain warm start after 3 epochs (66.5% and 64.2%
   validation against 63.4%), took both finalist places and, after 15
   epochs, were 2-5 points behind it on validation, and the baseline's
   network shipped: +0.00 where random, which had kept the warm start as a
   finalist, shipped +2.41 (BENCHMARKS.md, "Five minutes of search, TPE
   against random").
2. Each is finished on the baseline's terms (compressor.pipeline.finish:
   width filled by measurement, lr/KD tuned) and trained for `final_epochs`
   with the student's recipe, its checkpoint kept under `RUN_DIR/finalists/`.
3. **With `--baseline`, the hand-designed baseline is a finalist too**: it
   is trained for `final_epochs` with the same recipe anyway, so comparing
   it costs nothing more. It competes only when its width was measured
   within the budget (a baseline of which no width fits is trained and
   reported, never shipped). The student is then by construction never
   behind the baseline on validation beyond the noise of the comparison;
   when no searched finalist is ahead of it beyond that noise (step 5), the
   student *is* the baseline's network and the run says so rather than ship
   a searched one that is only as good.
4. **The final session** (compress._final_session): the teacher, every
   finalist and the baseline are measured in ONE side-by-side session, and
   only the finalists that session judges within the budgets (`fits`)
   compete; when none is, all do and the report says the student misses
   the budget. Why: a finalist grown to the widest size within the budget
   in its fill session can be over it in a later one. In the demo on the
   2-core VM a nago finalist filled to 0.91x the budget measured 1.05x
   (1.045-1.058) six minutes later, its latency over the tiny drift
   reference's having moved from 2.09 to 2.42 (contention that slows a
   larger network more; the reference cannot correct it), and was shipped.
   So the student's verdict, its latency and its speed-up come from the
   session that chose it.
5. **The choice** (`choose`): the best validation accuracy after the final
   training is the *leader*, and the student unless one of two things:
   * **The baseline is within one standard error of it**, by the paired
     difference (`paired_tie`: the images only one of the two gets right, n,
     give a standard error of about sqrt(n) images; never less than one
     image): Breiman's one-standard-error rule, told apart by the two
     models' own predictions on the same images rather than by their
     accuracies alone. Then the baseline stands in for the leader: a
     searched network replaces the hand-designed one only when it is ahead
     of it on validation beyond the noise of the comparison. Why: on
     digits-cluttered (1,077 validation images) two finalists were 60-155
     images apart in what they got right, a standard error of 8-12 images,
     and a searched finalist 4 images ahead of the baseline on validation was
     3.15 points behind it on test (BENCHMARKS.md, "The choice among
     finalists").
   * **Another is as accurate and faster.** Speed decides only between
     networks as accurate on validation as that one, within one image
     (`as_accurate`): the fastest of them wins, latencies within
     `LATENCY_TIE` of it counting as equal (each from the final session,
     drift-corrected); among those, the baseline when it is one of them,
     else the best on validation, then the search's order. A searched
     network that speed picks must itself be one that may replace the
     baseline: ahead of it beyond one paired standard error, or as accurate
     as it within one image and clearly faster, as the baseline's own
     clause asks. Before, a leader ahead of the baseline beyond the noise
     let speed ship a finalist within one image of the leader that was
     within the noise of the baseline and not as accurate as it (none of
     the choices recorded in BENCHMARKS.md met that case: `--rechoose`
     ships what it shipped before in all of them).
   Before, a network within the standard error of the leader and clearly
   faster won too. That is the one-standard-error rule's premise, that the
   simpler of two models within the noise generalises better, and it did
   not hold for these students, which are bound by their capacity: of the
   six choices BENCHMARKS.md records where that clause decided, three were
   1.11, 1.67 and 3.15 test points behind what today's rule ships, three
   ahead by 0.09-0.28 (one test image on digits) (BENCHMARKS.md, "TRADE
   proposes networks it has not trained").
   Test accuracy plays no part; it is reported for every
   finalist (`report.json` `student.finalists`, with the images only it and
   only the student got right on validation), so what the search alone
   would have given stays visible beside what was shipped.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Sequence

from compressor.search.store import TrialRecord


def finalist_records(records: Sequence[TrialRecord], count: int, tolerance: float = 0.0,
                     excluded: Callable[[TrialRecord], bool] = lambda record: False,
                     kept: Callable[[TrialRecord], bool] = lambda record: False,
                     network: Callable[[TrialRecord], str] = lambda record: _arch_key(record.params.get("arch"))
                     ) -> list[TrialRecord]:
    """The `count` best families to train in full, best first, then every `kept` one not among them (the module
    docstring, step 1).

    Each pick is `best_record` over the families not yet picked; a family whose `network` (its architecture
    params, written one way: `compress` passes the space's validated form, because a warm start's params are
    stored in hyperopt's nested form and a proposal's flat) equals a picked one's (a strategy may propose a
    point twice) or that is `excluded` (the baseline's network, a finalist anyway with `--baseline`) is passed
    over. A `kept` family (a budget-filling warm start) left over after the `count` picks is picked too, in the
    search's order, at its best record.
    """
    from compressor.search.analysis import best_record

    left = [r for r in records if r.status == "ok" and not excluded(r)]
    picked: list[TrialRecord] = []

    def pick(best: TrialRecord) -> None:
        nonlocal left
        picked.append(best)
        arch = network(best)
        left = [r for r in left if r.proposal != best.proposal and network(r) != arch]

    while left and len(picked) < count:
        pick(best_record(left, tolerance=tolerance))
    while any(kept(r) for r in left):
        first = min(r.proposal for r in left if kept(r))
        pick(best_record([r for r in left if r.proposal == first], tolerance=tolerance))
    return picked


def _arch_key(arch: dict[str, Any] | None) -> str:
    return json.dumps(arch, sort_keys=True, default=str)


# Latencies of one network, drift-corrected, moved 3-6% between sessions (BENCHMARKS.md): closer than this,
# neither of two finalists is the faster.
LATENCY_TIE = 0.06


def _deficit(leader: dict[str, Any], candidate: dict[str, Any], val_images: int) -> tuple[float, int | None]:
    """How many validation images fewer `candidate` gets right than `leader`, and how many exactly one of the two
    gets right: from both `val_wrong` (the indices of the images each gets wrong), or, without them, the deficit
    from the accuracies over `val_images` and None."""
    lead, other = leader.get("val_wrong"), candidate.get("val_wrong")
    if lead is None or other is None:
        return (leader["val_accuracy"] - candidate["val_accuracy"]) * val_images, None
    return len(other) - len(lead), len(set(lead) ^ set(other))


def paired_tie(leader: dict[str, Any], candidate: dict[str, Any], val_images: int) -> bool:
    """Whether `candidate` is within one standard error of `leader` on validation (step 5 above): its deficit in
    images at most sqrt of the images exactly one of them gets right; without their predictions, at most one image.
    """
    deficit, disagree = _deficit(leader, candidate, val_images)
    return deficit <= (1.0 + 1e-9 if disagree is None else max(1.0, math.sqrt(disagree)))


def as_accurate(reference: dict[str, Any], candidate: dict[str, Any], val_images: int) -> bool:
    """Whether `candidate` gets as many validation images right as `reference`, give or take one (step 5)."""
    deficit, _ = _deficit(reference, candidate, val_images)
    return abs(deficit) <= 1.0 + 1e-9


def choose(candidates: Sequence[dict[str, Any]], val_images: int) -> int:
    """The index of the student among `candidates` (each with "val_accuracy", "latency_ms", optionally "source",
    "val_wrong" and the final session's "fits"), by steps 4 and 5 above; `val_images` is the size of the
    validation split.
    """
    if not candidates:
        raise ValueError("no candidate to choose from")
    fitting = [i for i in range(len(candidates)) if candidates[i].get("fits", True)]
    order = fitting or range(len(candidates))
    leader = max(order, key=lambda i: (candidates[i]["val_accuracy"], -i))
    baseline = next((i for i in order if candidates[i].get("source") == "baseline"), None)
    reference = leader
    if baseline is not None and paired_tie(candidates[leader], candidates[baseline], val_images):
        reference = baseline  # the leader is not ahead of it beyond the noise

    def latency(i: int) -> float:
        value = candidates[i].get("latency_ms")
        return math.inf if value is None else value

    def may_replace_baseline(i: int) -> bool:
        if baseline is None or i == baseline:
            return True
        mine, theirs = candidates[i], candidates[baseline]
        return (not paired_tie(mine, theirs, val_images)
                or (as_accurate(theirs, mine, val_images) and latency(i) * (1.0 + LATENCY_TIE) < latency(baseline)))

    level = [i for i in order if may_replace_baseline(i)
             and (i == reference or as_accurate(candidates[reference], candidates[i], val_images))]
    fastest = min(latency(i) for i in level)
    quick = [i for i in level if latency(i) <= fastest * (1.0 + LATENCY_TIE)]
    return baseline if baseline in quick else max(quick, key=lambda i: (candidates[i]["val_accuracy"], -i))


def paired_counts(student: dict[str, Any], other: dict[str, Any]) -> dict[str, int] | None:
    """The validation images only the student gets right and only `other` gets right, or None without predictions."""
    mine, theirs = student.get("val_wrong"), other.get("val_wrong")
    if mine is None or theirs is None:
        return None
    return {"student_only": len(set(theirs) - set(mine)), "finalist_only": len(set(mine) - set(theirs))}


def summary(candidate: dict[str, Any], chosen: bool, student: dict[str, Any] | None = None) -> dict[str, Any]:
    """What report.json keeps of a finalist: where it came from, its accuracies, latency, whether it was chosen and,
    beside the `student`, the validation images only one of the two got right (`paired`)."""
    keys = ("name", "source", "proposal", "fidelity", "member", "search_val_accuracy", "val_accuracy",
            "test_accuracy", "latency_ms", "budget_ratio", "within_budget", "fits", "params", "lr", "kd_alpha",
            "kd_tau")
    paired = None if student is None or chosen else paired_counts(student, candidate)
    return {**{k: candidate.get(k) for k in keys}, "chosen": chosen, "paired": paired}


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def choice_text(finalists: Sequence[dict[str, Any]], epochs: int) -> str:
    """One line for a person: which candidate became the student and against what, by validation accuracy."""
    chosen = next(f for f in finalists if f["chosen"])
    others = [f for f in finalists if not f["chosen"]]

    def described(f: dict[str, Any]) -> str:
        paired = f.get("paired")
        images = "" if not paired else (f" (the student right and it wrong on {_images(paired['student_only'])}, "
                                        f"the reverse on {paired['finalist_only']})")
        over = " but over the budget in the final session" if f.get("fits") is False else ""
        return f"{f['name']} {100 * f['val_accuracy']:.2f}%{images}{over}"

    listed = ", ".join(described(f) for f in others)
    head = f"student: {chosen['name']}, val {100 * chosen['val_accuracy']:.2f}% after {epochs} epochs"
    if chosen["source"] == "baseline":
        fitting = " within the budget" if any(f.get("fits") is False for f in others) else ""
        return (head + f"; no searched finalist{fitting} was ahead of the hand-designed baseline on validation by "
                f"more than one standard error ({listed}), so the student is the baseline's network")
    return head + (f", chosen over {listed}" if listed else "")
