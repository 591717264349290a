"""Fit a proposal to the latency budget before it is screened: size its family to fill a fraction of the budget.

Each space declares its width knobs (`size=True` on the knob; `Space.size_knobs`
returns those of a proposal's family: nago's `base_width`, the zoo's
`width_mult`, `width` or `width_1..3` (+ `last_width`)). They are scaled
together by one factor: `size_ladder` lists the proposal at every factor that
puts one of them on one of its allowed values (every step of an int knob, 13
evenly spread values of a float one), each knob at its allowed value nearest
to proposed x factor (clipped to its range), so the ladder runs from every
knob at its smallest to every knob at its largest and latency grows along it.

`fit_to_budget` bisects that ladder with a latency predictor (the family's
worst member, `compressor.search.latency_model`) for the largest size
predicted at or under `fraction` x the budget: about log2(len) + 1 predictions
(5 for nago's 15 widths).

Width cannot fix a graph-heavy proposal: a nago network of 6 cells x 4 mid
nodes x 5 ops is bound by its ~100 ops' runtime overhead at any width, and
such proposals, predicted just under the budget at their smallest width and
measured over, were most of what remained over budget once the model was
calibrated (BENCHMARKS.md, "Over-budget screenings": with the width fit, a
cold-start calibration and a skip factor from the model's residuals, a third
of the screenings were still over; with depth fitted too, none). So when the
smallest width is predicted over the goal, the family's depth knobs
(`depth=True`, `Space.depth_knobs`: nago's node counts, the zoo's block
counts and `depth_mult`) are stepped down first, one step at a time, each
time the step that lowers the smallest width's prediction most (3 predictions
a step for nago), until the smallest width fits the goal, depth is at its
smallest or a step no longer lowers the prediction; then the width is
bisected at that depth. Depth is changed only when width alone cannot fit,
so a proposal that width can fit keeps its graph. The strategy is told the
shrunk depth (`record_fitted`), so it learns what was evaluated; a cost
measured with it: TPE's expected improvement favours what it has not seen,
so under a tight budget it kept asking for the deepest graphs (8 of 12
proposals in the benchmark), each fitted back to one-node cells; they
differed in width, cell count and operation, and the best accuracy matched
the width-only fit's (95.7% against 95.5%). When even the smallest
size at the smallest depth is predicted over, it is returned; `skip` says it
is predicted over `far_over` x the budget there (`LatencyModel.skip_factor`),
so measuring it is a waste. Everything else about the proposal (graph
models, operations, ratios, the KD knobs) is the strategy's choice and is
kept. The predictor is an argument, so the rule is tested with a synthetic
latency function.

`calibration_points` picks what a cold model measures before it is trusted
(the evaluator's `_calibrate`).

The evaluator (`compressor.search.evaluate`) then screens the fitted family
as any other (the real measurement decides), stores the fitted params and
notes the fit in the record's `misc["fit"]`; `strategies.record_fitted`
writes the fitted values where the strategy reads its points, so it learns
from what was evaluated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Fit", "calibration_points", "fit_to_budget", "size_ladder"]


@dataclass(frozen=True)
class Fit:
    """The size chosen for one proposal.

    Attributes:
        arch: the fitted arch params (flat, validated: `Space.validate_params`).
        values: the size knobs' fitted values, and those of the depth knobs the fit shrank.
        proposed: the same knobs' values as proposed.
        predicted_ms: the predicted latency at the fitted size.
        skip: even the smallest size (at the smallest depth tried) is predicted over `far_over` x the budget.
        predictions: how many sizes were predicted.
    """

    arch: dict[str, Any]
    values: dict[str, Any]
    proposed: dict[str, Any]
    predicted_ms: float
    skip: bool
    predictions: int

    def describe(self) -> dict[str, Any]:
        """The fit as a record's `misc["fit"]` keeps it."""
        return {"proposed": self.proposed, "fitted": self.values, "predicted_ms": self.predicted_ms,
                "skipped": self.skip, "predictions": self.predictions}


def size_ladder(space, arch: dict[str, Any]) -> list[dict[str, Any]]:
    """`arch` (validated, flat) at every size of its size knobs, smallest first, without repeats ([] without size knobs)."""
    params = space.validate_params(arch)
    knobs = space.size_knobs(params)
    if not knobs:
        return []
    factors = sorted({value / params[k.name] for k in knobs for value in k.values()})
    ladder, seen = [], set()
    for factor in factors:
        sized = {k.name: k.nearest(params[k.name] * factor) for k in knobs}
        key = tuple(sized.values())
        if key not in seen:
            seen.add(key)
            ladder.append({**params, **sized})
    return ladder


def _step_down(knob, value: Any) -> Any | None:
    """The allowed value of `knob` just below `value`, or None at its smallest."""
    lower = [v for v in knob.values() if v < value]
    return lower[-1] if lower else None


def fit_to_budget(space, arch: dict[str, Any], predict: Callable[[dict[str, Any]], float], *, budget_ms: float,
                  fraction: float, far_over: float) -> Fit | None:
    """The largest size of `arch` predicted at or under `fraction` x `budget_ms` (see the module docstring).

    Args:
        space: the student space (`Space`).
        arch: the proposal's arch params (any form `space.validate_params` accepts).
        predict: arch params -> predicted latency of the family (ms); must grow with size and depth.
        budget_ms: the latency budget.
        fraction: the share of the budget to fill (0 < fraction <= 1).
        far_over: skip when the smallest size is predicted over far_over x budget_ms
            (`LatencyModel.skip_factor`).

    Returns:
        The `Fit`, or None when the family declares no size knob.
    """
    params = space.validate_params(arch)
    ladder = size_ladder(space, params)
    if not ladder:
        return None
    goal = fraction * budget_ms
    predicted: dict[str, float] = {}

    def at(candidate: dict[str, Any]) -> float:
        key = json.dumps(candidate, sort_keys=True, default=str)
        if key not in predicted:
            predicted[key] = float(predict(candidate))
        return predicted[key]

    # Too deep for any width: shrink the depth knob whose step down lowers the smallest width's prediction most.
    shallower = params
    while at(ladder[0]) > goal:
        steps = [{**shallower, k.name: lower} for k in space.depth_knobs(params)
                 if (lower := _step_down(k, shallower[k.name])) is not None]
        best = min(steps, key=lambda p: at(size_ladder(space, p)[0]), default=None)
        if best is None or at(size_ladder(space, best)[0]) >= at(ladder[0]):
            break  # at the smallest depth, or depth does not lower the prediction: keep the strategy's
        shallower, ladder = best, size_ladder(space, best)

    # Invariant: ladder[low] is predicted under the goal (or low is the smallest), ladder[high] over it.
    low, high = 0, len(ladder)
    if at(ladder[0]) <= goal:
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if at(ladder[mid]) <= goal else (low, mid)
    chosen = ladder[low]
    names = [k.name for k in space.size_knobs(params)]
    names += [k.name for k in space.depth_knobs(params) if chosen[k.name] != params[k.name]]
    return Fit(arch=chosen, values={n: chosen[n] for n in names}, proposed={n: params[n] for n in names},
               predicted_ms=at(chosen), skip=at(chosen) > far_over * budget_ms, predictions=len(predicted))


def calibration_points(space, arch: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """`count` sizes of `arch` to measure before a cold latency model is trusted, spread over what a fit may ask.

    Alternately from two ladders, each at evenly spread rungs (its ends first): the
    proposal's sizes at its own depth, and at every depth knob's smallest. Two
    depths, so the model separates the per-op cost (which depth changes) from the
    per-call one; every width, so it sees the MACs and activations the fit will
    ask about. Without size knobs, the proposal itself.
    """
    params = space.validate_params(arch)
    shallowest = {**params, **{k.name: k.values()[0] for k in space.depth_knobs(params)}}
    ladders = [ladder for ladder in (size_ladder(space, params), size_ladder(space, shallowest)) if ladder]
    if not ladders:
        return [params][:count]
    per_ladder = -(-count // len(ladders))
    spread = [[ladder[round(i * (len(ladder) - 1) / max(per_ladder - 1, 1))] for i in (0, per_ladder - 1,
               *range(1, per_ladder - 1))] for ladder in ladders]
    points, seen = [], set()
    for point in (p for rungs in zip(*spread) for p in rungs):
        key = json.dumps(point, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            points.append(point)
    return points[:count]
