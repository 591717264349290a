"""The winner finished on the baseline's terms: which sizes are measured, a function of the network, end to end."""

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
    # A prediction that jumps at one rung (a width off the SIMD lanes) leaves that rung out, not those above it.
    jumpy = lambda arch: 2.0 if arch["base_width"] == ladder[6]["base_width"] else predict(arch)  # noqa: E731
    skipped = fill_candidates(ladder, 5, jumpy, budget_ms=1.0)
    assert 6 not in skipped and skipped[-1] == reach and len(skipped) == FILL_CANDIDATES


def test_the_fill_climbs_by_measurement_while_the_widest_size_measured_is_within():
    """The prediction picks the first session's sizes; where the widest of them measures within, with room under the
    budget, the next rungs are measured, until one is not within or is near the budget, the ladder ends or
    `FILL_SESSIONS` sessions were measured."""
    from compressor.pipeline.baselines import widest_within
    from compressor.pipeline.finish import CLIMB_BELOW, FILL_CANDIDATES, FILL_SESSIONS, climb

    def measured(latency):
        sessions = []

        def measure(indices):
            sessions.append(indices)
            return {i: ("within" if latency(i) <= 1.0 else "over", latency(i)) for i in indices}
        return sessions, measure

    # A pessimistic model put every rung above the winner's own size (5) over its reach: only 5 was asked.
    sessions, measure = measured(lambda i: 0.1 * i)  # rungs 0-10 are within
    verdicts = climb(40, [5], measure)
    assert sessions == [[5], list(range(6, 5 + FILL_CANDIDATES))]  # the rungs above 5, then one was over
    assert widest_within(verdicts) == (10, True)
    # A first session whose widest size is over, or within near the budget, is the only one.
    sessions, measure = measured(lambda i: 0.1 * i)
    assert climb(40, [5, 9, 13], measure) == {5: "within", 9: "within", 13: "over"} and len(sessions) == 1
    sessions, measure = measured(lambda i: 0.1 * i)
    assert climb(40, [5, 9], measure) == {5: "within", 9: "within"} and 0.1 * 9 >= CLIMB_BELOW
    assert len(sessions) == 1
    # The ladder's end and the number of sessions bound the climb.
    sessions, measure = measured(lambda i: 0.0)
    assert max(climb(9, [5], measure)) == 8 and len(sessions) == 2
    sessions, measure = measured(lambda i: 0.0)
    climb(100, [5], measure)
    assert len(sessions) == FILL_SESSIONS and sessions[-1][-1] == 5 + (FILL_SESSIONS - 1) * (FILL_CANDIDATES - 1)


@pytest.mark.slow
def test_a_networks_finishing_depends_on_the_network_not_on_the_proposal_that_brought_it(tmp_path):
    """One network brought by two proposals, with other member seeds and other searched knobs, is tuned and
    trained alike: finished on the baseline's terms (compressor.pipeline.finish, step 2)."""
    import torch

    from compressor.data.datasets import load_dataset
    from compressor.pipeline.baselines import knobs_of, open_tuning_store, train_final
    from compressor.pipeline.finish import tune_winner
    from compressor.search.config import kd_knobs
    from compressor.spaces import spec_from_ref

    data = load_dataset("digits", image_size=8, channels=1)
    noise = torch.Generator().manual_seed(0)
    logits = {split: torch.randn(len(getattr(data, f"{split}_y")), data.num_classes, generator=noise)
              for split in ("train", "val", "test")}
    config = SearchConfig(trials=3, fidelities=(1,), final_epochs=1)
    finishes = []
    for seed, searched in ((202, {"lr": 0.03, "kd_alpha": 0.8, "kd_tau": 6.0}),
                           (1515, {"lr": 0.2, "kd_alpha": 0.1, "kd_tau": 1.1})):
        spec = spec_from_ref("zoo:plain:widths=8-16-32", seed=seed)
        store = open_tuning_store(tmp_path / f"p{seed}.sqlite", {"winner": seed})
        tuning = tune_winner(config, spec, searched, data, logits, store=store, evaluations=3)
        evaluated = [(knobs_of(r.params), r.val_accuracy) for r in store.records()]
        store.close()
        (model, _, _), trainings = train_final(spec, data, config, logits, tuning["top"])
        finishes.append({"tuning": tuning, "evaluated": evaluated, "weights": model.state_dict(),
                         "trainings": [{k: v for k, v in t.items() if k != "seconds"} for t in trainings]})
    first, second = finishes
    # the tuning starts from the defaults, not from either proposal's knobs
    assert first["evaluated"][0][0] == {"kd": True, **{k.name: k.default for k in kd_knobs()}}
    for part in ("tuning", "evaluated", "trainings"):
        assert first[part] == second[part]
    assert all(torch.equal(first["weights"][k], second["weights"][k]) for k in first["weights"])


@pytest.mark.slow
def test_compress_fills_and_tunes_the_winner_before_its_final_training(tiny_teacher, tight_latency_ms, quick_target, tmp_path):
    from compressor.pipeline.compress import compress
    from compressor.spaces import get_space

    run = tmp_path / "run"
    result = compress(tiny_teacher, out=run, data="digits", target=quick_target, latency_ms=tight_latency_ms,
                      cache_dir=str(tmp_path / "cache"), quiet=True, trials=2, family_size=1, fidelities=(1,),
                      final_epochs=1, tuning_trials=3, finalists=1, export=False, profile_seconds=0.1,
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
    # The tuning: as many evaluations as asked; two of its knob sets trained in full (baselines.top_knobs), the
    # second kept only when ahead.
    trained = student["final_trainings"]
    assert tuning["evaluations"] == 3 and tuning["top"][0] == tuning["best"] and len(tuning["top"]) == 2
    assert [{k: t[k] for k in ("lr", "kd_alpha", "kd_tau", "kd")} for t in trained] == tuning["top"]
    [kept] = [t for t in trained if t["kept"]]
    assert kept is trained[0] or kept["val_accuracy"] > trained[0]["val_accuracy"]
    assert student["val_accuracy"] == kept["val_accuracy"]
    assert (student["lr"], student["kd_alpha"], student["kd_tau"]) == (kept["lr"], kept["kd_alpha"], kept["kd_tau"])
    assert all((run / "finalists" / f"p{student['proposal']}-f1{part}.sqlite").is_file() for part in ("", "-tuning"))


def _options():
    from compressor.pipeline.compress import DataOptions

    return DataOptions(image_size=16, channels=1)


@pytest.mark.slow
def test_the_plain_warm_start_is_the_baselines_measured_width_not_resized_nor_measured_again(tiny_teacher, tight_latency_ms, quick_target, tmp_path):
    from compressor.pipeline.compress import compress

    run = tmp_path / "run"
    result = compress(tiny_teacher, out=run, data="digits", target=quick_target, latency_ms=tight_latency_ms, space="all",
                      cache_dir=str(tmp_path / "cache"), quiet=True, trials=3, family_size=1, fidelities=(1,),
                      final_epochs=1, tuning_trials=2, finalists=1, export=False, baseline=True, profile_seconds=0.1,
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
    # Both ladders are measured in the same sessions (the widths, then the stage steps); each pick names its own.
    assert "deeper" not in baseline["width"]
    assert deeper["candidates"][0]["session"] == baseline["width"]["candidates"][0]["session"]
    assert deeper["session"] == next(c["session"] for c in deeper["candidates"] if c["arch"] == deeper["arch"])
    after = next((r for r in result.records if r.fidelity == 1 and r.proposal == plain.proposal + 1), None)
    if deeper["within"]:
        arch = space.validate_params(after.params["arch"])
        assert arch["family"] == "plain" and [arch[f"convs_{i}"] for i in (1, 2, 3)] == deeper["convs"]
        assert "-".join(str(arch[f"width_{i}"]) for i in (1, 2, 3)) == deeper["widths"]
        assert after.misc["screened"]["session"] == deeper["session"] and after.profiles == [deeper["profile"]]
