"""`--strategy trade` (compressor.search.trust_region): the [0,1] mapping, TuRBO's length rules, resume, the schedule.

Toy objectives are functions of the proposed params, so every test runs
without torch and without training (except the one CLI run, marked slow).
A two-family toy space keeps the GP work of the fast tests small; the zoo
space is used where its real families matter.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from compressor.search.config import SearchConfig, kd_hyperopt_space, kd_knobs
from compressor.search.schedule import Schedule
from compressor.search.store import TrialRecord, TrialStore
from compressor.search.strategies import HyperoptStrategy, penalty_loss
from compressor.search.trust_region import (
    EXHAUSTED,
    INITIAL_LENGTH,
    MAX_LENGTH,
    NOVELTY_CHECKS,
    KnobMap,
    TrustRegionStrategy,
    from_unit,
    to_unit,
)
from compressor.spaces import SPACES, get_space
from compressor.spaces.base import ChoiceKnob, FloatKnob, IntKnob, Space, knob_hyperopt


class ToySpace(Space):
    """Two families with one knob of each kind between them (the strategy reads only the knob declarations)."""

    name = "toy"

    def __init__(self, groups: dict[str, tuple] | None = None) -> None:
        self.groups = groups or {
            "a": (FloatKnob("x", 0.5, 0.0, 1.0), IntKnob("n", 16, 8, 64, step=8)),
            "b": (ChoiceKnob("c", "p", ("p", "q", "r")), FloatKnob("s", 0.1, 0.01, 1.0, log=True)),
        }

    def search_groups(self) -> dict[str, tuple]:
        return self.groups

    def group_params(self, group: str, values: dict) -> dict:
        return {"group": group, **values}

    def hyperopt_space(self) -> dict:
        """As the zoo's: a choice over the groups, each with its nested knobs (for random search)."""
        from hyperopt import hp

        options = [{"group": name, **knob_hyperopt(knobs, f"toy.{name}")} for name, knobs in self.groups.items()]
        return {"group": hp.choice("toy.group", options)}


ONE_GROUP = {"a": (FloatKnob("x", 0.5, 0.0, 1.0),)}  # d = 1 + 3 KD knobs: failure tolerance max(4, 4) = 4


def toy_loss(params: dict) -> float:
    """Family a is better; inside it the optimum is x = 0.7, n = 48, kd_alpha = 0.3 (smooth and unimodal)."""
    arch = params["arch"]
    if arch["group"] == "a":
        acc = 0.9 - (arch["x"] - 0.7) ** 2 - ((arch.get("n", 48) - 48) / 56) ** 2
    else:
        acc = 0.7 - 0.1 * (arch["c"] != "q") - math.log10(arch["s"] / 0.3) ** 2 / 4
    return -(acc - (params["kd_alpha"] - 0.3) ** 2)


def _strategy(seed: int = 0, groups: dict | None = None, **kw) -> TrustRegionStrategy:
    return TrustRegionStrategy(SearchConfig(strategy="trade", seed=seed), ToySpace(groups), **kw)


def _record(proposal: int, params: dict, misc: dict, loss: float | None, status: str = "ok", **kw) -> TrialRecord:
    return TrialRecord(proposal=proposal, fidelity=1, status=status, params=params, seeds=[proposal], misc=misc,
                       loss=loss, **kw)


def _run(strategy, n: int, loss=toy_loss, start: int = 0) -> list[TrialRecord]:
    """Ask and tell `n` proposals, each told its toy loss."""
    records = []
    for proposal in range(start, start + n):
        params, misc = strategy.ask(proposal)
        records.append(_record(proposal, params, misc, loss(params)))
        strategy.tell(records[-1:])
    return records


def _thompson(x: list[float], loss: float | None, status: str = "ok", region: str = "a") -> TrialRecord:
    return _record(0, {}, {"region": region, "x": x, "how": "thompson"}, loss, status)


# --- the [0, 1] mapping ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("knob", [
    IntKnob("n", 16, 8, 64, step=8), IntKnob("k", 2, 1, 3), ChoiceKnob("c", "p", ("p", "q", "r")),
    ChoiceKnob("f", 0.5, (0.25, 0.5, 1.0)),
])
def test_a_discrete_knob_owns_equal_bins_and_round_trips_through_its_centre(knob):
    values = list(range(knob.low, knob.high + 1, knob.step)) if isinstance(knob, IntKnob) else list(knob.choices)
    assert [from_unit(knob, to_unit(knob, v)) for v in values] == values
    grid = [from_unit(knob, u) for u in np.linspace(0.0, 1.0, 600 * len(values) + 1)]
    counts = [grid.count(v) for v in values]
    assert max(counts) - min(counts) <= 1  # equal-width bins (u = 1 belongs to the last one)
    assert from_unit(knob, 0.0) == values[0] and from_unit(knob, 1.0) == values[-1]
    assert from_unit(knob, -0.5) == values[0] and from_unit(knob, 7.0) == values[-1]


@pytest.mark.parametrize("knob", [FloatKnob("p", 0.5, 0.1, 1.0), FloatKnob("lr", 0.1, 0.01, 0.2, log=True)])
def test_a_float_knob_maps_linearly_or_in_log_space(knob):
    for value in (knob.low, knob.default, knob.high, 0.7 * knob.low + 0.3 * knob.high):
        assert from_unit(knob, to_unit(knob, value)) == pytest.approx(value, rel=1e-12)
    middle = from_unit(knob, 0.5)
    expected = math.sqrt(knob.low * knob.high) if knob.log else (knob.low + knob.high) / 2
    assert middle == pytest.approx(expected)
    assert (from_unit(knob, 0.0), from_unit(knob, 1.0)) == pytest.approx((knob.low, knob.high))


@pytest.mark.parametrize("space", ["zoo", "nago"])
def test_every_group_default_round_trips_and_snapping_is_idempotent(space):
    rng = np.random.default_rng(0)
    for name, knobs in get_space(space).search_groups().items():
        knob_map = KnobMap((*knobs, *kd_knobs()))
        defaults = {k.name: k.default for k in knob_map.knobs}
        assert knob_map.decode(knob_map.encode(defaults)) == pytest.approx(defaults), name
        x = knob_map.snap(rng.random(len(knob_map.knobs)))
        assert np.array_equal(knob_map.snap(x), x)


def test_zoo_and_nago_groups_come_from_their_declarations():
    zoo = get_space("zoo").search_groups()
    assert list(zoo) == ["plain", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet", "shufflenet_v2"]
    assert [k.name for k in zoo["mobilenet_v2"]] == ["width_mult", "depth_mult"]
    [(name, knobs)] = get_space("nago").search_groups().items()
    assert name == "nago" and "param_budget" not in [k.name for k in knobs]  # not searchable
    strategy = TrustRegionStrategy(SearchConfig(strategy="trade", space="zoo"), get_space("zoo"))
    params, misc = strategy.ask(0)
    assert misc == {"region": "plain", "x": misc["x"], "how": "design", "warm": True}
    assert params["arch"] == {"family": "plain", **{k.name: k.default for k in zoo["plain"]}}
    assert {k: params[k] for k in ("kd_alpha", "kd_tau", "lr")} == {"kd_alpha": 0.5, "kd_tau": 4.0, "lr": 0.1}


# --- the initial design and TuRBO's length rules -----------------------------------------------------------------

def test_the_initial_design_is_each_default_then_sobol_points_round_robin():
    strategy = _strategy()
    assert strategy.n_sobol == {"a": 2, "b": 2}  # min(6 // 2 regions, d // 2 = 5 // 2)
    records = _run(strategy, 6)
    assert [(r.misc["region"], r.misc["how"]) for r in records] == [("a", "design"), ("b", "design")] * 3
    assert records[0].params == {"arch": {"group": "a", "x": 0.5, "n": 16}, "kd_alpha": 0.5, "kd_tau": 4.0, "lr": 0.1}
    assert records[1].params["arch"] == {"group": "b", "c": "p", "s": pytest.approx(0.1)}
    assert len({json.dumps(r.misc["x"]) for r in records}) == 6
    assert all(r.length == INITIAL_LENGTH and r.successes == r.failures == 0 for r in strategy.regions)
    params, misc = strategy.ask(6)
    assert misc["how"] == "thompson" and misc["region"] in ("a", "b")
    assert params == strategy.params(strategy._by_name[misc["region"]], misc["x"])


def test_two_warm_starts_of_one_group_open_its_design_in_order_and_decode_exactly():
    from compressor.search.config import WarmStart

    kd = {"kd_alpha": 0.5, "kd_tau": 4.0, "lr": 0.1}
    warm = [WarmStart("a", {"x": 0.3, "n": 16}, kd), WarmStart("a", {"x": 0.7, "n": 24}, dict(kd, lr=0.05))]
    strategy = _strategy(warm_starts=warm)
    region = strategy._by_name["a"]
    assert region.design_size == strategy.n_sobol["a"] + 2
    records = _run(strategy, 7)
    a_points = [r for r in records if r.misc["region"] == "a"]
    assert [r.params["arch"] for r in a_points[:2]] == [{"group": "a", "x": 0.3, "n": 16}, {"group": "a", "x": 0.7, "n": 24}]
    assert a_points[1].params["lr"] == 0.05  # the warm start's own value, not a decoded neighbour
    assert [r.misc["how"] for r in a_points] == ["design"] * region.design_size
    # group b had no warm start: one more Sobol point instead
    assert strategy._by_name["b"].design_size == strategy.n_sobol["b"] + 1
    with pytest.raises(ValueError, match="not a group"):
        _strategy(warm_starts=[WarmStart("c", {}, kd)])


def test_length_doubles_after_three_successes_up_to_its_maximum_and_halves_after_tolerance_failures():
    strategy = _strategy(groups=ONE_GROUP)
    [region] = strategy.regions
    assert (region.dim, region.failure_tolerance, strategy.n_sobol["a"]) == (4, 4, 2)
    improving = iter(-float(n) for n in range(100))
    _run(strategy, 3, loss=lambda p: next(improving))  # the design moves no counter
    lengths = []
    for proposal in range(3, 6):  # each Thompson proposal improves the incumbent
        _run(strategy, 1, loss=lambda p: next(improving), start=proposal)
        lengths.append(region.length)
    for loss in (-10.0, -11.0, -12.0):  # three more successes: the length stays at its maximum
        strategy.tell([_thompson([0.5] * 4, loss)])
        lengths.append(region.length)
    assert lengths == [0.8, 0.8, 1.6, 1.6, 1.6, MAX_LENGTH]
    best = min(region.y)
    # no better than 1e-3 x |incumbent|: a failure, like a worse loss
    _run(strategy, 4, loss=lambda p: best * (1 + 5e-4), start=6)
    assert (region.length, region.successes, region.failures) == (0.8, 0, 0)
    assert region.X[region.incumbent()].tolist() == region.X[int(np.argmin(region.y))].tolist()


def test_a_region_restarts_below_the_minimum_length_and_forgets_its_points():
    strategy = _strategy(groups=ONE_GROUP)
    [region] = strategy.regions
    strategy.tell(_run(_strategy(groups=ONE_GROUP), 3, loss=lambda p: 0.0))
    strategy.tell([_thompson([0.5] * 4, -0.5)])
    lengths = []
    for _ in range(6 * 4 + 3):
        strategy.tell([_thompson([0.5] * 4, -0.1)])
        lengths.append(region.length)
    assert lengths[3::4] == [0.8 / 2**k for k in range(1, 7)] and region.failures == 3 and region.restarts == 0
    strategy.tell([_thompson([0.5] * 4, -0.1)])  # 0.8 / 2^7 < 0.5^7: restart
    assert (region.restarts, region.length, region.told, region.X, region.y) == (1, INITIAL_LENGTH, 0, [], [])
    params, misc = strategy.ask(40)
    # a fresh design of n_sobol + 1 Sobol points, without the default point evaluated before the restart
    assert misc["how"] == "design" and params["arch"]["x"] != 0.5
    assert len(strategy._design(region)) == 3


def test_over_budget_and_failed_outcomes_are_failures_and_retryable_ones_are_ignored():
    strategy = _strategy(groups=ONE_GROUP)
    [region] = strategy.regions
    strategy.tell([_record(0, {}, {"region": "a", "x": [0.1] * 4, "how": "design"}, penalty_loss(2.0), "infeasible")])
    assert region.incumbent() == 0  # the smallest penalty centres the region while nothing is feasible
    strategy.tell([_thompson([0.2] * 4, penalty_loss(0.5), "infeasible")])
    assert (region.failures, region.incumbent()) == (1, 1)  # a lower penalty is still a failure
    strategy.tell([_thompson([0.3] * 4, None, "failed")])
    assert region.failures == 2 and region.y[-1] == penalty_loss(2.0)  # the worst loss seen, at least 1.0
    strategy.tell([_thompson([0.4] * 4, -0.8)])
    assert (region.successes, region.failures, region.incumbent()) == (1, 0, 3)
    told = region.told
    retryable = _thompson([0.9] * 4, None, "failed")
    retryable.retryable = True
    strategy.tell([retryable])
    assert region.told == told


def test_a_repeat_is_a_feasible_point_with_its_networks_loss_and_a_failure_for_the_counters():
    strategy = _strategy(groups=ONE_GROUP)
    [region] = strategy.regions
    strategy.tell([_thompson([0.4] * 4, penalty_loss(0.5), "infeasible")])
    strategy.tell([_thompson([0.5] * 4, -0.6)])
    assert (region.successes, region.failures, region.incumbent()) == (1, 0, 1)
    strategy.tell([_thompson([0.5, 0.5, 0.5, 0.9], -0.6, "repeat")])  # the incumbent's network again
    assert region.feasible[-1] and region.y[-1] == -0.6 and (region.successes, region.failures) == (0, 1)
    strategy.tell([_thompson([0.6] * 4, -0.7, "repeat")])  # the repeat of a better network is a better point
    assert region.incumbent() == 3 and region.successes == 1


def test_thompson_passes_over_candidates_that_are_not_novel_and_restarts_a_region_that_has_none():
    records = _run(_strategy(), 6)
    plain = _strategy()
    plain.tell(records)
    region = plain._by_name["a"]
    centre_x = region.knob_map.decode(region.X[region.incumbent()])["x"]
    asked = []

    def below_centre(proposal, params):  # family a only, and only the half of its box with x at most the centre's
        asked.append(params)
        return params["arch"]["group"] == "a" and params["arch"]["x"] <= centre_x

    filtered, everything = _strategy(novel=below_centre), _strategy(novel=lambda proposal, params: True)
    nothing = _strategy(novel=lambda proposal, params: asked.append(params) or False)
    for strategy in (filtered, everything, nothing):
        strategy.tell(records)
    params, misc = filtered.ask(6)
    assert misc["region"] == "a" and params["arch"]["x"] <= centre_x and EXHAUSTED not in misc
    assert everything.ask(6) == plain.ask(6)  # novel everywhere: the argmin, as without the test
    asked.clear()
    params, misc = nothing.ask(6)
    # none novel: the region's argmin, marked, after asking about NOVELTY_CHECKS distinct archs of that region
    assert (params, {k: v for k, v in misc.items() if k != EXHAUSTED}) == plain.ask(6) and misc[EXHAUSTED]
    assert len(asked) == NOVELTY_CHECKS and len({json.dumps(p["arch"], sort_keys=True) for p in asked}) == len(asked)
    assert {p["arch"]["group"] for p in asked} == {misc["region"]}
    exhausted = nothing._by_name[misc["region"]]
    nothing.tell([_record(6, params, misc, -0.1, "repeat")])
    assert (exhausted.restarts, exhausted.told, exhausted.X) == (1, 0, [])
    assert nothing.ask(7)[1]["how"] == "design"  # its fresh design comes first


SIZED = {  # group s has a size knob and a depth knob only: fit-to-budget can skip it at its smallest
    "a": (FloatKnob("x", 0.5, 0.0, 1.0),),
    "s": (IntKnob("w", 16, 8, 64, step=8, size=True), IntKnob("k", 2, 1, 3, depth=True)),
}


def test_a_family_fit_to_budget_skips_at_its_smallest_is_retired_from_thompson_sampling():
    def run(groups, skipped_group):  # every point of `skipped_group` predicted far over at its smallest
        strategy, records = _strategy(groups=groups), []
        for proposal in range(30):
            params, misc = strategy.ask(proposal)
            arch = params["arch"]
            if arch["group"] == skipped_group:
                misc = {**misc, "fit": {"skipped": True}}
                records.append(_record(proposal, params, misc, penalty_loss(3.0), "infeasible"))
            else:
                loss = -(0.9 - (arch["x"] - 0.7) ** 2) if "x" in arch else -arch["w"] / 100
                records.append(_record(proposal, params, misc, loss))
            strategy.tell(records[-1:])
        return strategy, records

    strategy, records = run(SIZED, "s")
    skipped = strategy._by_name["s"]
    assert skipped.sized and skipped.retired and not strategy._by_name["a"].retired
    assert [r.misc["how"] for r in records if r.misc["region"] == "s"] == ["design"] * skipped.design_size
    # a family with another knob (x) is never retired, however its points went
    unsized, _ = run({"a": SIZED["s"], "s": SIZED["a"]}, "s")
    assert not unsized._by_name["s"].sized and not unsized._by_name["s"].retired


def _fitted_network(params: dict) -> str:
    """The network a toy proposal names once "fitted": family a's x to a tenth (the KD knobs are not the network)."""
    arch = params["arch"]
    return json.dumps({**arch, "x": round(arch["x"], 1)}, sort_keys=True)


@pytest.mark.slow
def test_a_trade_schedule_trains_each_network_once_and_proposes_a_repeat_only_where_a_region_is_exhausted(
        tmp_path, monkeypatch):
    monkeypatch.setitem(SPACES._items, "toy", ToySpace(ONE_GROUP))
    config = SearchConfig(strategy="trade", space="toy", trials=8, family_size=1, fidelities=(1,), seed=2)

    def search(path: Path, novel: bool) -> list[TrialRecord]:
        store = TrialStore(path)
        try:
            schedule = Schedule(config=config, store=store, evaluate=ToyEvaluator(), space={},
                                network=_fitted_network)
            if not novel:
                schedule.strategy.novel = None
            return schedule.run()
        finally:
            store.close()

    records = search(tmp_path / "t.sqlite", novel=True)
    # Without the test, Thompson sampling keeps proposing the networks near its incumbent: repeats, proposal after
    # proposal (this one ran out of its trials x screen_factor proposals).
    assert len(search(tmp_path / "without.sqlite", novel=False)) > 2 * len(records)
    trained = [r for r in records if r.status == "ok"]
    assert len(trained) == 8 and len({_fitted_network(r.params) for r in trained}) == 8
    thompson = [r for r in records if r.misc["how"] == "thompson"]
    assert thompson and all(r.status != "repeat" or r.misc.get(EXHAUSTED) for r in thompson)
    replayed = _strategy(seed=2, groups=ONE_GROUP)
    replayed.tell(records)
    assert replayed.regions[0].restarts >= sum(1 for r in thompson if r.misc.get(EXHAUSTED))


# --- determinism and resume --------------------------------------------------------------------------------------

def test_same_seed_same_proposals_and_a_rebuilt_strategy_proposes_the_same_next_point():
    first = _run(_strategy(seed=3, groups=ONE_GROUP), 5)
    assert [r.misc["how"] for r in first] == ["design"] * 3 + ["thompson"] * 2
    again = _run(_strategy(seed=3, groups=ONE_GROUP), 5)
    assert [(r.params, r.misc) for r in first] == [(r.params, r.misc) for r in again]
    other = _run(_strategy(seed=4, groups=ONE_GROUP), 5)
    assert [r.params for r in other[1:]] != [r.params for r in first[1:]]  # all but the default point
    live = _strategy(seed=3, groups=ONE_GROUP)
    live.tell(first)
    # what --resume does: a new strategy told the stored records (through JSON, as the store keeps them)
    resumed = _strategy(seed=3, groups=ONE_GROUP)
    resumed.tell([TrialRecord(**json.loads(json.dumps(r.to_dict()))) for r in first])
    assert resumed.ask(5) == live.ask(5)
    assert [(r.length, r.successes, r.failures, r.told) for r in resumed.regions] == \
        [(r.length, r.successes, r.failures, r.told) for r in live.regions]


def test_records_of_another_strategy_are_refused():
    strategy = _strategy()
    with pytest.raises(ValueError, match="not made by --strategy trade"):
        strategy.tell([_record(0, {}, {"vals": {"lr": [0.1]}}, -0.5)])


@dataclass
class ToyEvaluator:
    """The toy objective as an evaluator: family a with x > 0.85 is over a latency budget."""

    crash_at: int | None = None
    calls: list[int] = field(default_factory=list)

    def __call__(self, record: TrialRecord, previous: TrialRecord | None) -> None:
        if record.proposal == self.crash_at:
            raise KeyboardInterrupt  # stands for a kill: not an Exception, so not a failed trial
        self.calls.append(record.proposal)
        arch = record.params["arch"]
        if arch["group"] == "a" and arch["x"] > 0.85:
            record.status, record.loss = "infeasible", penalty_loss(arch["x"] / 0.85 - 1)
            return
        record.val_accuracy = -toy_loss(record.params)


def _schedule(path: Path, evaluate: ToyEvaluator, trials: int) -> list[TrialRecord]:
    config = SearchConfig(strategy="trade", space="toy", trials=trials, family_size=1, fidelities=(1,), seed=2)
    store = TrialStore(path)
    try:
        return Schedule(config=config, store=store, evaluate=evaluate, space={}).run()
    finally:
        store.close()


@pytest.mark.slow
def test_the_schedule_resumes_a_trade_search_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setitem(SPACES._items, "toy", ToySpace(ONE_GROUP))
    whole = ToyEvaluator()
    expected = _schedule(tmp_path / "whole.sqlite", whole, trials=5)
    assert [r.misc["how"] for r in expected] == ["design"] * 3 + ["thompson"] * (len(expected) - 3)
    assert len(expected) >= 5

    with pytest.raises(KeyboardInterrupt):
        _schedule(tmp_path / "resumed.sqlite", ToyEvaluator(crash_at=4), trials=5)
    resumed = ToyEvaluator()
    records = _schedule(tmp_path / "resumed.sqlite", resumed, trials=5)
    assert resumed.calls == whole.calls[4:]
    assert [(r.proposal, r.params, r.misc, r.status) for r in records] == \
        [(r.proposal, r.params, r.misc, r.status) for r in expected]


# --- against random search ---------------------------------------------------------------------------------------

def bowl_loss(params: dict) -> float:
    """Family a is clearly the better (0.9 against 0.6); inside each family a smooth bowl: the mean squared
    distance of every knob (KD knobs included), as a fraction of its range or of its list of choices, from 0.7."""
    arch = params["arch"]
    arch = arch["group"] if isinstance(arch["group"], dict) else arch  # hyperopt's nested choice
    knobs = [*ToySpace().groups[arch["group"]], *kd_knobs()]
    values = {**arch, **params}

    def fraction(knob, value) -> float:
        if isinstance(knob, ChoiceKnob):
            return knob.choices.index(value) / (len(knob.choices) - 1)
        return (value - knob.low) / (knob.high - knob.low)

    distance = sum((fraction(k, values[k.name]) - 0.7) ** 2 for k in knobs) / len(knobs)
    return -((0.9 if arch["group"] == "a" else 0.6) - distance)


@pytest.mark.slow
def test_trade_beats_random_search_in_median_over_five_seeds():
    best = {"trade": [], "random": []}
    for seed in range(5):
        records = _run(_strategy(seed=seed), 30, loss=bowl_loss)
        best["trade"].append(min(r.loss for r in records))
        # past the 6 design points, Thompson sampling across families concentrates on the better one
        assert sum(r.misc["region"] == "a" for r in records[6:]) > 24 // 2
        random = HyperoptStrategy(SearchConfig(strategy="random", seed=seed),
                                  {"arch": ToySpace().hyperopt_space(), **kd_hyperopt_space()})
        best["random"].append(min(r.loss for r in _run(random, 30, loss=bowl_loss)))
    # random search spreads 30 points over two families and five axes; trade refines the better family's
    # incumbent in a box that shrinks with its failures
    assert statistics.median(best["trade"]) < statistics.median(best["random"])


@pytest.mark.slow
def test_trade_search_end_to_end_from_the_cli(tiny_teacher, tight_latency_ms, quick_target, tmp_path, capsys):
    from compressor import cli

    run, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["compress", "--teacher", tiny_teacher, "--data", "digits", "--image-size", "16", "--channels", "1",
            "--strategy", "trade", "--space", "zoo", "--trials", "4", "--family-size", "1", "--fidelities", "1",
            "--final-epochs", "1", "--finalists", "1", "--tuning-trials", "1", "--profile-seconds", "0.1",
            "--formats", "onnx", "--target", quick_target, "--latency-ms", str(tight_latency_ms), "--out", str(run),
            "--cache-dir", str(cache), "--json"]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["search"]["strategy"] == "trade" and report["search"]["space"] == "zoo"
    # `--trials` families trained; proposals screened over the budget do not count towards it
    assert report["search"]["trained"] == 4 and 0.0 <= report["student"]["test_accuracy"] <= 1.0
    store = TrialStore(run / "trials.sqlite")
    records = store.records()
    store.close()
    # the initial design: each family's default point, in declaration order
    assert [(r.misc["region"], r.misc["how"]) for r in records[:4]] == [
        ("plain", "design"), ("mobilenet_v2", "design"), ("mobilenet_v3_small", "design"),
        ("mobilenet_v3_large", "design")]
    assert [r.params["arch"]["family"] for r in records] == [r.misc["region"] for r in records]
    assert cli.main([*argv, "--resume"]) == 0  # finished: nothing is evaluated again
    store = TrialStore(run / "trials.sqlite")
    assert len(store.records()) == len(records)
    store.close()
