"""The search's schedule, hyperopt bridge and analysis with a fake evaluator: milliseconds, no torch."""

from __future__ import annotations

import math
import time
import subprocess
import sys
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hyperopt import STATUS_FAIL, STATUS_OK, hp

from compressor.search.analysis import best_record, failure_summary, pareto_front
from compressor.search.config import SearchConfig
from compressor.search.schedule import Schedule, TrialTimeout
from compressor.search.store import TrialRecord, TrialStore
from compressor.search.strategies import HyperoptStrategy, is_warm_start, penalty_loss
from profilers import RemoteError

ROOT = Path(__file__).resolve().parents[1]

# A conditional choice, so that some proposals leave a hyperopt label without a value.
SPACE = {
    "x": hp.uniform("x", 0.0, 1.0),
    "block": hp.choice("block", [{"kind": "plain"}, {"kind": "wide", "w": hp.uniform("w", 0.0, 1.0)}]),
}
BUDGET_MS = 0.5


class Crash(BaseException):
    """Stands for a kill: not an `Exception`, so the schedule does not record it as a failed trial."""


@dataclass
class FakeEvaluator:
    """Accuracy and latency are functions of the point: latency = x ms; the best x moves with the fidelity.

    `raises[(proposal, fidelity)]` are raised, one per call, before that evaluation succeeds.
    """

    budget_ms: float = math.inf
    raises: dict[tuple[int, int], list[BaseException]] = field(default_factory=dict)
    calls: list[tuple[int, int]] = field(default_factory=list)

    def __call__(self, record: TrialRecord, previous: TrialRecord | None) -> None:
        key = (record.proposal, record.fidelity)
        self.calls.append(key)
        if self.raises.get(key):
            raise self.raises[key].pop(0)
        x = record.params["x"]
        record.latency_ms = x
        if x > self.budget_ms:
            record.status = "infeasible"
            record.reason = f"latency p50 {x:.3f} ms > budget {self.budget_ms} ms"
            record.loss = penalty_loss(x / self.budget_ms - 1)
            return
        record.val_accuracy = 1.0 - abs(x - (0.3 if record.fidelity == 1 else 0.6))


def _search(path: Path, evaluate: FakeEvaluator, network=None, space=SPACE, **knobs) -> tuple[Schedule, list[TrialRecord]]:
    """A schedule over the store at `path`, run to its end (or to a `Crash`); the store is closed after."""
    config = SearchConfig(**{"family_size": 1, "fidelities": (1,), **knobs}).validate()
    store = TrialStore(path)
    try:
        schedule = Schedule(config=config, store=store, evaluate=evaluate, space=space, warm_starts=(),
                            network=network)
        return schedule, schedule.run()
    finally:
        store.close()


def _rec(proposal: int, fidelity: int, status: str, acc: float | None = None, latency: float = 1.0,
         reason: str = "") -> TrialRecord:
    return TrialRecord(proposal=proposal, fidelity=fidelity, status=status, params={}, seeds=[proposal],
                       val_accuracy=acc, latency_ms=latency, reason=reason, n_params=10, macs=100)


def test_successive_halving_promotes_the_best_third_at_each_fidelity(tmp_path):
    fake = FakeEvaluator()
    _, records = _search(tmp_path / "t.sqlite", fake, trials=9, fidelities=(1, 3, 9), eta=3, strategy="random")
    at = {f: {r.proposal: r for r in records if r.fidelity == f} for f in (1, 3, 9)}
    assert len(at[1]) == 9 and all(r.status == "ok" for r in records)
    best_at_1 = sorted(at[1].values(), key=lambda r: -r.val_accuracy)[:3]
    assert set(at[3]) == {r.proposal for r in best_at_1}
    assert set(at[9]) == {max(at[3].values(), key=lambda r: r.val_accuracy).proposal}
    # a promoted family keeps its point and is evaluated with its previous fidelity's record
    assert all(at[3][p].params == at[1][p].params for p in at[3])
    assert fake.calls[:9] == [(p, 1) for p in range(9)]


@dataclass
class SoftEvaluator(FakeEvaluator):
    """Accuracy as FakeEvaluator's; the cross-entropy ranks the families the other way round."""

    def __call__(self, record: TrialRecord, previous: TrialRecord | None) -> None:
        super().__call__(record, previous)
        if record.status == "ok":
            record.val_loss = record.val_accuracy


def test_promotions_the_strategys_loss_and_the_best_family_follow_the_score(tmp_path):
    schedule, records = _search(tmp_path / "t.sqlite", SoftEvaluator(), trials=9, fidelities=(1, 3), eta=3,
                                strategy="random")
    at_1 = [r for r in records if r.fidelity == 1]
    rounds = [at_1[start:start + 3] for start in (0, 3, 6)]  # rounds of eta families, the best one promoted
    by_score = [min(members, key=lambda r: r.val_loss).proposal for members in rounds]
    assert by_score != [max(members, key=lambda r: r.val_accuracy).proposal for members in rounds]
    assert sorted(r.proposal for r in records if r.fidelity == 3) == by_score
    at_3 = [r for r in records if r.fidelity == 3]
    # hyperopt ranks a family by the highest fidelity it reached, then its score there (TPE's good set)
    score_3 = {r.proposal: r.score for r in at_3}
    assert [t["result"]["loss"] for t in schedule.strategy.trials.trials] == [
        -(1 + score_3[r.proposal]) if r.proposal in score_3 else -r.score for r in at_1]
    assert best_record(records) == min(at_3, key=lambda r: r.val_loss)


def test_warm_starts_go_on_to_every_fidelity_whatever_their_score(tmp_path):
    # x = 0.95 is the worst point after 1 epoch (best x: 0.3) and never in a round's top third.
    config = SearchConfig(trials=9, family_size=1, fidelities=(1, 3, 9), eta=3, strategy="tpe").validate()
    store = TrialStore(tmp_path / "t.sqlite")
    strategy = HyperoptStrategy(config, SPACE, [{"x": 0.95, "block": 0}])
    records = Schedule(config=config, store=store, evaluate=FakeEvaluator(), space=SPACE, strategy=strategy).run()
    at = {f: {r.proposal: r for r in records if r.fidelity == f} for f in (1, 3, 9)}
    assert at[1][0].params["x"] == 0.95 and is_warm_start(at[1][0])
    assert min(at[1].values(), key=lambda r: r.score).proposal == 0
    assert 0 in at[3] and 0 in at[9]
    # the others go on as before: the round's (all 9) best third, then its best ninth
    assert len(at[3]) == 3 + 1 and len(at[9]) == 1 + 1
    assert not any(is_warm_start(r) for r in records if r.proposal != 0)


def test_screen_factor_caps_proposals_when_everything_is_over_budget(tmp_path):
    fake = FakeEvaluator(budget_ms=1e-6)
    schedule, records = _search(tmp_path / "t.sqlite", fake, trials=3, screen_factor=2, fidelities=(1, 2), eta=2)
    assert fake.calls == [(p, 1) for p in range(6)]
    assert [r.status for r in records] == ["infeasible"] * 6
    # hyperopt hears each over-budget family as a graded loss above any feasible one, with its figures
    results = schedule.strategy.trials.results
    assert [r["status"] for r in results] == [STATUS_OK] * 6
    assert all(r["loss"] > 1.0 and r["infeasible"] and r["latency_ms"] is not None for r in results)


def test_resume_after_a_crash_replays_the_same_points_and_skips_finished_work(tmp_path):
    knobs = dict(trials=10, fidelities=(1, 3), eta=3, strategy="tpe", seed=5)
    whole = FakeEvaluator(budget_ms=0.8)
    _, expected = _search(tmp_path / "whole.sqlite", whole, **knobs)

    crashing = FakeEvaluator(budget_ms=0.8, raises={whole.calls[8]: [Crash()]})
    with pytest.raises(Crash):
        _search(tmp_path / "resumed.sqlite", crashing, **knobs)
    resumed = FakeEvaluator(budget_ms=0.8)
    _, records = _search(tmp_path / "resumed.sqlite", resumed, **knobs)

    assert crashing.calls[:-1] + resumed.calls == whole.calls  # only the evaluation in flight is redone
    assert [(r.proposal, r.fidelity, r.params, r.status) for r in records] == \
        [(r.proposal, r.fidelity, r.params, r.status) for r in expected]
    # past TPE's 4 random start-up proposals, the points asked after the resume depend on the restored history
    assert sum(f == 1 for _, f in crashing.calls[:-1]) > 4 and any(r.status == "infeasible" for r in expected)


def test_transient_failures_are_left_out_of_hyperopt_and_run_again_on_resume(tmp_path):
    fake = FakeEvaluator(raises={
        (1, 1): [RemoteError("device unreachable: connection refused; gave up after 3 tries")],
        (2, 1): [RuntimeError("injected build failure\nwith a second line")],
        (3, 1): [TrialTimeout("trial timeout: over 1 s")],
    })
    path = tmp_path / "t.sqlite"
    first, records = _search(path, fake, trials=5)
    failed = {r.proposal: r for r in records if r.status == "failed"}
    assert {p: (r.retryable, r.reason) for p, r in failed.items()} == {
        1: (True, "RemoteError: device unreachable: connection refused; gave up after 3 tries"),
        2: (False, "RuntimeError: injected build failure"),
        3: (True, "trial timeout: over 1 s"),
    }
    statuses = {d["tid"]: d["result"]["status"] for d in first.strategy.trials.trials}
    assert statuses == {0: STATUS_OK, 2: STATUS_FAIL, 4: STATUS_OK}
    assert fake.calls == [(p, 1) for p in range(5)]

    fake.calls.clear()
    again, records = _search(path, fake, trials=5)
    assert fake.calls == [(1, 1), (3, 1)]  # the failure with a lasting cause is not retried
    by_proposal = {r.proposal: r for r in records}
    assert [by_proposal[p].status for p in range(5)] == ["ok", "ok", "failed", "ok", "ok"]
    assert by_proposal[1].params == failed[1].params and by_proposal[3].misc == failed[3].misc
    assert sorted(d["tid"] for d in again.strategy.trials.trials) == [0, 1, 2, 3, 4]

    fake.calls.clear()
    _search(path, fake, trials=5)
    assert fake.calls == []
    store = TrialStore(path)
    assert len(store.records()) == 7  # rows are appended; the retried ones supersede the transient failures
    store.close()


def test_best_record_pareto_front_and_failure_summary():
    trained = [
        _rec(0, 1, "ok", 0.80, latency=0.2), _rec(1, 1, "ok", 0.90, latency=0.4), _rec(2, 1, "ok", 0.85, latency=0.1),
        _rec(1, 3, "ok", 0.93, latency=0.4), _rec(2, 3, "ok", 0.95, latency=0.1),
    ]
    problems = [
        _rec(3, 1, "infeasible", reason="latency p50 0.31 ms > budget 0.25 ms; size 2 MiB > budget 1 MiB"),
        _rec(4, 1, "infeasible", reason="latency p50 0.42 ms > budget 0.25 ms"),
        _rec(5, 1, "failed", reason="RemoteError: device unreachable"),
    ]
    best = best_record(trained + problems)
    assert (best.proposal, best.fidelity) == (2, 3)
    assert best_record(problems) is None
    # one front per fidelity: after 1 epoch proposal 1 is more accurate than 2, after 3 it is not
    assert [(p["proposal"], p["fidelity"]) for p in pareto_front(trained + problems)] == [(2, 1), (1, 1), (2, 3)]
    trained[4].val_accuracy = 0.70
    assert [(p["proposal"], p["fidelity"]) for p in pareto_front(trained)] == [(2, 1), (1, 1), (2, 3), (1, 3)]
    assert failure_summary(trained + problems) == (
        "2 over budget (latency p50 # ms > budget # ms), 1 failed (RemoteError: device unreachable)"
    )
    assert failure_summary([_rec(0, 1, "failed")]) == "1 failed ()"


def test_the_schedule_runs_without_torch():
    code = (
        "import sys, tempfile, pathlib; sys.path.insert(0, %r)\n"
        "import compressor.search.loop\n"
        "from tests.test_search_schedule import FakeEvaluator, _search\n"
        "_search(pathlib.Path(tempfile.mkdtemp()) / 't.sqlite', FakeEvaluator(), trials=3, fidelities=(1, 2), eta=2)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n" % str(ROOT)
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@dataclass
class SlowEvaluator(FakeEvaluator):
    """The fake, taking `seconds` per evaluation: a search whose time runs out long before its trials."""

    seconds: float = 0.05

    def __call__(self, record: TrialRecord, previous: TrialRecord | None) -> None:
        time.sleep(self.seconds)
        super().__call__(record, previous)


def test_search_minutes_stops_new_proposals_promotes_the_round_and_adds_up_over_resumes(tmp_path):
    path = tmp_path / "t.sqlite"
    budget_minutes = 0.2 / 60  # about four 50 ms evaluations, whatever this machine's speed: each sleeps
    slow = SlowEvaluator()
    _, records = _search(path, slow, trials=30, fidelities=(1, 3), eta=3, strategy="random",
                         search_minutes=budget_minutes)
    first = [r for r in records if r.fidelity == 1]
    assert 1 <= len(first) < 30
    assert [r for r in records if r.fidelity == 3], "the round in progress is still promoted"
    store = TrialStore(path)
    spent = store.get_meta("search_seconds")
    store.close()
    assert spent >= 60 * budget_minutes
    # Resumed with the same time budget: the time is spent, nothing new is asked.
    again = SlowEvaluator()
    _, resumed = _search(path, again, trials=30, fidelities=(1, 3), eta=3, strategy="random",
                         search_minutes=budget_minutes)
    assert again.calls == [] and len(resumed) == len(records)
    # More minutes: the search goes on from where it stopped.
    more = SlowEvaluator()
    _, grown = _search(path, more, trials=30, fidelities=(1, 3), eta=3, strategy="random",
                       search_minutes=budget_minutes * 3)
    assert len([r for r in grown if r.fidelity == 1]) > len(first)


def test_a_promotion_that_failed_or_is_retried_leaves_the_familys_rank_to_its_last_trained_fidelity():
    config = SearchConfig(trials=4, family_size=1, fidelities=(1, 3, 9), eta=3, strategy="tpe").validate()
    strategy = HyperoptStrategy(config, SPACE)
    told = []
    for proposal in range(3):
        params, misc = strategy.ask(proposal)
        told.append(TrialRecord(proposal=proposal, fidelity=1, status="ok", params=params, seeds=[1], misc=misc,
                                val_accuracy=0.5, loss=-0.5))
    strategy.tell(told)
    promoted = [dataclasses.replace(told[0], fidelity=3, val_accuracy=0.1),
                dataclasses.replace(told[0], fidelity=9, status="failed", val_accuracy=None),
                dataclasses.replace(told[1], fidelity=3, status="failed", val_accuracy=None),
                dataclasses.replace(told[2], fidelity=3, val_accuracy=0.9, retryable=True)]
    strategy.tell_promoted(promoted)
    assert [t["result"]["loss"] for t in strategy.trials.trials] == [-1.1, -0.5, -0.5]


# x names the network (in tenths, as fit-to-budget snaps sizes); lr is a distillation knob, as in a real search.
KD_SPACE = {"x": hp.uniform("x", 0.0, 1.0), "lr": hp.loguniform("lr", math.log(0.01), math.log(0.3))}


def _tenths(params) -> str:
    return f"{params['x']:.1f}"


def test_a_proposal_fitted_to_a_network_trained_already_is_a_repeat_not_a_training(tmp_path):
    fake = FakeEvaluator()
    schedule, records = _search(tmp_path / "t.sqlite", fake, network=_tenths, space=KD_SPACE, trials=8,
                                fidelities=(1, 3), eta=2, strategy="tpe", seed=3)
    first = {r.proposal: r for r in records if r.fidelity == 1}
    repeats = [r for r in first.values() if r.status == "repeat"]
    trained = [r for r in first.values() if r.status == "ok"]
    assert repeats, "TPE asked for no network twice; the test needs a seed where it does"
    # Each network is trained once at the smallest fidelity, and only trainings count towards `trials`.
    assert len({_tenths(r.params) for r in trained}) == len(trained) == 8
    assert [c for c in fake.calls if c[1] == 1] == [(r.proposal, 1) for r in sorted(trained, key=lambda r: r.id)]
    for rep in repeats:
        earlier = first[rep.misc["repeat_of"]]
        assert earlier.status == "ok" and earlier.id < rep.id and _tenths(earlier.params) == _tenths(rep.params)
        assert (rep.val_accuracy, rep.latency_ms, rep.loss) == (earlier.val_accuracy, earlier.latency_ms, earlier.loss)
        assert rep.train_s == 0.0 and rep.profiles == [] and (rep.proposal, 3) not in fake.calls
    # TPE is told the point it asked for, ranked with its network (promotions included), its KD knob unobserved.
    told = {d["tid"]: d for d in schedule.strategy.trials.trials}
    for rep in repeats:
        doc, network = told[rep.proposal], told[rep.misc["repeat_of"]]
        assert doc["result"]["loss"] == network["result"]["loss"] and doc["misc"]["vals"]["x"] == [rep.params["x"]]
        assert doc["misc"]["idxs"]["lr"] == [] and network["misc"]["idxs"]["lr"] == [network["tid"]]
    # Resumed, the store replays as it is: nothing is evaluated again, the history is the same.
    fake.calls.clear()
    again, replayed = _search(tmp_path / "t.sqlite", fake, network=_tenths, space=KD_SPACE, trials=8,
                              fidelities=(1, 3), eta=2, strategy="tpe", seed=3)
    assert fake.calls == [] and [(r.proposal, r.fidelity, r.status) for r in replayed] == \
        [(r.proposal, r.fidelity, r.status) for r in records]
    assert {d["tid"]: d["result"]["loss"] for d in again.strategy.trials.trials} == \
        {tid: d["result"]["loss"] for tid, d in told.items()}


def test_a_repeat_is_told_its_networks_loss_and_follows_the_networks_promotions():
    config = SearchConfig(family_size=1, fidelities=(1, 3), strategy="tpe").validate()
    strategy = HyperoptStrategy(config, KD_SPACE)

    def record(proposal, fidelity, status, val_loss, **misc):
        params, _ = strategy.ask(proposal)
        return TrialRecord(proposal=proposal, fidelity=fidelity, status=status, params=params, seeds=[proposal],
                           val_accuracy=0.5, val_loss=val_loss, loss=-math.exp(-val_loss),
                           misc={"vals": {"x": [params["x"]], "lr": [params["lr"]]}, **misc})

    network = record(0, 1, "ok", 1.0)
    strategy.tell([network])
    strategy.tell_promoted([record(0, 3, "ok", 0.5)])
    promoted = -(1 + math.exp(-0.5))
    repeat = record(1, 1, "repeat", 1.0, repeat_of=0)
    strategy.tell([repeat])  # told after the promotion: level with the network at once
    later = record(2, 1, "repeat", 1.0, repeat_of=0)
    strategy.tell([later])
    strategy.tell_promoted([record(0, 3, "ok", 0.2)])  # a better evaluation of the network moves its repeats too
    losses = {d["tid"]: d["result"]["loss"] for d in strategy.trials.trials}
    assert losses[1] == losses[2] == losses[0] == -(1 + math.exp(-0.2)) < promoted
