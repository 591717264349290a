"""Side-by-side measurement and the verdicts built on it.

The interleaving order, the ratio and its interval, drift correction and the
borderline rule are tested with synthetic timers (exact, machine-independent
figures); real ONNX Runtime measurements are checked for structure and sanity
only, never for speed.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import make_conv_gemm_model

from compressor.errors import UserError
from profilers.errors import ProfileError
from profilers.side_by_side import Interval, bootstrap_interval, interleave, memory_ratio


class ScriptedTimer:
    """A timer that records which call ran and returns latencies from `latency(role, n)`.

    Roles are the calls in order of first appearance (0, 1, ...), i.e. the models' order.
    """

    def __init__(self, latency, run: bool = True):
        self.latency = latency
        self.run = run
        self.roles: dict[int, int] = {}
        self.log: list[int] = []

    def __call__(self, call) -> float:
        role = self.roles.setdefault(id(call), len(self.roles))
        if self.run:
            call()
        self.log.append(role)
        return self.latency(role, len(self.log))


def test_interleave_runs_the_models_in_rounds_in_order_and_stops_on_timed_seconds():
    ran = []
    calls = [lambda: ran.append("A"), lambda: ran.append("B"), lambda: ran.append("C")]
    timer = ScriptedTimer(lambda role, n: [1.0, 2.0, 3.0][role])
    rounds = interleave(calls, seconds=0.6, min_rounds=5, max_rounds=1000, warmup_rounds=2, settle_ms=0,
                        timer=timer)
    # warm-up: at least 2 rounds and 100 ms of timed warm-up -> 17 rounds of 6 ms; then 100 rounds of 6 ms = 0.6 s
    assert rounds.warmup_rounds == 17
    assert ran == ["A", "B", "C"] * (17 + 100)
    assert rounds.samples_ms.shape == (100, 3) and rounds.stop_reason == "rounds"
    assert rounds.samples_ms[:, 2].tolist() == [3.0] * 100
    timing = rounds.timing(1, stable_rel=0.01)
    assert timing.samples_ms == [2.0] * 100 and timing.seconds == pytest.approx(0.2)


def test_each_timed_run_follows_settle_runs_of_the_same_model_lasting_about_settle_ms():
    ran = []
    calls = [lambda: ran.append("A"), lambda: ran.append("B")]
    timer = ScriptedTimer(lambda role, n: [1.0, 4.0][role])
    rounds = interleave(calls, seconds=0.1, min_rounds=3, max_rounds=100, warmup_rounds=0, settle_ms=2.5,
                        timer=timer)
    # A (1 ms) settles for 3 runs, B (4 ms) for 1; a round takes 4 + 8 ms, settle runs included in `seconds`
    n = len(rounds.samples_ms)
    assert n == 9 and ran[-6 * n:] == (["A"] * 4 + ["B"] * 2) * n
    assert rounds.samples_ms.tolist() == [[1.0, 4.0]] * n


def test_interleave_respects_min_and_max_rounds():
    timer = ScriptedTimer(lambda role, n: 1000.0, run=False)
    few = interleave([lambda: None] * 2, seconds=0.001, min_rounds=7, max_rounds=50, warmup_rounds=0, settle_ms=0,
                     timer=timer)
    assert len(few.samples_ms) == 7 and few.stop_reason == "rounds"
    fast = ScriptedTimer(lambda role, n: 0.001, run=False)
    capped = interleave([lambda: None], seconds=10, min_rounds=1, max_rounds=30, warmup_rounds=0, timer=fast)
    assert len(capped.samples_ms) == 30 and capped.stop_reason == "max_runs"


def test_the_ratio_of_medians_cancels_shared_drift_and_its_interval_is_deterministic():
    rng = np.random.default_rng(1)
    drift = np.linspace(1.0, 1.3, 400)  # the machine slows down by 30% during the session
    reference = drift * (1 + 0.01 * rng.standard_normal(400))
    model = 2.0 * drift * (1 + 0.01 * rng.standard_normal(400))
    paired = bootstrap_interval(model, reference, seed=3)
    assert paired == bootstrap_interval(model, reference, seed=3)
    assert paired.low <= paired.value <= paired.high and paired.contains(2.0)
    assert paired.high - paired.low < 0.03  # +-0.7% although the absolute latencies moved by 30%
    # Resampled independently, as for models measured one after another, the drift is not cancelled.
    unpaired = bootstrap_interval(model, reference, seed=3, paired=False)
    assert unpaired.high - unpaired.low > 2.5 * (paired.high - paired.low)
    exact = bootstrap_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert exact == Interval(2.0, 2.0, 2.0)


def test_a_p50_is_the_median_of_the_quiet_runs_whatever_share_of_the_session_a_slow_state_takes(fast_target):
    """A shared VM alternates between a quiet state and slow ones that add a fixed cost to every call (measured
    on a 2-core AMD EPYC VM: +0.03 ms on 0.03-0.08 ms networks, for 0.1-2 s at a time). The p50 of all runs, and a
    ratio of two, moves with the slow state's share of the session; the p50 of the quiet runs does not."""
    import profilers

    model = make_conv_gemm_model(1).SerializeToString()

    def measured(slow_share: float):
        # Blocks of 50 calls; `slow_share` of the blocks add 1 ms to each call (the candidate 2 ms, the reference 1).
        timer = ScriptedTimer(lambda role, n: [2.0, 1.0][role] + (1.0 if (n // 50) % 10 < 10 * slow_share else 0.0),
                              run=False)
        return profilers.compare([model, model], fast_target, reference=1, seconds=4.0, timer=timer)

    mostly_quiet, mostly_slow = measured(0.3), measured(0.7)
    assert mostly_quiet.latency[1].value == mostly_slow.latency[1].value == 1.0
    assert mostly_quiet.ratios[0].value == mostly_slow.ratios[0].value == 2.0
    assert "quiet runs" in mostly_quiet.to_dict()["statistic"]
    # A tail percentile is of all runs: the slow state is what it is about.
    assert mostly_quiet.ratio(0, 1, "p90").value == mostly_slow.ratio(0, 1, "p90").value == 1.5
    # The p50 of all runs followed the slow state: 2.0 in the mostly quiet session, 3/2 in the mostly slow one.
    every = [bootstrap_interval(c.samples_ms[0], c.samples_ms[1]).value for c in (mostly_quiet, mostly_slow)]
    assert every == [2.0, 1.5]


def test_on_a_quiet_machine_the_quiet_median_is_the_median():
    rng = np.random.default_rng(2)
    samples = rng.uniform(0.99, 1.01, 500)  # every run within the quiet window of the lowest
    assert bootstrap_interval(samples, quiet=True) == bootstrap_interval(samples)
    slow = np.concatenate([samples, samples + 0.5, samples[:100] + 0.5])  # more runs in a slow state than not
    assert bootstrap_interval(slow, quiet=True).value == bootstrap_interval(samples).value
    assert bootstrap_interval(slow).value > 1.4


def test_a_few_fast_runs_of_a_short_session_do_not_make_the_quiet_runs():
    """In a session of a few hundred runs the lowest 1% is one or two runs; two far faster than the rest would be
    the quiet runs by themselves, so the anchor is never below the 5th-lowest run."""
    rng = np.random.default_rng(3)
    runs = rng.uniform(0.98, 1.02, 120)
    fast = np.concatenate([runs, [0.80, 0.85]])
    assert bootstrap_interval(fast, quiet=True).value == pytest.approx(np.median(runs), abs=0.005)
    # With thousands of runs the lowest 1% is above the 5th-lowest: two fast runs are still no quiet state.
    many = np.concatenate([rng.uniform(0.98, 1.02, 5000), [0.80, 0.85]])
    assert bootstrap_interval(many, quiet=True).value > 0.99


def test_bootstrap_of_one_model_is_its_percentile_with_an_interval():
    samples = np.arange(1, 101, dtype=float)
    median = bootstrap_interval(samples, q=0.5)
    assert median.value == 50.0 and median.low < 50 < median.high
    assert bootstrap_interval(samples, q=0.9).value == 90.0  # nearest rank, as profilers.stats
    with pytest.raises(ValueError, match="same length"):
        bootstrap_interval([1.0, 2.0], [1.0])


def test_memory_is_compared_only_between_figures_of_the_same_meaning():
    rss = {"model": "a", "peak_memory_mb": 20.0, "peak_memory_meaning": "RSS"}
    assert memory_ratio(rss, {**rss, "model": "b", "peak_memory_mb": 10.0}) == 2.0
    assert memory_ratio(rss, {**rss, "peak_memory_mb": None}) is None
    with pytest.raises(ProfileError, match="mean different things"):
        memory_ratio(rss, {"model": "gpu", "peak_memory_mb": 5.0, "peak_memory_meaning": "GPU memory"})


@pytest.fixture
def budget_target(fast_target):
    return fast_target.with_budgets(latency_ms=1.0)


def _check(target, timer, reference=None, seconds=0.05, first_look=None):
    from compressor.models.on_target import check_side_by_side

    model = make_conv_gemm_model(1).SerializeToString()
    return check_side_by_side({"candidate": model}, target, (3, 8, 8), reference=reference, seconds=seconds,
                              first_look=first_look, timer=timer).checked["candidate"]


def test_clear_verdicts_within_and_over(budget_target):
    within = _check(budget_target, ScriptedTimer(lambda role, n: 0.5))
    assert (within.verdict, within.within_budget, within.fits, within.remeasured) == ("within", True, True, False)
    assert within.budget_ratio == 0.5 and within.budget_ratio_interval == (0.5, 0.5)
    over = _check(budget_target, ScriptedTimer(lambda role, n: 2.0))
    assert (over.verdict, over.within_budget, over.fits) == ("over", False, False)
    assert over.reasons[0].startswith("latency p50 2.000 ms > budget 1 ms")


def test_a_borderline_check_is_measured_again_longer_and_then_decided(budget_target):
    rng = np.random.default_rng(0)
    # Noisy around the budget for the first session's calls (within the quiet runs' window, so the quiet median
    # is the budget itself), then clearly under it.
    settles = ScriptedTimer(lambda role, n: float(rng.uniform(0.98, 1.02)) if n <= 200 else 0.8)
    checked = _check(budget_target, settles)
    assert checked.remeasured and checked.verdict == "within" and checked.decided_by == "interval"
    assert checked.session["remeasured"] and checked.latency_ms == 0.8

    noisy = ScriptedTimer(lambda role, n: float(rng.uniform(0.98, 1.02)))
    undecided = _check(budget_target, noisy, seconds=0.2)
    assert undecided.remeasured and undecided.verdict == "borderline" and undecided.within_budget == "borderline"
    assert undecided.decided_by == "point estimate"
    low, high = undecided.budget_ratio_interval
    assert low <= 1 <= high
    assert undecided.fits == (undecided.latency_ms <= 1.0)
    # the longer session ran 3x as long as a first one
    first = _check(budget_target, ScriptedTimer(lambda role, n: 1.0), seconds=0.2)
    assert undecided.session["rounds"] >= 2.5 * first.session["rounds"]


def test_a_first_look_decides_a_clear_verdict_and_a_borderline_one_is_measured_in_full(budget_target):
    full = _check(budget_target, ScriptedTimer(lambda role, n: 0.5), seconds=0.4)
    clear = _check(budget_target, ScriptedTimer(lambda role, n: 0.5), seconds=0.4, first_look=0.05)
    assert (clear.verdict, clear.remeasured, clear.decided_by) == ("within", False, "interval")
    assert clear.session["rounds"] * 4 < full.session["rounds"]  # the first look's short session stood
    over = _check(budget_target, ScriptedTimer(lambda role, n: 2.0), seconds=0.4, first_look=0.05)
    assert (over.verdict, over.remeasured) == ("over", False) and over.session["rounds"] * 4 < full.session["rounds"]

    rng = np.random.default_rng(1)
    # Noisy around the budget through the first look's calls, then clearly under it: the full measurement decides.
    probe = ScriptedTimer(lambda role, n: 1.0)
    _check(budget_target, probe, seconds=0.05)
    settles = ScriptedTimer(lambda role, n: float(rng.uniform(0.98, 1.02)) if n <= len(probe.log) else 0.8)
    looked = _check(budget_target, settles, seconds=0.4, first_look=0.05)
    assert looked.remeasured and looked.verdict == "within" and looked.decided_by == "interval"
    in_full = _check(budget_target, ScriptedTimer(lambda role, n: 0.8), seconds=0.4)
    assert looked.session["rounds"] == in_full.session["rounds"]
    # a first look as long as the measurement is no first look
    same = _check(budget_target, ScriptedTimer(lambda role, n: 0.5), seconds=0.4, first_look=0.4)
    assert same.session["rounds"] == full.session["rounds"]


def test_drift_correction_judges_the_candidate_in_the_runs_starting_speed(budget_target):
    from compressor.models.on_target import DriftReference

    reference = DriftReference(onnx=make_conv_gemm_model(1, seed=1).SerializeToString(), label="ref",
                               percentile="p50", start_ms=0.25)
    # The machine is twice as slow as at the start: the reference takes 0.5 ms instead of 0.25.
    timer = ScriptedTimer(lambda role, n: [1.6, 0.5][role])
    checked = _check(budget_target, timer, reference=reference)
    assert checked.raw_latency_ms == 1.6 and checked.drift == 0.5
    assert checked.latency_ms == pytest.approx(0.8) and checked.verdict == "within"
    assert checked.session["reference"]["now_ms"] == 0.5
    assert set(timer.log) == {0, 1}  # the reference ran in the same rounds
    payload = checked.verdict_fields()
    assert payload["within_budget"] is True and payload["session"] == checked.session["id"]
    json.dumps(payload)


def test_a_budget_below_the_runtimes_floor_is_refused_naming_the_floor(fast_target):
    from compressor.models.on_target import check_floor

    with pytest.raises(UserError, match=r"below the runtime's per-call floor on cpu-1t: a one-op model already "
                                         r"takes [0-9.e-]+ ms there"):
        check_floor(fast_target.with_budgets(latency_ms=1e-7), (3, 8, 8))


def test_real_side_by_side_measurement_has_sane_structure(fast_target):
    import profilers

    data = make_conv_gemm_model(1).SerializeToString()
    result = profilers.compare([data, data], fast_target, labels=["a", "b"], seconds=0.2)
    assert result.mode == "interleaved" and result.labels == ["a", "b"]
    assert result.rounds >= fast_target.measure.min_runs
    assert [p["latency_ms"]["n"] for p in result.profiles] == [result.rounds] * 2
    assert result.ratios[0] == Interval(1.0, 1.0, 1.0)
    same = result.ratios[1]
    assert same.low <= same.value <= same.high and 0.2 < same.value < 5
    assert all(p["peak_memory_meaning"].startswith("resident memory") for p in result.profiles)
    assert result.memory_ratios == [None, None]  # memory not measured
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["reference"] == "a" and as_json["models"][1]["ratio"]["value"] == same.value
    with pytest.raises(ProfileError, match="reference 2 is not one of the 2 models"):
        profilers.compare([data, data], fast_target, reference=2)


@pytest.mark.slow
def test_a_runtime_that_cannot_interleave_measures_sequentially_and_says_so(fast_target):
    import torch

    import profilers

    target = dataclasses.replace(fast_target, runtime="torch")
    result = profilers.compare([torch.nn.ReLU(), torch.nn.Tanh()], target, input_shape=(1, 8), seconds=0.1)
    assert result.mode == "sequential" and "one after another" in result.warnings[0]
    assert result.ratios[1].low <= result.ratios[1].value <= result.ratios[1].high
    assert all(p["peak_memory_meaning"] is None for p in result.profiles)


@pytest.mark.slow
def test_cli_profile_two_models_prints_the_ratio_and_its_interval(capsys, tiny_onnx, tmp_path):
    from compressor.cli import main

    target = tmp_path / "fast.toml"
    target.write_text('name = "fast-1t"\nkind = "edge"\nruntime = "onnxruntime"\nthreads = 1\ncpu_affinity = [0]\n'
                      "[measure]\nwarmup_runs = 2\nmin_runs = 20\nmin_seconds = 0.05\nmax_seconds = 0.3\n")
    argv = ["profile", str(tiny_onnx), str(tiny_onnx), "--target", str(target), "--no-memory",
            "--max-seconds", "0.2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "side by side on fast-1t (interleaved" in out and "p50 / tiny.onnx, 95% interval" in out
    assert "ratios: p50 of the quiet runs" in out  # says which p50 the ratios are of
    assert main([*argv, "--json", "--reference", "2"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["mode"] == "interleaved" and found["models"][1]["ratio"]["value"] == 1.0
    assert found["statistic"].startswith("p50 of the quiet runs")
    assert main([*argv, "--reference", "3"]) == 2
    assert "--reference 3 is not one of the 2 MODELs" in capsys.readouterr().err
