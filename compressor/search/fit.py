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
(5 for nago's 15 widths). When even the smallest size is predicted over,
the smallest is returned; `skip` says it is predicted over `far_over` x the
budget there, so measuring it is a waste. Everything else about the proposal
(graphs, depths, operations, the KD knobs) is the strategy's choice and is
kept. The predictor is an argument, so the rule is tested with a synthetic
latency function.

The evaluator (`compressor.search.evaluate`) then screens the fitted family
as any other (the real measurement decides), stores the fitted params and
notes the fit in the record's `misc["fit"]`; `strategies.record_fitted`
writes the fitted values where the strategy reads its points, so it learns
from what was evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Fit", "fit_to_budget", "size_ladder"]


@dataclass(frozen=True)
class Fit:
    """The size chosen for one proposal.

    Attributes:
        arch: the fitted arch params (flat, validated: `Space.validate_params`).
        values: the size knobs' fitted values.
        proposed: the size knobs' values as proposed.
        predicted_ms: the predicted latency at the fitted size.
        skip: even the smallest size is predicted over `far_over` x the budget.
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


def fit_to_budget(space, arch: dict[str, Any], predict: Callable[[dict[str, Any]], float], *, budget_ms: float,
                  fraction: float, far_over: float) -> Fit | None:
    """The largest size of `arch` predicted at or under `fraction` x `budget_ms` (see the module docstring).

    Args:
        space: the student space (`Space`).
        arch: the proposal's arch params (any form `space.validate_params` accepts).
        predict: arch params -> predicted latency of the family (ms); must grow with size.
        budget_ms: the latency budget.
        fraction: the share of the budget to fill (0 < fraction <= 1).
        far_over: skip when the smallest size is predicted over far_over x budget_ms.

    Returns:
        The `Fit`, or None when the family declares no size knob.
    """
    ladder = size_ladder(space, arch)
    if not ladder:
        return None
    params = space.validate_params(arch)
    names = [k.name for k in space.size_knobs(params)]
    goal = fraction * budget_ms
    predicted: dict[int, float] = {}

    def at(index: int) -> float:
        if index not in predicted:
            predicted[index] = float(predict(ladder[index]))
        return predicted[index]

    # Invariant: ladder[low] is predicted under the goal (or low is the smallest), ladder[high] over it.
    low, high = 0, len(ladder)
    if at(0) <= goal:
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if at(mid) <= goal else (low, mid)
    chosen = ladder[low]
    return Fit(arch=chosen, values={n: chosen[n] for n in names}, proposed={n: params[n] for n in names},
               predicted_ms=at(low), skip=at(low) > far_over * budget_ms, predictions=len(predicted))
