"""The latency model (ranking, persistence by target key) and fit-to-budget (the rule, the strategies, real runs)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from compressor.search.config import SearchConfig, kd_hyperopt_space
from compressor.search.fit import calibration_points, fit_to_budget, size_ladder, stage_steps
from compressor.search.latency_model import (FAR_OVER, MIN_SAMPLES, NEAR_OVER, Features, LatencyModel, kendall_tau,
                                             network_features, screening_summary)
from compressor.search.store import TrialRecord
from compressor.search.strategies import HyperoptStrategy, record_fitted
from compressor.spaces import get_space


def _truth(f: Features) -> float:
    return 0.02 + 4e-9 * f.macs + 2e-8 * f.activations + 5e-4 * f.ops


def _synthetic(n: int, seed: int, noise: float = 0.1) -> list[tuple[Features, float]]:
    """Networks with random costs and a latency that grows with each of them, times log-normal noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = Features(macs=int(10 ** rng.uniform(5, 8)), params=int(10 ** rng.uniform(3, 6)),
                     activations=int(10 ** rng.uniform(4, 6.5)), ops=int(rng.uniform(20, 300)),
                     layers=int(rng.uniform(3, 80)))
        out.append((f, _truth(f) * float(np.exp(rng.normal(0, noise)))))
    return out


def test_the_model_ranks_a_noisy_monotone_latency():
    train, test = _synthetic(MIN_SAMPLES * 3, 0), _synthetic(60, 1)
    model = LatencyModel({"k": 1}, None, train)
    predicted = model.predict([f for f, _ in test])
    assert kendall_tau(predicted, [ms for _, ms in test]) > 0.7
    assert np.median(np.abs(predicted / np.array([ms for _, ms in test]) - 1)) < 0.25


def test_features_count_the_macs_of_convs_whose_channels_miss_the_simd_width():
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.Conv2d(16, 8, 3, padding=1),
                              torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 1, groups=16))
    f = network_features(net, (1, 8, 8))
    # The stem (1 image channel -> 16) and the depthwise 16 are aligned; 16 -> 8 and 8 -> 16 are not.
    assert f.misaligned_macs == 2 * (8 * 8 * 8 * 16 * 9)
    assert f.macs >= f.misaligned_macs + 8 * 8 * 16 * 9
    macs, misaligned = f.costs()[1:3]
    assert macs == f.macs and misaligned == f.misaligned_macs


def test_the_model_learns_what_a_misaligned_mac_costs_on_this_machine():
    """Where misaligned MACs cost 3x (AVX-512 without blocked kernels for 8/24 channels), a network of the same
    MACs predicts slower when they are misaligned; where they cost the same, it does not."""
    def networks(n, rng):
        out = []
        for _ in range(n):
            macs = int(10 ** rng.uniform(5, 7))
            out.append(Features(macs=macs, params=1000, activations=int(10 ** rng.uniform(4, 5.5)),
                                ops=int(rng.uniform(20, 200)), layers=10, misaligned_macs=int(macs * rng.uniform(0, 1))))
        return out

    def law(f, premium):
        return 0.02 + 4e-9 * (f.macs + (premium - 1) * f.misaligned_macs) + 2e-8 * f.activations + 5e-4 * f.ops

    same = dict(macs=5_000_000, params=1000, activations=30_000, ops=60, layers=10)
    slow, fast = Features(**same, misaligned_macs=5_000_000), Features(**same)
    for premium in (3.0, 1.0):
        rng = np.random.default_rng(0)
        model = LatencyModel({"k": 1}, None, [(f, law(f, premium) * float(np.exp(rng.normal(0, 0.05))))
                                              for f in networks(40, rng)])
        predicted, true = np.divide(*model.predict([slow, fast])), law(slow, premium) / law(fast, premium)
        # Over 20 seeds the fitted ratio was within 0.90-1.15x the true one (1.57 and 1.0 here).
        assert true / 1.2 < predicted < true * 1.2


def test_calibration_persists_per_target_key_and_not_across_cpus(tmp_path, monkeypatch):
    from targets import load_target

    import profilers.host

    target = load_target("cpu-1t")
    model = LatencyModel.open(target, tmp_path)
    assert model.samples == [] and not model.calibrated
    for features, ms in _synthetic(MIN_SAMPLES, 2):
        model.add(features, ms)
    again = LatencyModel.open(target.with_budgets(latency_ms=0.3), tmp_path)  # budgets do not change speed
    assert again.samples == model.samples and again.calibrated
    assert json.loads(again.path.read_text())["format"] == "compressor-latency-samples/3"
    two_threads = dataclasses.replace(target, threads=2)
    assert LatencyModel.open(two_threads, tmp_path).samples == []
    monkeypatch.setattr(profilers.host, "cpu_model", lambda: "Another CPU 9000")
    other = LatencyModel.open(target, tmp_path)
    assert other.samples == [] and other.path != model.path
    # A file whose key does not match (edited, or a hash collision) is not reused.
    other.path.write_text(again.path.read_text())
    assert LatencyModel.open(target, tmp_path).samples == []


def test_calibration_in_reference_units_carries_across_machine_speeds(tmp_path):
    """Samples kept in units of the drift reference: a run started at half the speed (its reference twice as
    slow) predicts every network twice as slow, from the same stored calibration; a run without a reference
    (milliseconds) does not share it."""
    from targets import load_target

    from compressor.models.on_target import DriftReference

    target, shape = load_target("cpu-1t"), (1, 16, 16)

    def reference(start_ms: float) -> DriftReference:
        return DriftReference(onnx=b"", label="zoo:plain:widths=8-16-32", percentile="p50", start_ms=start_ms)

    fast = LatencyModel.open(target, tmp_path, reference=reference(0.01), input_shape=shape, num_classes=10)
    train = _synthetic(MIN_SAMPLES, 6)
    for features, ms in train:
        fast.add(features, ms)
    probe = [f for f, _ in _synthetic(4, 7)]
    slow = LatencyModel.open(target, tmp_path, reference=reference(0.02), input_shape=shape, num_classes=10)
    assert slow.path == fast.path and slow.calibrated
    np.testing.assert_allclose(slow.predict(probe), 2 * fast.predict(probe), rtol=1e-9)
    assert slow.skip_factor(0.2) == pytest.approx(fast.skip_factor(0.1))
    assert LatencyModel.open(target, tmp_path).samples == []
    other_input = LatencyModel.open(target, tmp_path, reference=reference(0.01), input_shape=(3, 32, 32),
                                    num_classes=10)
    assert other_input.samples == []


def test_fit_takes_the_largest_size_predicted_under_the_fraction():
    space = get_space("nago")
    fit = fit_to_budget(space, {"base_width": 60}, lambda arch: 0.01 * arch["base_width"], budget_ms=0.4,
                        fraction=0.8, far_over=FAR_OVER)
    assert fit.values == {"base_width": 32} and fit.proposed == {"base_width": 60}
    assert fit.predicted_ms == pytest.approx(0.32) and not fit.skip
    assert fit.predictions <= 5  # bisection over nago's 15 widths
    assert fit.arch["base_width"] == 32 and fit.arch["top_nodes"] == space.default_params()["top_nodes"]
    grown = fit_to_budget(space, {"base_width": 8}, lambda arch: 0.001 * arch["base_width"], budget_ms=0.4,
                          fraction=0.8, far_over=FAR_OVER)
    assert grown.values == {"base_width": 64}  # a small proposal is grown to fill the budget


def test_fit_scales_every_size_knob_of_a_family_and_skips_far_over():
    space = get_space("zoo")
    arch = {"family": {"family": "plain", "width_1": 64, "width_2": 128, "width_3": 256, "convs_2": 3}}
    ladder = size_ladder(space, arch)
    for smaller, larger in zip(ladder, ladder[1:]):
        assert all(smaller[k] <= larger[k] for k in ("width_1", "width_2", "width_3"))
    assert (ladder[0]["width_1"], ladder[-1]["width_3"]) == (8, 256)

    def latency(a):
        return 1e-3 * (a["width_1"] + a["width_2"] + a["width_3"])

    fit = fit_to_budget(space, arch, latency, budget_ms=0.25, fraction=0.8, far_over=FAR_OVER)
    assert latency(fit.arch) <= 0.2 and fit.arch["convs_2"] == 3
    assert all(latency(a) > 0.2 for a in ladder if a != fit.arch and latency(a) >= latency(fit.arch))
    far = fit_to_budget(space, arch, lambda a: 10 * latency(a), budget_ms=0.05, fraction=0.8, far_over=FAR_OVER)
    assert far.skip and far.arch == ladder[0]
    near = fit_to_budget(space, arch, latency, budget_ms=0.022, fraction=0.8, far_over=FAR_OVER)
    assert not near.skip and near.arch == ladder[0]  # over the fraction but not far over: measured


def test_the_size_ladder_moves_one_stage_at_a_time_the_last_first():
    space = get_space("zoo")
    arch = {"family": {"family": "plain", "width_1": 16, "width_2": 16, "width_3": 32}}
    names = ("width_1", "width_2", "width_3")
    ladder = [tuple(rung[k] for k in names) for rung in size_ladder(space, arch)]
    for smaller, larger in zip(ladder, ladder[1:]):  # one knob, one allowed step or more, at a time
        assert sum(a != b for a, b in zip(smaller, larger)) == 1 and all(a <= b for a, b in zip(smaller, larger))
    # One factor takes 16-16-32 to 24-24-40; the rungs between grow the last stage, then the middle one.
    i = ladder.index((16, 16, 32))
    assert ladder[i + 1:ladder.index((24, 24, 40)) + 1] == [(16, 16, 40), (16, 24, 40), (24, 24, 40)]
    assert stage_steps({"a": 1, "b": 2}, {"a": 1, "b": 2}, ["a", "b"]) == []
    assert stage_steps({0: 8, 1: 16, 2: 32}, {0: 16, 1: 24, 2: 48}, range(3)) == [
        {0: 8, 1: 16, 2: 48}, {0: 8, 1: 24, 2: 48}, {0: 16, 1: 24, 2: 48}]
    nago = get_space("nago")  # one size knob: the ladder is its allowed values
    assert [r["base_width"] for r in size_ladder(nago, {"base_width": 16})] == list(range(8, 65, 4))


def _width_latency(space):
    return lambda a: sum(a[k.name] for k in space.size_knobs(a))


@pytest.mark.parametrize("name, latency, budget_ms", [("zoo", None, 1.0), ("nago", "ops", 0.004)])
def test_trade_is_told_the_fitted_point_and_tpe_its_proposal(name, latency, budget_ms):
    """Widths (zoo) and shrunk depths (nago, a budget under any width of the proposed graph) reach trade's point only."""
    from hyperopt import space_eval

    from compressor.search.trust_region import TrustRegionStrategy

    space = get_space(name)
    predict = _ops_latency if latency == "ops" else _width_latency(space)
    config = SearchConfig(space=name, trials=4)
    hyperopt = HyperoptStrategy(config, {"arch": space.hyperopt_space(), **kd_hyperopt_space()})
    trade = TrustRegionStrategy(config, space)
    for strategy in (hyperopt, trade):
        params, misc = strategy.ask(0)
        fit = fit_to_budget(space, params["arch"], predict, budget_ms=budget_ms, fraction=0.8, far_over=FAR_OVER)
        assert fit.arch != space.validate_params(params["arch"])  # the fit changed the proposal
        told = record_fitted(misc, space, fit.arch, fit.values)
        assert misc == strategy.ask(0)[1]  # a copy; the proposal itself is unchanged
        if strategy is hyperopt:
            assert told == misc
            point = {k: v[0] for k, v in told["vals"].items() if v}
            assert space.validate_params(space_eval(hyperopt.space, point)["arch"]) == space.validate_params(
                params["arch"])
        else:
            region = trade._by_name[told["region"]]
            assert space.validate_params(trade.params(region, told["x"])["arch"]) == fit.arch


def _nago_vals() -> dict[str, list[float]]:
    """hyperopt's `misc["vals"]` for nago's default point (every searchable knob's label)."""
    space = get_space("nago")
    return {label: [value] for label, value in space.hyperopt_point(space.default_params()).items()}


def _evaluator(model: LatencyModel, budget_ms: float, checker=None, **config):
    from targets import load_target

    from compressor.search.evaluate import FamilyEvaluator
    from compressor.search.fit import BudgetFit

    config = SearchConfig(family_size=1, **config)
    space, target = get_space("nago"), load_target("cpu-1t").with_budgets(latency_ms=budget_ms)
    dataset = SimpleNamespace(input_shape=(1, 16, 16), num_classes=10)
    budget = BudgetFit(space=space, model=model, budget_ms=budget_ms, fill_fraction=config.fill_fraction,
                       input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    return FamilyEvaluator(config=config, space=space, target=target, dataset=dataset, teacher_logits={},
                           budget=budget, checker=checker)


def test_a_family_predicted_far_over_is_recorded_without_measuring():
    model = LatencyModel({"k": 1}, None, [(f, ms * 1e4) for f, ms in _synthetic(MIN_SAMPLES, 3)])  # all slow
    evaluate = _evaluator(model, budget_ms=0.05)
    record = TrialRecord(proposal=0, fidelity=1, status="ok", params={"arch": {"base_width": 40}, "lr": 0.1,
                                                                     "kd_alpha": 0.5, "kd_tau": 4.0},
                         seeds=[1], misc={"vals": _nago_vals()})
    evaluate.fit(record)  # what the schedule does first
    evaluate(record, None)
    assert record.status == "infeasible" and record.reason.startswith("predicted over budget")
    assert record.profiles == [] and len(model.samples) == MIN_SAMPLES  # nothing was measured
    assert record.params["arch"]["base_width"] == 8 and record.misc["vals"] == _nago_vals()  # TPE: as asked
    # Depth was shrunk first (the synthetic latency grows with ops), then skipped at the shallowest.
    assert record.misc["fit"]["fitted"]["bottom_nodes"] == 1 and record.params["arch"]["bottom_nodes"] == 1
    assert record.misc["fit"]["skipped"] and record.loss > 1.0 + FAR_OVER - 1.0
    summary = screening_summary([record], 0.05)
    assert summary["skipped"] == 1 and summary["screenings"] == 0 and summary["fitted"] == 0
    # The run's summaries count it apart from the proposals a screening found over the budget.
    from compressor.pipeline.report import search_counts

    counts = search_counts({"feasible": 2, "infeasible": 3, "failed": 0, "latency_model": summary})
    assert counts == "2 feasible and trained, 2 over budget as measured, 1 predicted over it and not measured, 0 failed"


def test_a_warm_start_screened_within_the_budget_keeps_its_size_and_its_verdict():
    """The baseline's width, judged within the budget in the run's width session, is neither resized, skipped
    nor measured again by the search, though the model predicts it far over (one network, one verdict)."""
    from compressor.search.fit import sample_family

    model = LatencyModel({"k": 1}, None, [(f, ms * 1e4) for f, ms in _synthetic(MIN_SAMPLES, 3)])  # all slow
    calls = []
    evaluate = _evaluator(model, budget_ms=0.05, checker=lambda *a, **k: calls.append(a))
    arch = {"base_width": 40}
    profile = {"model_size_mb": 0.1, "params": 1234, "macs": 56789, "peak_memory_mb": None}
    key = json.dumps(evaluate.space.validate_params(arch), sort_keys=True)
    evaluate.budget.known = {key: {"session": "widths-1", "latency_ms": 0.049, "profile": profile}}
    record = TrialRecord(proposal=0, fidelity=1, status="ok", params={"arch": arch}, seeds=[1],
                         misc={"vals": _nago_vals()})
    evaluate.budget.fit(record)
    assert record.params == {"arch": arch} and "fit" not in record.misc and record.misc["screened"]
    evaluate._screen(record, sample_family(evaluate.space, record), measured := [])
    assert record.status == "ok" and record.latency_ms == 0.049 and record.n_params == 1234
    assert record.profiles == [profile] and calls == [] and measured == []
    other = TrialRecord(proposal=1, fidelity=1, status="ok", params={"arch": {"base_width": 48}}, seeds=[1],
                        misc={"vals": _nago_vals()})
    evaluate.budget.fit(other)
    assert "screened" not in other.misc and other.misc["fit"]["skipped"]


def test_an_uncalibrated_model_without_fit_changes_nothing_before_the_screening():
    model = LatencyModel({"k": 1}, None, _synthetic(MIN_SAMPLES - 1, 4))
    evaluate = _evaluator(model, budget_ms=0.05, fill_fraction=None)
    record = TrialRecord(proposal=0, fidelity=1, status="ok", params={"arch": {"base_width": 40}}, seeds=[1],
                         misc={"vals": {"nago.base_width": [8.0]}})
    evaluate.budget.fit(record)
    assert record.status == "ok" and record.params == {"arch": {"base_width": 40}}
    assert record.misc == {"vals": {"nago.base_width": [8.0]}}


def _ops_latency(arch) -> float:
    """A synthetic nago latency: per-op overhead (grows with the node counts) plus compute (with the width)."""
    return 1e-3 * arch["top_nodes"] * arch["mid_nodes"] * arch["bottom_nodes"] * (1 + arch["base_width"] / 32)


def test_fit_shrinks_a_graph_too_deep_for_any_width_and_keeps_the_rest():
    space = get_space("nago")
    arch = {"base_width": 40, "top_nodes": 6, "mid_nodes": 4, "bottom_nodes": 5, "op": "conv3x3",
            "top_generator": "er"}
    smallest_width = _ops_latency({**space.validate_params(arch), "base_width": 8})
    fit = fit_to_budget(space, arch, _ops_latency, budget_ms=smallest_width / 2, fraction=0.8, far_over=FAR_OVER)
    assert fit.predicted_ms <= 0.8 * smallest_width / 2 and not fit.skip
    assert (fit.arch["op"], fit.arch["top_generator"]) == ("conv3x3", "er")  # the strategy's other choices
    shrunk = {k: v for k, v in fit.values.items() if k != "base_width"}
    assert shrunk and all(fit.values[k] < fit.proposed[k] for k in shrunk)  # only changed depth knobs reported
    assert set(shrunk) <= {"top_nodes", "mid_nodes", "bottom_nodes"}
    # Depth is the first resort only when width cannot fit: a budget the smallest width meets keeps the graph.
    wide = fit_to_budget(space, arch, _ops_latency, budget_ms=2 * smallest_width, fraction=0.8, far_over=FAR_OVER)
    assert set(wide.values) == {"base_width"} and wide.arch["top_nodes"] == 6 and wide.arch["base_width"] > 8
    # Shrinking stops at the smallest depth; a family still over is skipped there.
    hopeless = fit_to_budget(space, arch, lambda a: 100 * _ops_latency(a), budget_ms=0.05, fraction=0.8,
                             far_over=FAR_OVER)
    assert hopeless.skip and (hopeless.arch["top_nodes"], hopeless.arch["mid_nodes"], hopeless.arch["bottom_nodes"]) \
        == (3, 1, 1)


def test_the_skip_factor_follows_the_model_residuals_near_the_budget():
    exact = LatencyModel({"k": 1}, None, _synthetic(40, 5, noise=0.0))
    assert exact.skip_factor(budget_ms=0.1) == pytest.approx(1.0, abs=0.02)
    noisy = LatencyModel({"k": 1}, None, _synthetic(40, 5, noise=0.05)).skip_factor(budget_ms=0.1)
    noisier = LatencyModel({"k": 1}, None, _synthetic(40, 5, noise=0.1)).skip_factor(budget_ms=0.1)
    assert 1.0 < noisy < noisier <= FAR_OVER  # the more the model errs, the more room a prediction gets
    # Networks near the budget measured 30% slower than the model can express: it underpredicts exactly there,
    # so a family predicted a little under the budget is skipped (the factor is under 1, not under NEAR_OVER).
    samples = [(f, ms * (1.3 if 0.05 <= ms <= 0.2 else 1.0)) for f, ms in _synthetic(80, 6, noise=0.0)]
    biased = LatencyModel({"k": 1}, None, samples)
    assert NEAR_OVER <= biased.skip_factor(budget_ms=0.1) < 1.0
    assert biased.skip_factor(budget_ms=5.0) > 1.0  # far from the biased region the residuals are others


def test_calibration_points_spread_over_widths_and_two_depths():
    space = get_space("nago")
    arch = {"base_width": 40, "top_nodes": 5, "mid_nodes": 2, "op": "conv1x1"}
    points = calibration_points(space, arch, MIN_SAMPLES)
    assert len(points) == MIN_SAMPLES and len({json.dumps(p, sort_keys=True) for p in points}) == MIN_SAMPLES
    assert {p["top_nodes"] for p in points} == {5, 3} and {p["mid_nodes"] for p in points} == {2, 1}
    assert {8, 64} <= {p["base_width"] for p in points} and all(p["op"] == "conv1x1" for p in points)
    assert calibration_points(space, arch, 3) == points[:3]


def test_calibration_points_also_spread_over_the_other_families_of_the_search():
    from compressor.search.config import warm_start_points

    space = get_space("all")
    starts = [w.params(space)["arch"] for w in warm_start_points(space)]
    first = starts[0]  # nago's default: the search's first proposal
    points = calibration_points(space, first, MIN_SAMPLES, others=starts)
    assert len(points) == MIN_SAMPLES and len({json.dumps(p, sort_keys=True) for p in points}) == MIN_SAMPLES
    families = [p.get("family", "nago") for p in points]
    # half the points are other families, each at its smallest size, alternating with the proposal's own
    assert families[0::2] == ["nago"] * 4 and "nago" not in families[1::2] and len(set(families[1::2])) == 4
    assert families[1] == "plain" and families[-1] == "shufflenet_v2"  # the first and last other, spread between
    for point in points[1::2]:
        assert point == size_ladder(space, point)[0]
    # the proposal's own points are those it would get alone, fewer of them
    assert points[0::2] == calibration_points(space, first, 4)
    # the proposal among the others is not measured twice; no others: as before
    assert calibration_points(space, first, 3, others=[first]) == calibration_points(space, first, 3)


class _SyntheticChecker:
    """A target whose latency is a known function of the network's costs (the rule under test is the evaluator's);
    it keeps the first look each measurement was asked for."""

    def __init__(self):
        self.first_looks = []
        self.borderline = False  # whether a first look is borderline (then measured in full)

    def __call__(self, model, target, input_shape, *, max_seconds, first_look, reference):
        from compressor.models.on_target import Checked

        self.first_looks.append(first_look)
        features = network_features(model, input_shape)
        return Checked(profile={"model_size_mb": 0.1, "params": 1, "macs": 1}, latency_ms=_truth(features),
                       remeasured=self.borderline and first_look is not None)


def test_a_cold_model_is_calibrated_on_the_first_proposal_then_fits_it():
    model = LatencyModel({"k": 1}, None, _synthetic(MIN_SAMPLES - 3, 4))
    checker = _SyntheticChecker()
    evaluate = _evaluator(model, budget_ms=0.3, checker=checker)
    record = TrialRecord(proposal=0, fidelity=1, status="ok", params={"arch": {"base_width": 40}}, seeds=[1],
                         misc={"vals": _nago_vals()})
    evaluate.fit(record)
    assert len(model.samples) == MIN_SAMPLES and record.misc["calibration"] == 3
    assert checker.first_looks == [None] * 3  # calibrations are measured in full
    assert record.status == "ok" and "fit" in record.misc and "predicted" in record.misc
    summary = screening_summary([record], 0.3)
    assert summary["calibration"] == 3 and summary["screenings"] == 0
    again = TrialRecord(proposal=1, fidelity=1, status="ok", params={"arch": {"base_width": 40}}, seeds=[1],
                        misc={"vals": _nago_vals()})
    evaluate.fit(again)
    assert "calibration" not in again.misc and len(model.samples) == MIN_SAMPLES  # calibrated once
    # a screening takes a first look at a quarter of the measurement
    from compressor.search.evaluate import FIRST_LOOK
    from compressor.search.fit import sample_family

    evaluate._screen(again, sample_family(evaluate.space, again), [])
    assert again.status == "ok" and checker.first_looks[3:] == [FIRST_LOOK * evaluate.config.profile_seconds]
    # a screening whose first look was borderline, measured in full, is counted as such
    checker.borderline = True
    looked = TrialRecord(proposal=2, fidelity=1, status="ok", params=dict(again.params), seeds=[2], misc={})
    evaluate._screen(looked, sample_family(evaluate.space, looked), [])
    assert looked.misc["measured_in_full"] == 1
    assert screening_summary([again, looked], 0.3)["measured_in_full"] == 1


@pytest.mark.slow
def test_fit_to_budget_lands_near_the_fraction_on_a_real_target(fast_target):
    """Calibrate on real measurements of nago widths, fit a proposal, measure what was fitted (each beside the
    drift reference, as a run measures: the machine's drift between measurements is not the model's error)."""
    from compressor.models.on_target import DriftReference, check_on_target
    from compressor.search.latency_model import network_features

    space, shape = get_space("nago"), (1, 16, 16)
    reference = DriftReference.start(fast_target, shape, 10)
    model = LatencyModel({"k": 1}, None, unit_ms=reference.start_ms)
    measured = {}
    for width in (8, 16, 24, 32, 40, 48, 56, 64):
        for top in (3, 5):
            net = space.build(space.sample({"base_width": width, "top_nodes": top}, 0), shape, 10)
            ms = check_on_target(net, fast_target, shape, max_seconds=0.3, reference=reference).latency_ms
            model.add(network_features(net, shape), ms)
            measured[width, top] = ms
    budget = measured[40, 5]

    def predict(arch):
        return float(model.predict([network_features(space.build(space.sample(arch, 0), shape, 10), shape)])[0])

    fit = fit_to_budget(space, {"base_width": 8, "top_nodes": 5}, predict, budget_ms=budget, fraction=0.8,
                        far_over=FAR_OVER)
    net = space.build(space.sample(fit.arch, 0), shape, 10)
    ms = check_on_target(net, fast_target, shape, max_seconds=0.3, reference=reference).latency_ms
    assert 0.4 * budget <= ms <= 1.25 * budget, (fit, ms, budget)


@pytest.mark.slow
def test_a_search_with_fit_to_budget_reports_its_model(tiny_teacher, tight_latency_ms, quick_target, tmp_path):
    """Fit on (from an empty calibration), then off (warm): both report the model; the figures are for a person."""
    from compressor.errors import UserError
    from compressor.pipeline.compress import DataOptions, compress

    options = dict(data="digits", target=quick_target, cache_dir=tmp_path / "cache", latency_ms=tight_latency_ms,
                   data_options=DataOptions(image_size=16, channels=1), trials=3, family_size=2, fidelities=(1,),
                   final_epochs=1, finalists=1, tuning_trials=1, profile_seconds=0.1, export=False, seed=0)
    searches = {}
    for name, fill in (("on", 0.8), ("off", None)):
        try:
            compress(tiny_teacher, out=tmp_path / name, fill_fraction=fill, **options)
        except UserError:
            pass  # nothing feasible is a possible outcome under a tight budget; report.json is written either way
        searches[name] = json.loads((tmp_path / name / "report.json").read_text())["search"]
    on, off = searches["on"], searches["off"]
    assert on["fill_fraction"] == 0.8 and off["fill_fraction"] is None
    # Calibrated by its own first screenings, the model then sizes (or skips) every proposal.
    assert on["latency_model"]["fitted"] + on["latency_model"]["skipped"] >= 1
    assert off["latency_model"]["fitted"] == off["latency_model"]["skipped"] == 0
    assert off["latency_model"]["predicted"] == off["latency_model"]["screenings"]  # warm: every one predicted
    for search in (off, on):
        assert set(search["latency_model"]) >= {"kendall_tau", "predicted_feasible_ok", "over_budget_share"}
