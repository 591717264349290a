"""The winner finished on the baseline's terms: which sizes are measured, the tuning's first points, end to end."""

from __future__ import annotations

import pytest

from compressor.search.config import SearchConfig


def _ladder(n: int) -> list[dict]:
    return [{"base_width": 8 * (i + 1)} for i in range(n)]


def test_fill_candidates_start_at_the_winner_and_stop_at_the_reach_of_the_prediction():
    from compressor.pipeline.finish import FILL_CANDIDATES, FILL_REACH, fill_candidates

    ladder = _ladder(40)
    predict = lambda arch: arch["base_width"] / 100  # noqa: E731 - latency grows along the ladder
    chosen = fill_candidates(ladder, 5, predict, budget_ms=1.0)
    assert chosen[0] == 5 and chosen == sorted(set(chosen)) and len(chosen) == FILL_CANDIDATES
    assert all(predict(ladder[i]) <= FILL_REACH * 1.0 for i in chosen[1:])
    reach = max(i for i in range(len(ladder)) if predict(ladder[i]) <= FILL_REACH)
    assert chosen[-1] == reach  # evenly spread up to the last rung in reach
    # A winner already at the top of its reach measures only itself; a cold model measures the next rungs.
    assert fill_candidates(ladder, reach, predict, budget_ms=1.0) == [reach]
    assert fill_candidates(ladder, 5, None, budget_ms=1.0) == list(range(5, 5 + FILL_CANDIDATES))
    assert fill_candidates(_ladder(7), 5, None, budget_ms=1.0) == [5, 6]


def test_a_tuning_evaluates_the_given_points_first_then_the_defaults(tmp_path):
    from compressor.pipeline.baselines import knob_point, tune
    from compressor.search.config import kd_knobs
    from compressor.search.store import TrialStore

    calls = []

    def train(knobs, epochs):
        calls.append(dict(knobs))
        return 0.5

    searched = {"lr": 0.03, "kd_alpha": 0.2, "kd_tau": 2.5}
    store = TrialStore(tmp_path / "t.sqlite")
    records = tune(SearchConfig(trials=40, fidelities=(1, 3)), store, train, evaluations=4,
                   first=[knob_point(searched), knob_point({"lr": 0.05, "kd_alpha": 0.0})])
    store.close()
    assert len(records) == len(calls) == 4
    assert calls[0]["kd"] and all(calls[0][k] == pytest.approx(v) for k, v in searched.items())
    assert not calls[1]["kd"] and calls[1]["kd_alpha"] == 0.0 and calls[1]["lr"] == pytest.approx(0.05)
    assert calls[2] == {"kd": True, **{k.name: k.default for k in kd_knobs()}}


@pytest.mark.slow
def test_compress_fills_and_tunes_the_winner_before_its_final_training(tiny_teacher, tight_latency_ms, quick_target, tmp_path):
    from compressor.pipeline.compress import compress
    from compressor.spaces import get_space

    run = tmp_path / "run"
    result = compress(tiny_teacher, out=run, data="digits", target=quick_target, latency_ms=tight_latency_ms,
                      cache_dir=str(tmp_path / "cache"), quiet=True, trials=2, family_size=1, fidelities=(1,),
                      final_epochs=1, tuning_trials=3, finalists=1, export=False,
                      data_options=_options())
    student = result.report["student"]
    fill, tuning = student["fill"], student["tuning"]
    searched = next(r for r in result.records if r.proposal == student["proposal"] and r.fidelity == 1)
    # a warm start's params are stored in hyperopt's nested form, a proposal's flat: compare the validated form
    own = get_space("all").validate_params(searched.params["arch"])
    sizes = list(fill["candidates"][0]["sizes"])
    # The winner's own size is the first candidate; the chosen one is within the budget and no smaller.
    assert {k: own[k] for k in sizes} == fill["candidates"][0]["sizes"]
    assert all(fill["arch"][k] >= own[k] for k in sizes)
    assert fill["within"] is False or next(c for c in fill["candidates"]
                                           if all(fill["arch"][k] == v for k, v in c["sizes"].items()))["verdict"] == "within"
    assert all(student["arch"]["params"][k] == fill["arch"][k] for k in sizes)  # the filled network was trained
    # The tuning: as many evaluations as asked; its best two knob sets trained in full, the second kept only when ahead.
    trained = student["final_trainings"]
    assert tuning["evaluations"] == 3 and tuning["top"][0] == tuning["best"] and len(tuning["top"]) == 2
    assert [{k: t[k] for k in ("lr", "kd_alpha", "kd_tau", "kd")} for t in trained] == tuning["top"]
    [kept] = [t for t in trained if t["kept"]]
    assert kept is trained[0] or kept["val_accuracy"] > trained[0]["val_accuracy"]
    assert student["val_accuracy"] == kept["val_accuracy"]
    assert (student["lr"], student["kd_alpha"], student["kd_tau"]) == (kept["lr"], kept["kd_alpha"], kept["kd_tau"])
    assert (run / "finalists" / f"p{student['proposal']}-f1.sqlite").is_file()


def _options():
    from compressor.pipeline.compress import DataOptions

    return DataOptions(image_size=16, channels=1)


@pytest.mark.slow
def test_the_plain_warm_start_is_the_baselines_measured_width_not_resized_nor_measured_again(tiny_teacher, tight_latency_ms, quick_target, tmp_path):
    from compressor.pipeline.compress import compress

    run = tmp_path / "run"
    result = compress(tiny_teacher, out=run, data="digits", target=quick_target, latency_ms=tight_latency_ms, space="all",
                      cache_dir=str(tmp_path / "cache"), quiet=True, trials=3, family_size=1, fidelities=(1,),
                      final_epochs=1, tuning_trials=2, finalists=1, export=False, baseline=True,
                      data_options=_options())
    from compressor.spaces import get_space

    space = get_space("all")
    baseline = result.report["baselines"][0]
    plain = next(r for r in result.records if space.validate_params(r.params["arch"]).get("family") == "plain")
    arch = space.validate_params(plain.params["arch"])
    widths = "-".join(str(arch[f"width_{i}"]) for i in (1, 2, 3))
    assert baseline["width"]["within"] and widths == baseline["width"]["widths"]
    # Screened within the budget in the width session: kept, and that verdict stands (not measured again).
    assert "fit" not in (plain.misc or {}) and plain.status == "ok"
    assert plain.misc["screened"]["session"] == baseline["width"]["session"]
    assert plain.profiles == [baseline["width"]["profile"]]
    # The deeper plain CNN of the same session is the next proposal, kept and not measured again, when within.
    from compressor.search.store import TrialStore

    store = TrialStore(run / "trials.sqlite")
    deeper = store.get_meta("plain_width")["deeper"]
    store.close()
    assert "deeper" not in baseline["width"] and deeper["session"] == baseline["width"]["session"]
    after = next((r for r in result.records if r.fidelity == 1 and r.proposal == plain.proposal + 1), None)
    if deeper["within"]:
        arch = space.validate_params(after.params["arch"])
        assert arch["family"] == "plain" and [arch[f"convs_{i}"] for i in (1, 2, 3)] == deeper["convs"]
        assert "-".join(str(arch[f"width_{i}"]) for i in (1, 2, 3)) == deeper["widths"]
        assert after.misc["screened"]["session"] == deeper["session"] and after.profiles == [deeper["profile"]]


def test_a_first_point_equal_to_the_default_is_evaluated_once(tmp_path):
    from compressor.pipeline.baselines import knob_point, tune
    from compressor.search.store import TrialStore

    calls = []
    store = TrialStore(tmp_path / "t.sqlite")
    tune(SearchConfig(trials=3, fidelities=(1,)), store, lambda knobs, epochs: calls.append(dict(knobs)) or 0.5,
         first=[knob_point()])
    store.close()
    assert len(calls) == 3 and calls[1] != calls[0]
