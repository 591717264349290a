"""Fit a proposal to the latency budget before it is screened: size its family to fill a fraction of the budget.

Each space declares its width knobs (`size=True` on the knob; `Space.size_knobs`
returns those of a proposal's family: nago's `base_width`, the zoo's
`width_mult`, `width` or `width_1..3` (+ `last_width`)). They are scaled
together by one factor: `size_ladder` lists the proposal at every factor that
puts one of them on one of its allowed values (every step of an int knob, 13
evenly spread values of a float one), each knob at its allowed value nearest
to proposed x factor (clipped to its range), so the ladder runs from every
knob at its smallest to every knob at its largest and latency grows along it.
Between two such sizes the knobs that change move one at a time, the last
declared first (`stage_steps`): a plain CNN's stage 1 runs at 4x the pixels
of stage 2 and 16x those of stage 3, so one factor that takes 8-16-64 to
8-24-72 jumped from 0.59x to 1.03x one budget on digits-cluttered, and the
finalists the fill grew along that ladder sat at 0.58-0.93x of it (median
0.78x) while the warm start they lost to sat at 0.82-0.99x; with the steps,
at a median 0.88x (BENCHMARKS.md, "A ladder that grows the last stage
first"). 8-16-72 between them is a rung now.

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
so a proposal that width can fit keeps its graph. trade is told the fitted
sizes and depths; TPE is told the point it asked for, because told the
fitted one it never saw the sizes and depths it asked for and kept asking
for them (`strategies.record_fitted`). When even the smallest
size at the smallest depth is predicted over, it is returned; `skip` says it
is predicted over `far_over` x the budget there (`LatencyModel.skip_factor`),
so measuring it is a waste. Everything else about the proposal (graph
models, operations, ratios, the KD knobs) is the strategy's choice and is
kept. The predictor is an argument, so the rule is tested with a synthetic
latency function.

`BudgetFit` is that rule at work on a run's records, the one code path for
both schedules: it holds the run's latency model, fits a new proposal's record
(the fitted params replace the proposed ones, `misc["fit"]` says what was
proposed and what was fitted, `strategies.record_fitted` writes the fitted
values where trade reads its points; `misc["predicted"]` keeps the prediction
the screening is judged against), marks a skip infeasible unmeasured, and
learns each screened member's (features, judged latency). Whoever asks the
proposals owns it: the in-process evaluator (`compressor.search.evaluate`)
fits and learns as it screens; the parallel driver
(`compressor.search.parallel`) fits before it submits and learns the samples
each worker returns with its record, so one model, persisted as in process,
sees every measured member. The screening that follows decides (the real
measurement), as for any proposal.

`calibration_points` picks what a cold model measures before it is trusted
(the in-process evaluator's `_calibrate`; the parallel driver does not
measure, so a cold parallel run screens its first proposals as asked until
the model has `MIN_SAMPLES`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from compressor.search.latency_model import MIN_SAMPLES, Features, LatencyModel, network_features
from compressor.search.store import TrialRecord
from compressor.search.strategies import penalty_loss, record_fitted

__all__ = ["BudgetFit", "Fit", "Sample", "calibration_points", "fit_to_budget", "network_key", "sample_family",
           "size_ladder", "stage_steps"]

# A screened member as the latency model learns it: its features and its judged latency (ms).
Sample = tuple[Features, float]


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
    names = [k.name for k in knobs]
    factors = sorted({value / params[k.name] for k in knobs for value in k.values()})
    ladder: list[dict[str, Any]] = []
    for factor in factors:  # every knob grows with the factor, so each step is a new size (none repeats)
        sized = {**params, **{k.name: k.nearest(params[k.name] * factor) for k in knobs}}
        ladder += stage_steps(ladder[-1], sized, names) if ladder else [sized]
    return ladder


def stage_steps(lower: Mapping[Any, Any], upper: Mapping[Any, Any], names: Sequence[Any]) -> list[dict[Any, Any]]:
    """The sizes from `lower` to `upper` (each knob of `names` at least its value in `lower`) moving the knobs that
    differ one at a time, the last of `names` first, `upper` last (a later stage runs at fewer pixels, so a channel
    there costs the least latency: the module docstring)."""
    steps, current = [], dict(lower)
    for name in reversed(names):
        if current[name] != upper[name]:
            current = {**current, name: upper[name]}
            steps.append(current)
    return steps


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
        predict: arch params -> predicted latency of the family (ms); it should grow with size and depth
            (where it dips, at a SIMD-aligned width, the ladder's search still ends at a size predicted
            under the goal beside one predicted over it).
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


def network_key(space, arch: dict[str, Any]) -> str:
    """`arch` as one comparable string, written one way whatever form it came in (a warm start's params are
    hyperopt's nested form, a proposal's flat)."""
    return json.dumps(space.validate_params(arch), sort_keys=True)


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
    # Archs screened within the budget already in this run (`WarmStart.measured`, by arch key): never
    # resized, and the search's screening reuses that verdict (`misc["screened"]`).
    known: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # The warm starts' archs (one or more per group of the space): a cold model is calibrated on them too
    # (`calibration_points`' `others`).
    families: Sequence[dict[str, Any]] = ()

    @classmethod
    def open(cls, config, space, target, dataset, cache_dir=None, warm_starts=(), reference=None) -> "BudgetFit":
        """The run's: `target`'s stored calibration under `cache_dir`, its budget and `config.fill_fraction`.

        `warm_starts`: the search's first points; those `measured` within the budget are kept as they are.
        `reference`: the run's drift reference, the calibration's unit (`LatencyModel.open`).
        """
        known = {network_key(space, w.params(space)["arch"]): w.measured for w in warm_starts if w.measured}
        model = LatencyModel.open(target, cache_dir, reference=reference, input_shape=tuple(dataset.input_shape),
                                  num_classes=dataset.num_classes)
        return cls(space=space, model=model, budget_ms=target.budgets.latency_ms,
                   fill_fraction=config.fill_fraction, input_shape=tuple(dataset.input_shape),
                   num_classes=dataset.num_classes, known=known,
                   families=[w.params(space)["arch"] for w in warm_starts])

    def needs_calibration(self, record: TrialRecord) -> bool:
        """Whether a new proposal should wait for `calibration_points` to be measured: the model is cold and would fit it."""
        return (self.budget_ms is not None and self.fill_fraction is not None and record.misc is not None
                and not self.model.calibrated)

    def missing_samples(self) -> int:
        """How many more measured members the model needs before it is trusted (`MIN_SAMPLES`)."""
        return max(MIN_SAMPLES - len(self.model.samples), 0)

    def fit(self, record: TrialRecord) -> None:
        """Size a new proposal's record to the budget, or mark it infeasible unmeasured (module docstring)."""
        model, budget = self.model, self.budget_ms
        if budget is None or record.misc is None:
            return
        screened = self.known.get(network_key(self.space, record.params["arch"]))
        if screened is not None:
            # One network, one verdict per run: measured again, a size judged at 0.97x the budget came out
            # 1.05x over in a benchmark run, and the search lost the baseline's own network.
            record.misc = {**record.misc, "screened": copy.deepcopy(screened)}
            return
        if not model.calibrated:
            return
        fit, far_over = None, model.skip_factor(budget)
        if self.fill_fraction is not None:
            fit = fit_to_budget(self.space, record.params["arch"], lambda arch: self.predict(arch, record.seeds),
                                budget_ms=budget, fraction=self.fill_fraction, far_over=far_over)
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
                             f"{far_over:.3g}x the {budget:g} ms budget (latency model of {len(model.samples)} "
                             "measured networks; not measured)")
            # The skip factor may be under 1: a skipped family predicted just under the budget costs no more.
            record.loss = penalty_loss(max(fit.predicted_ms / budget - 1.0, 0.0))

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


def calibration_points(space, arch: dict[str, Any], count: int,
                       others: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """`count` sizes to measure before a cold latency model is trusted, spread over what a fit may ask.

    Alternately from two ladders, each at evenly spread rungs (its ends first): the
    proposal's sizes at its own depth, and at every depth knob's smallest. Two
    depths, so the model separates the per-op cost (which depth changes) from the
    per-call one; every width, so it sees the MACs and activations the fit will
    ask about. Without size knobs, the proposal itself.

    `others` are the other families the search will propose (its warm starts, one
    per group of the space): up to half of the points are their smallest sizes,
    evenly spread over them and alternating with the proposal's. A model calibrated
    on one family alone priced the next ones wrong: the first run on an AVX-512 Xeon
    measured three plain CNNs and three ShuffleNets over the budget after a
    calibration on nago's first proposal (BENCHMARKS.md, "An AVX-512 Xeon").
    """
    params = space.validate_params(arch)
    own_key = json.dumps(params, sort_keys=True, default=str)
    foreign = []
    for other in others:
        checked = space.validate_params(other)
        if json.dumps(checked, sort_keys=True, default=str) != own_key:
            foreign.append((size_ladder(space, checked) or [checked])[0])
    take = min(len(foreign), count // 2)
    foreign = [foreign[round(i * (len(foreign) - 1) / max(take - 1, 1))] for i in range(take)]
    own = _own_points(space, params, count - take)
    return _distinct([p for pair in zip(own, foreign) for p in pair] + own[len(foreign):] + foreign[len(own):])[:count]


def _own_points(space, params: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """`count` sizes of the proposal `params`: evenly spread rungs of its ladder and of its shallowest one's."""
    shallowest = {**params, **{k.name: k.values()[0] for k in space.depth_knobs(params)}}
    ladders = [ladder for ladder in (size_ladder(space, params), size_ladder(space, shallowest)) if ladder]
    if not ladders:
        return [params][:count]
    per_ladder = -(-count // len(ladders))
    spread = [[ladder[round(i * (len(ladder) - 1) / max(per_ladder - 1, 1))] for i in (0, per_ladder - 1,
               *range(1, per_ladder - 1))] for ladder in ladders]
    return _distinct([p for rungs in zip(*spread) for p in rungs])[:count]


def _distinct(points: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`points` in order, each arch once."""
    kept, seen = [], set()
    for point in points:
        key = json.dumps(point, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            kept.append(point)
    return kept
