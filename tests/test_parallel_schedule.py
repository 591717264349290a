"""The parallel schedule without Ray: the ASHA promotion rule, the constant-liar batch ask, the driver
loop over a thread pool of fake evaluators (milliseconds, no torch), and fit to budget in the driver
(nago members built with torch, "measured" by a known latency law)."""

from __future__ import annotations

import copy
import queue
import sys
import threading
import time

import numpy as np
import pytest

from compressor.search.config import SearchConfig
from compressor.search.parallel import Outcome, ParallelSchedule, asha_promotion, ask_batch, liar_loss
from compressor.search.schedule import TRANSIENT
from compressor.search.store import TrialRecord, TrialStore
from compressor.search.strategies import make_strategy
from profilers import RemoteError
from tests.test_search_schedule import KD_SPACE, SPACE, FakeEvaluator, _tenths


def _rec(proposal: int, fidelity: int, status: str = "ok", acc: float | None = None,
         retryable: bool = False) -> TrialRecord:
    return TrialRecord(proposal=proposal, fidelity=fidelity, status=status, params={}, seeds=[],
                       val_accuracy=acc, retryable=retryable, loss=None if acc is None else -acc)


def _latest(*records: TrialRecord) -> dict:
    return {(r.proposal, r.fidelity): r for r in records}


CONFIG = SearchConfig(fidelities=(1, 3, 9), eta=3)


def test_asha_promotes_a_result_once_it_is_in_the_top_third_of_its_rung():
    # two results at rung 0: 2 // 3 = 0 may go up, whatever their accuracy
    assert asha_promotion(_latest(_rec(0, 1, acc=0.9), _rec(1, 1, acc=0.5)), set(), CONFIG) is None
    # a third result makes one slot: the best so far goes up
    latest = _latest(_rec(0, 1, acc=0.9), _rec(1, 1, acc=0.5), _rec(2, 1, acc=0.7))
    assert asha_promotion(latest, set(), CONFIG).proposal == 0
    # not twice: it is in flight at the next fidelity, then done there
    assert asha_promotion(latest, {(0, 3)}, CONFIG) is None
    latest[(0, 3)] = _rec(0, 3, acc=0.95)
    assert asha_promotion(latest, set(), CONFIG) is None
    # infeasible families are not results; failed ones are (and are never promoted); retryable ones are not
    latest.update(_latest(_rec(3, 1, "infeasible"), _rec(4, 1, "failed"), _rec(5, 1, "failed", retryable=True),
                          _rec(6, 1, acc=0.8)))
    # 5 results (0, 1, 2, 4, 6): one slot, taken by 0
    assert asha_promotion(latest, set(), CONFIG) is None
    latest[(7, 1)] = _rec(7, 1, acc=0.6)
    assert asha_promotion(latest, set(), CONFIG).proposal == 6  # 6 results: two slots, 0 and 6


def test_asha_looks_at_the_highest_rung_first_and_a_retryable_evaluation_above_is_redone():
    latest = _latest(*[_rec(p, 1, acc=0.1 * p) for p in range(9)], _rec(8, 3, acc=0.9), _rec(7, 3, acc=0.8),
                     _rec(6, 3, acc=0.85))
    assert asha_promotion(latest, set(), CONFIG).fidelity == 3  # rung 1 has 3 results: its best goes to 9
    latest[(8, 9)] = _rec(8, 9, "failed", retryable=True)
    assert asha_promotion(latest, set(), CONFIG).proposal == 8


def test_draining_promotes_the_best_of_every_rung_at_least_once():
    latest = _latest(_rec(0, 1, acc=0.4), _rec(1, 1, acc=0.6))
    assert asha_promotion(latest, set(), CONFIG) is None
    assert asha_promotion(latest, set(), CONFIG, draining=True).proposal == 1


def test_liar_is_the_worst_feasible_loss_so_far():
    records = [_rec(0, 1, acc=0.9), _rec(1, 1, acc=0.4), _rec(2, 1, "infeasible"), _rec(3, 3, acc=0.1)]
    records[2].loss = 2.0
    assert liar_loss(records, 1) == pytest.approx(-0.4)
    assert liar_loss([], 1) == 0.0


@pytest.mark.parametrize("strategy,space", [("tpe", "nago"), ("trade", "zoo")])
def test_batch_ask_with_pending_lies_proposes_different_points_and_leaves_the_strategy_untold(strategy, space):
    from compressor.search.config import kd_hyperopt_space
    from compressor.spaces import get_space

    config = SearchConfig(strategy=strategy, space=space, seed=3)
    hyper = {"arch": get_space(space).hyperopt_space(), **kd_hyperopt_space()}
    lock = threading.Lock()  # stands for the schedule `novel` reads (its store cannot be copied either)

    def novel(proposal, params):
        with lock:
            return True

    real = make_strategy(config, hyper, (), novel=novel)
    first = real.ask(0)
    pending = TrialRecord(proposal=0, fidelity=1, status="ok", params=first[0], seeds=[], misc=first[1])
    batch = ask_batch(real, [1, 2, 3], [pending], liar=-0.5)
    points = [first[0], *(params for params, _ in batch)]
    assert len({repr(p) for p in points}) == 4
    if strategy == "trade":
        # the liars moved a copy through the initial design; the real strategy was told nothing
        assert [misc["how"] for _, misc in batch] == ["design"] * 3
        assert all(region.told == 0 for region in real.regions)
        assert copy.deepcopy(real).novel is novel  # the copy that hears the lies asks the same schedule
    else:
        assert len(real.trials.trials) == 0
    # with nothing pending, the real strategy is asked as the in-process schedule asks it
    assert ask_batch(real, [0], [], liar=0.0) == [real.ask(0)]


class ThreadPool:
    """A `Pool` of threads around a fake evaluator; `delay(record)` seconds before each evaluation."""

    def __init__(self, evaluate, slots: int, delay=lambda rec: 0.0) -> None:
        self.evaluate, self.slots, self.delay = evaluate, slots, delay
        self.results: queue.Queue = queue.Queue()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def submit(self, record, previous) -> None:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        threading.Thread(target=self._run, args=(record, previous)).start()

    def _run(self, record, previous) -> None:
        time.sleep(self.delay(record))
        try:
            samples = self.evaluate(record, previous)  # what a measuring evaluator returns: its members' samples
            outcome = Outcome(record, samples=samples or [])
        except Exception as exc:  # noqa: BLE001 - reported to the driver like a pool does
            outcome = Outcome(record, exc, isinstance(exc, TRANSIENT))
        with self._lock:
            self.running -= 1
        self.results.put(outcome)

    def next_result(self) -> Outcome:
        return self.results.get(timeout=10)


def _run(path, pool, progress=None, hyperopt_space=SPACE, budget=None, network=None, **knobs) -> list[TrialRecord]:
    config = SearchConfig(**{"family_size": 1, "strategy": "random", **knobs}).validate()
    store = TrialStore(path)
    try:
        return ParallelSchedule(config=config, store=store, pool=pool, space=hyperopt_space, progress=progress,
                                warm_starts=(), budget=budget, network=network).run()
    finally:
        store.close()


def test_parallel_schedule_trains_the_trials_asked_and_promotes_as_results_arrive(tmp_path):
    fake = FakeEvaluator(budget_ms=0.7)
    pool = ThreadPool(fake, slots=3, delay=lambda rec: 0.02 * (1 + rec.proposal % 3))
    ended, promotions = [], []

    def progress(event, info):
        if event == "end":
            ended.append(info["record"])
        elif info["fidelity"] == 3:
            # what the driver knew when it promoted: the rung-1 results committed so far
            results = [r for r in ended if r.fidelity == 1 and r.status != "infeasible"]
            ranked = [r.proposal for r in sorted(results, key=lambda r: -r.val_accuracy)]
            promotions.append((info["proposal"], ranked, len(results) // 3))

    records = _run(tmp_path / "t.sqlite", pool, progress, trials=9, fidelities=(1, 3), eta=3)
    first = [r for r in records if r.fidelity == 1]
    assert sum(r.status != "infeasible" for r in first) == 9
    assert pool.most_running == 3
    assert len(promotions) == sum(r.fidelity == 3 for r in records) >= 3
    # every promotion but the draining one took a family in the top third of its rung at that moment
    assert sum(proposal in ranked[:keep] for proposal, ranked, keep in promotions) >= len(promotions) - 1
    assert all(proposal in ranked[:max(1, keep)] for proposal, ranked, keep in promotions)
    # proposals are distinct points: the pending ones were told a lie
    assert len({r.params["x"] for r in first}) == len(first)


def test_the_driver_commits_a_repeat_of_a_committed_network_and_never_submits_it(tmp_path):
    fake = FakeEvaluator()
    pool = ThreadPool(fake, slots=2, delay=lambda rec: 0.01)
    ended = []
    records = _run(tmp_path / "t.sqlite", pool, lambda event, info: ended.append(info) if event == "end" else None,
                   hyperopt_space=KD_SPACE, network=_tenths, trials=8, fidelities=(1,))
    repeats = [r for r in records if r.status == "repeat"]
    trained = [r for r in records if r.status == "ok"]
    assert repeats and len(trained) == 8 and sorted(fake.calls) == sorted((r.proposal, 1) for r in trained)
    committed_before = {}
    for info in ended:
        rec = info["record"]
        if rec.status == "repeat":
            earlier = committed_before[rec.misc["repeat_of"]]
            assert _tenths(earlier.params) == _tenths(rec.params) and rec.val_accuracy == earlier.val_accuracy
        committed_before[rec.proposal] = rec


def test_parallel_schedule_redoes_a_transient_failure_on_resume_at_its_point(tmp_path):
    fake = FakeEvaluator(raises={(1, 1): [RemoteError("device unreachable")]})
    records = _run(tmp_path / "t.sqlite", ThreadPool(fake, slots=2), trials=4, fidelities=(1,))
    [failed] = [r for r in records if r.status == "failed"]
    assert failed.proposal == 1 and failed.retryable and "device unreachable" in failed.reason
    again = _run(tmp_path / "t.sqlite", ThreadPool(fake, slots=2), trials=4, fidelities=(1,))
    redone = [r for r in again if r.proposal == 1]
    assert [r.status for r in redone] == ["ok"] and redone[0].params == failed.params
    assert fake.calls.count((1, 1)) == 2 and len(again) == 4


def test_workers_without_ray_installed_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    from compressor.cli.app import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code = main(["compress", "--teacher", "torchvision:resnet18", "--workers", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "--workers 2" in err and "pip install 'compressor[ray]'" in err
    assert not (tmp_path / "run").exists()


def test_parallel_schedule_stops_asking_when_search_minutes_are_spent(tmp_path):
    fake = FakeEvaluator()
    pool = ThreadPool(fake, slots=2, delay=lambda rec: 0.05)
    records = _run(tmp_path / "t.sqlite", pool, trials=40, fidelities=(1, 3), eta=3, search_minutes=0.2 / 60)
    first = [r for r in records if r.fidelity == 1]
    assert 1 <= len(first) < 40
    assert [r for r in records if r.fidelity == 3], "the best family is still promoted"


SHAPE = (1, 8, 8)


def _law(features) -> float:
    """The test's latency (ms) of a network: additive in its costs, so the latency model can learn it exactly."""
    return 0.01 + 1e-6 * features.macs + 1e-6 * features.activations + 1e-3 * features.ops


class MeasuredByLaw:
    """A pool's evaluator that screens each member by `_law` of its features and returns the samples, as a
    Ray task returns them; feasible families score 0.5 (no training)."""

    def __init__(self, space, budget_ms: float) -> None:
        self.space, self.budget_ms = space, budget_ms
        self.screened: list[dict] = []  # the arch of each family screened
        self.returned: list = []  # every sample returned

    def __call__(self, record: TrialRecord, previous: TrialRecord | None) -> list:
        from compressor.search.fit import sample_family
        from compressor.search.latency_model import network_features

        self.screened.append(record.params["arch"])
        samples = []
        for spec in sample_family(self.space, record):
            features = network_features(self.space.build(spec, SHAPE, 10), SHAPE)
            samples.append((features, _law(features)))
        record.latency_ms = max(ms for _, ms in samples)
        if record.latency_ms > self.budget_ms:
            record.status, record.loss = "infeasible", 1.5
        else:
            record.val_accuracy = 0.5
        self.returned += samples
        return samples


def _driver_fit(tmp_path, budget_ms: float):
    """nago's hyperopt space and a `BudgetFit` whose model is calibrated on `_law` (12 synthetic networks),
    saved under `tmp_path` as a run saves the target's calibration."""
    from compressor.search.config import kd_hyperopt_space
    from compressor.search.fit import BudgetFit
    from compressor.search.latency_model import Features, LatencyModel
    from compressor.spaces import get_space

    rng = np.random.default_rng(0)
    calibration = []
    for _ in range(12):
        f = Features(macs=int(10 ** rng.uniform(4, 7)), params=1000, activations=int(10 ** rng.uniform(3, 5)),
                     ops=int(rng.uniform(20, 200)), layers=10)
        calibration.append((f, _law(f)))
    model = LatencyModel({"k": 1}, tmp_path / "latency.json", calibration)
    space = get_space("nago")
    fit = BudgetFit(space=space, model=model, budget_ms=budget_ms, fill_fraction=0.8, input_shape=SHAPE,
                    num_classes=10)
    return {"arch": space.hyperopt_space(), **kd_hyperopt_space()}, fit


@pytest.fixture()
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ladder_law(space, arch: dict, seeds: list[int]) -> list[float]:
    """`_law` of the family (its worst member) at each size of `arch`'s ladder, smallest first."""
    from compressor.search.fit import size_ladder
    from compressor.search.latency_model import network_features

    return [max(_law(network_features(space.build(space.sample(sized, seed), SHAPE, 10), SHAPE)) for seed in seeds)
            for sized in size_ladder(space, arch)]


@pytest.mark.slow
def test_the_driver_fits_each_proposal_before_submitting_it_and_learns_every_returned_sample(tmp_path,
                                                                                              one_torch_thread):
    from compressor.search.latency_model import LatencyModel

    budget_ms = 1.0
    hyper, fit = _driver_fit(tmp_path, budget_ms)
    calibrated = len(fit.model.samples)
    measured = MeasuredByLaw(fit.space, budget_ms)
    records = _run(tmp_path / "t.sqlite", ThreadPool(measured, slots=2), hyperopt_space=hyper, budget=fit, space="nago", trials=3,
                   fidelities=(1,), seed=1)
    fitted = [r for r in records if not r.misc["fit"]["skipped"]]
    assert len(fitted) == len(measured.screened) >= 3 and all(r.status == "ok" for r in fitted)
    for rec in fitted:
        # the worker screened what the driver fitted: the largest size predicted within 0.8 x the budget
        assert {k: rec.params["arch"][k] for k in rec.misc["fit"]["fitted"]} == rec.misc["fit"]["fitted"]
        assert rec.params["arch"] in measured.screened
        sizes = _ladder_law(fit.space, rec.params["arch"], rec.seeds)
        at = sizes.index(rec.latency_ms)
        assert rec.latency_ms <= 0.8 * budget_ms + 1e-9 or at == 0
        assert at == len(sizes) - 1 or sizes[at + 1] > 0.8 * budget_ms
        assert rec.misc["predicted"]["latency_ms"] == pytest.approx(rec.latency_ms, rel=1e-3)
    # every sample a worker returned was learnt once, and saved as a run saves the target's calibration
    assert len(fit.model.samples) == calibrated + len(measured.returned) == calibrated + len(fitted)
    assert len(LatencyModel.load({"k": 1}, tmp_path / "latency.json").samples) == len(fit.model.samples)


def test_a_proposal_predicted_far_over_is_recorded_by_the_driver_and_never_submitted(tmp_path, one_torch_thread):
    from compressor.search.latency_model import FAR_OVER

    budget_ms = 0.001  # under the law's 0.01 ms overhead: every size of every family is predicted far over
    hyper, fit = _driver_fit(tmp_path, budget_ms)
    calibrated = list(fit.model.samples)
    measured = MeasuredByLaw(fit.space, budget_ms)
    ended = []
    records = _run(tmp_path / "t.sqlite", ThreadPool(measured, slots=2),
                   lambda event, info: ended.append(info["record"]) if event == "end" else None,
                   hyperopt_space=hyper, budget=fit, space="nago", trials=2, screen_factor=2, fidelities=(1,))
    assert measured.screened == [] and fit.model.samples == calibrated  # nothing submitted, nothing measured
    assert len(records) == len(ended) == 4  # trials x screen_factor proposals asked, each committed
    for rec in records:
        assert rec.status == "infeasible" and rec.reason.startswith("predicted over budget")
        assert rec.misc["fit"]["skipped"] and rec.misc["fit"]["predicted_ms"] > FAR_OVER * budget_ms
        assert rec.profiles == [] and len(rec.archs) == len(rec.seeds) and rec.loss > 1.0
