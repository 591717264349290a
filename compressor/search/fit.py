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

`BudgetFit` is that rule at work on a run's records, the one code path for
both schedules: it holds the run's latency model, fits a new proposal's
record (the fitted params replace the proposed ones, `misc["fit"]` says what
was proposed and what was fitted, `strategies.record_fitted` writes the
fitted values where the strategy reads its points, so it learns from what was
evaluated; `misc["predicted"]` keeps the prediction the screening is judged
against), marks a skip infeasible unmeasured, and learns each screened
member's (features, judged latency). Whoever asks the proposals owns it: the
in-process evaluator (`compressor.search.evaluate`) fits and learns as it
screens; the parallel driver (`compressor.search.parallel`) fits before it
submits and learns the samples each worker returns with its record, so one
model, persisted as in process, sees every measured member. The screening
that follows decides (the real measurement), as for any proposal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from compressor.search.latency_model import FAR_OVER, Features, LatencyModel, network_features
from compressor.search.store import TrialRecord
from compressor.search.strategies import penalty_loss, record_fitted

__all__ = ["BudgetFit", "Fit", "Sample", "fit_to_budget", "sample_family", "size_ladder"]

# A screened member as the latency model learns it: its features and its judged latency (ms).
Sample = tuple[Features, float]


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


def sample_family(space, record: TrialRecord) -> list:
    """The ArchSpecs of `record`'s members (`space.sample` of its arch for each member seed), noted in `record.archs`."""
    specs = [space.sample(record.params["arch"], seed) for seed in record.seeds]
    record.archs = [spec.to_json() for spec in specs]
    return specs


@dataclass
class BudgetFit:
    """The run's latency model at work: fit each new proposal before its screening, learn each screened member.

    Attributes:
        space: the student space (`Space`).
        model: the target's latency model (`LatencyModel.open`: persisted per target fingerprint).
        budget_ms: the latency budget (None: nothing is fitted, samples are still learnt).
        fill_fraction: the share of the budget a fitted family is sized to (None: predict only).
        input_shape, num_classes: what the members are built for.
    """

    space: Any
    model: LatencyModel
    budget_ms: float | None
    fill_fraction: float | None
    input_shape: tuple[int, ...]
    num_classes: int

    @classmethod
    def open(cls, config, space, target, dataset, cache_dir=None) -> "BudgetFit":
        """The run's: `target`'s stored calibration under `cache_dir`, its budget and `config.fill_fraction`."""
        return cls(space=space, model=LatencyModel.open(target, cache_dir), budget_ms=target.budgets.latency_ms,
                   fill_fraction=config.fill_fraction, input_shape=tuple(dataset.input_shape),
                   num_classes=dataset.num_classes)

    def fit(self, record: TrialRecord) -> None:
        """Size a new proposal's record to the budget, or mark it infeasible unmeasured (module docstring)."""
        model, budget = self.model, self.budget_ms
        if budget is None or not model.calibrated or record.misc is None:
            return
        fit = None
        if self.fill_fraction is not None:
            fit = fit_to_budget(self.space, record.params["arch"], lambda arch: self.predict(arch, record.seeds),
                                budget_ms=budget, fraction=self.fill_fraction, far_over=FAR_OVER)
        if fit is not None:
            record.params = {**record.params, "arch": fit.arch}
            record.misc = {**record_fitted(record.misc, self.space, fit.arch, fit.values), "fit": fit.describe()}
        predicted = self.predict(record.params["arch"], record.seeds) if fit is None else fit.predicted_ms
        record.misc = {**record.misc, "predicted": {"latency_ms": predicted, "samples": len(model.samples)}}
        if fit is not None and fit.skip:
            sizes = ", ".join(f"{k}={v:g}" for k, v in fit.values.items())
            sample_family(self.space, record)
            record.status = "infeasible"
            record.reason = (f"predicted over budget: {fit.predicted_ms:.3g} ms at the smallest size ({sizes}), over "
                             f"{FAR_OVER:g}x the {budget:g} ms budget (latency model of {len(model.samples)} "
                             "measured networks; not measured)")
            record.loss = penalty_loss(fit.predicted_ms / budget - 1.0)

    def predict(self, arch: dict[str, Any], seeds: list[int]) -> float:
        """The family's predicted latency: its slowest distinct member's (zoo members are all alike)."""
        specs = {json.dumps(s.resolved, sort_keys=True): s for s in (self.space.sample(arch, seed) for seed in seeds)}
        features = [network_features(self.space.build(s, self.input_shape, self.num_classes), self.input_shape)
                    for s in specs.values()]
        return float(self.model.predict(features).max())

    def learn(self, samples: Iterable[Sample]) -> None:
        """Screened members: each becomes a sample of the model, which is saved after each."""
        for features, latency_ms in samples:
            self.model.add(features, latency_ms)
