"""The final choice: the search's best families and the baseline trained in full, the best on validation kept."""

from __future__ import annotations

import pytest

from compressor.pipeline.finalists import LATENCY_TIE, choice_text, choose, finalist_records, summary
from compressor.search.store import TrialRecord


def _record(proposal, fidelity, val, *, latency=0.01, status="ok", arch=None):
    return TrialRecord(proposal=proposal, fidelity=fidelity, status=status,
                       params={"arch": arch if arch is not None else {"width": proposal}}, seeds=[proposal],
                       val_accuracy=val, latency_ms=latency)


def test_finalists_are_ranked_by_highest_fidelity_then_validation_and_are_distinct_architectures():
    records = [
        _record(0, 1, 0.50), _record(1, 1, 0.70), _record(2, 1, 0.60), _record(3, 1, 0.90),
        _record(1, 3, 0.80), _record(2, 3, 0.85),
        _record(4, 1, 0.95, status="infeasible"),
        _record(5, 1, 0.91, arch={"width": 3}),  # the same network as proposal 3, proposed again
    ]
    picked = finalist_records(records, 3)
    # the families at 3 epochs first (best first), then the best family at 1 epoch that is not one of them
    assert [(r.proposal, r.fidelity) for r in picked] == [(2, 3), (1, 3), (5, 1)]
    assert [r.proposal for r in finalist_records(records, 5)] == [2, 1, 5, 0]  # 3 is 5's network; 4 never trained
    assert [r.proposal for r in finalist_records(records, 1)] == [2]
    assert finalist_records([_record(0, 1, 0.5, status="failed")], 2) == []
    # the baseline's network (a finalist anyway with --baseline) is passed over, at every fidelity
    baseline = lambda record: record.params["arch"] == {"width": 2}  # noqa: E731
    assert [(r.proposal, r.fidelity) for r in finalist_records(records, 3, excluded=baseline)] == [(1, 3), (5, 1), (0, 1)]


def test_budget_filling_warm_starts_are_finalists_whatever_their_rank():
    records = [
        _record(0, 1, 0.30), _record(1, 1, 0.20), _record(2, 1, 0.25),
        _record(0, 3, 0.60), _record(1, 3, 0.50), _record(2, 3, 0.55),
        _record(3, 1, 0.40), _record(3, 3, 0.70), _record(4, 1, 0.45), _record(4, 3, 0.65),
    ]
    kept = lambda record: record.proposal in (1, 2)  # noqa: E731 - the two plain warm starts
    picked = finalist_records(records, 2, kept=kept)
    # the two best families first, then each warm start left over, at its highest fidelity, in the search's order
    assert [(r.proposal, r.fidelity) for r in picked] == [(3, 3), (4, 3), (1, 3), (2, 3)]
    # a warm start among the best is not picked twice
    assert [r.proposal for r in finalist_records(records, 3, kept=lambda r: r.proposal == 3)] == [3, 4, 0]
    # one that is excluded (the baseline's network) stays out; one that never trained is no finalist
    assert [r.proposal for r in finalist_records(records, 2, kept=kept, excluded=lambda r: r.proposal == 1)] == [3, 4, 2]
    failed = [*records, _record(5, 1, None, status="infeasible")]
    assert [r.proposal for r in finalist_records(failed, 2, kept=lambda r: r.proposal == 5)] == [3, 4]


def test_finalists_tie_within_the_tolerance_goes_to_the_faster():
    records = [_record(0, 1, 0.800, latency=0.03), _record(1, 1, 0.799, latency=0.02), _record(2, 1, 0.70)]
    assert [r.proposal for r in finalist_records(records, 2, tolerance=0.002)] == [1, 0]
    assert [r.proposal for r in finalist_records(records, 2)] == [0, 1]


def _wrong(count: int, start: int = 0) -> list[int]:
    return list(range(start, start + count))


def test_the_student_is_the_best_on_validation_unless_the_baseline_is_within_one_paired_standard_error():
    # 1,000 validation images; the leader gets 100 wrong.
    leader = {"val_accuracy": 0.900, "latency_ms": 0.030, "source": "search", "val_wrong": _wrong(100)}
    # 4 more wrong, but on 100 other images each: sqrt(200 + 4) ~ 14 images, so the baseline is tied: it stays,
    # faster or slower
    close = {"val_accuracy": 0.896, "latency_ms": 0.020, "source": "baseline", "val_wrong": _wrong(104, start=100)}
    assert choose([leader, close], 1000) == 1
    assert choose([leader, {**close, "latency_ms": 0.030 * (1 + 2 * LATENCY_TIE)}], 1000) == 1
    # the same 4-image deficit where the two disagree on only those 4 images: the leader is ahead beyond the noise
    apart = {**close, "val_wrong": _wrong(104)}
    assert choose([leader, apart], 1000) == 0
    assert choose([{**leader, "latency_ms": 1.0}, apart], 1000) == 0  # however slow
    # without predictions only a one-image deficit is a tie
    assert choose([leader, {k: v for k, v in close.items() if k != "val_wrong"}], 1000) == 0
    assert choose([leader, {"val_accuracy": 0.899, "latency_ms": 0.020, "source": "baseline"}], 1000) == 1


def test_speed_decides_only_between_finalists_as_accurate_within_one_image():
    leader = {"val_accuracy": 0.900, "latency_ms": 0.030, "source": "search", "val_wrong": _wrong(100)}
    # within the paired standard error (4 of ~14 images) and much faster, but less accurate: the leader stays
    close = {"val_accuracy": 0.896, "latency_ms": 0.020, "source": "search", "val_wrong": _wrong(104, start=100)}
    assert choose([leader, close], 1000) == 0
    # one image behind and faster: as accurate, so the faster; two images behind: the leader
    level = {**close, "val_accuracy": 0.899, "val_wrong": _wrong(101, start=100)}
    assert choose([leader, level], 1000) == 1
    assert choose([leader, {**level, "val_wrong": _wrong(102, start=100)}], 1000) == 0
    # the baseline tied within the standard error stands in for the leader: a searched finalist as accurate as
    # the baseline and clearly faster replaces it, one as accurate as the leader but not the baseline does not
    baseline = {**close, "source": "baseline", "latency_ms": 0.030, "val_wrong": _wrong(104, start=300)}
    assert choose([leader, baseline, {**close, "val_wrong": _wrong(103, start=200)}], 1000) == 2
    assert choose([leader, baseline, level], 1000) == 1
    # the leader ahead of the baseline beyond the noise (3 images where they disagree on 3): a faster finalist as
    # accurate as the leader ships only if it, too, is ahead of the baseline beyond the noise
    behind = {**baseline, "val_accuracy": 0.897, "val_wrong": _wrong(103)}
    beyond = {**close, "val_accuracy": 0.899, "val_wrong": _wrong(101)}  # 2 ahead of it where they disagree on 2
    assert choose([leader, behind, beyond], 1000) == 2
    tied = {**beyond, "val_wrong": _wrong(100) + [500]}  # 2 ahead where they disagree on 4: within sqrt(4)
    assert choose([leader, behind, tied], 1000) == 0
    # as accurate and as fast (within LATENCY_TIE): the baseline, else the better on validation, then the order
    assert choose([leader, {**baseline, "val_accuracy": 0.899, "val_wrong": _wrong(101, start=300),
                            "latency_ms": 0.030 * (1 + LATENCY_TIE / 2)}], 1000) == 1
    second = {**leader, "val_accuracy": 0.899, "val_wrong": _wrong(101, start=50)}
    assert choose([second, leader], 1000) == 1
    assert choose([leader, dict(leader)], 1000) == 0
    unmeasured = {**leader, "latency_ms": None}
    assert choose([unmeasured, {**second, "latency_ms": 1.0}], 1000) == 1  # no latency counts as the slowest
    with pytest.raises(ValueError):
        choose([], 1000)


def test_only_finalists_within_the_budget_in_the_final_session_compete_unless_none_is():
    leader = {"val_accuracy": 0.950, "latency_ms": 0.030, "source": "search", "val_wrong": _wrong(50), "fits": False}
    baseline = {"val_accuracy": 0.900, "latency_ms": 0.020, "source": "baseline", "val_wrong": _wrong(100),
                "fits": True}
    slower = {"val_accuracy": 0.920, "latency_ms": 0.028, "source": "search", "val_wrong": _wrong(80), "fits": True}
    # far ahead on validation, but over the budget in the final session: the best of those within it
    assert choose([leader, baseline, slower], 1000) == 2
    assert choose([leader, baseline], 1000) == 1
    # none within: the rule of step 5 among all of them (the report then says the student misses the budget)
    assert choose([leader, {**baseline, "fits": False}], 1000) == 0
    # without a final verdict a candidate competes (a run with no budget judges every one within)
    assert choose([{k: v for k, v in leader.items() if k != "fits"}, baseline], 1000) == 0


def test_the_choice_is_said_in_one_line_naming_what_it_beat():
    searched = {"name": "searched proposal 3", "source": "search", "val_accuracy": 0.80, "val_wrong": _wrong(20)}
    baseline = {"name": "baseline plain CNN 16-32-64", "source": "baseline", "val_accuracy": 0.82,
                "val_wrong": _wrong(18, start=5)}
    finalists = [summary(searched, False, baseline), summary(baseline, True, baseline)]
    assert finalists[0]["paired"] == {"student_only": 5, "finalist_only": 3} and finalists[1]["paired"] is None
    text = choice_text(finalists, 15)
    assert text.startswith("student: baseline plain CNN 16-32-64, val 82.00% after 15 epochs")
    assert "searched proposal 3 80.00% (the student right and it wrong on 5 images, the reverse on 3)" in text
    assert "is the baseline's network" in text
    one = [{**finalists[0], "paired": {"student_only": 1, "finalist_only": 2}}, finalists[1]]
    assert "(the student right and it wrong on 1 image, the reverse on 2)" in choice_text(one, 15)
    over = [{**finalists[0], "fits": False}, finalists[1]]
    text = choice_text(over, 15)
    assert "the reverse on 3) but over the budget in the final session" in text
    assert "no searched finalist within the budget was ahead" in text
    text = choice_text([summary(searched, True), summary(baseline, False)], 15)
    assert text.startswith("student: searched proposal 3") and "chosen over baseline plain CNN 16-32-64 82.00%" in text


@pytest.mark.slow
def test_compress_trains_the_finalists_and_the_baseline_and_ships_the_best_on_validation(tiny_teacher, tight_latency_ms,
                                                                                       quick_target, tmp_path,
                                                                                       monkeypatch):
    import torch

    import compressor.train.distill as distill
    from compressor.data.datasets import load_dataset
    from compressor.models.checkpoint import load_checkpoint
    from compressor.pipeline.compress import DataOptions, compress

    trainings: list = []
    real = distill.train_student

    def counting(model, dataset, config, **kw):  # the real trainer, counted
        trainings.append(config.epochs)
        return real(model, dataset, config, **kw)

    monkeypatch.setattr(distill, "train_student", counting)
    options = dict(data="digits", target=quick_target, cache_dir=tmp_path / "cache", latency_ms=tight_latency_ms, trials=3,
                   family_size=1, fidelities=(1,), final_epochs=2, tuning_trials=1, finalists=2, profile_seconds=0.1,
                   export=False, baseline=True, data_options=DataOptions(image_size=16, channels=1))
    run = tmp_path / "run"
    result = compress(tiny_teacher, out=run, **options)
    student = result.report["student"]
    finalists = student["finalists"]
    assert [f["source"] for f in finalists] == ["search", "search", "baseline"]
    assert [f["chosen"] for f in finalists].count(True) == 1
    chosen = next(f for f in finalists if f["chosen"])
    assert chosen["source"] == student["source"] and chosen["val_accuracy"] == student["val_accuracy"]
    # each finalist that is not the student is compared with it image by image on validation, and none that
    # competed is ahead of it by more than one standard error of that paired difference
    # (compressor.pipeline.finalists). Only those the final session judged within the budget compete when any is;
    # which ones are depends on the machine's speed (a slower CPU put a finalist 17 images ahead over the budget).
    competing = [f for f in finalists if f["fits"] is not False] or finalists
    assert chosen in competing
    val_images = len(load_dataset("digits", image_size=16, channels=1).val_y)
    for entry in finalists:
        if not entry["chosen"]:
            only = entry["paired"]
            ahead = only["finalist_only"] - only["student_only"]
            assert ahead == round((entry["val_accuracy"] - student["val_accuracy"]) * val_images)
            if entry in competing:
                assert ahead <= max(1.0, (only["finalist_only"] + only["student_only"]) ** 0.5)
    for entry in finalists:
        assert 0.0 <= entry["test_accuracy"] <= 1.0 and entry["latency_ms"] > 0
    # two searched finalists and the baseline were trained for the final epochs, each once
    assert trainings.count(2) == 3
    # best.pt holds the chosen finalist's weights
    source = (run / "baseline.pt") if student["source"] == "baseline" else \
        (run / "finalists" / f"p{student['proposal']}-f{student['fidelity']}.pt")
    shipped, kept = load_checkpoint(run / "best.pt"), load_checkpoint(source)
    assert shipped.arch == kept.arch
    assert all(torch.equal(shipped.state_dict[k], kept.state_dict[k]) for k in kept.state_dict)
    label = "student (the baseline's network)" if student["source"] == "baseline" else "student (searched)"
    assert label in (run / "report.md").read_text()
    # a finished run resumed trains nothing and ships the same student
    trainings.clear()
    again = compress(tiny_teacher, out=run, resume=True, **options).report["student"]
    assert trainings == [] and again["identity"] == student["identity"]


def _plain(proposal: int, val: float, widths: tuple[int, int, int], convs: tuple[int, int, int], *, warm=False):
    """A plain-CNN record of the `all` space: a warm start's params as hyperopt writes them (nested), a proposal's
    flat, as the search stores them."""
    flat = {"family": "plain", "space": "zoo", **{f"width_{i + 1}": w for i, w in enumerate(widths)},
            **{f"convs_{i + 1}": c for i, c in enumerate(convs)}}
    record = _record(proposal, 1, val, arch={"member": flat} if warm else flat)
    if warm:
        record.misc = {"warm": True, "screened": {"session": "width"}}
    return record


def test_finalists_are_distinct_networks_in_any_form_and_once_filled(monkeypatch, tmp_path):
    """The same network written two ways is one family; a finalist that fills to an earlier finalist's network gives
    its place to the next family. The fill is a rule of this test (stage-1 width 8 doubles every width), not a
    measurement: what is under test is which families are trained."""
    from compressor.pipeline import compress
    from compressor.search.config import SearchConfig

    records = [
        _plain(2, 0.60, (16, 16, 32), (1, 2, 2), warm=True),  # the deeper plain warm start, kept whatever its rank
        _plain(5, 0.80, (16, 16, 32), (1, 2, 2)),  # the warm start's network, proposed with other knobs
        _plain(7, 0.70, (8, 8, 16), (1, 2, 2)),  # fills to that network too
        _plain(9, 0.65, (16, 32, 64), (1, 1, 1)),
        _plain(11, 0.50, (8, 16, 32), (1, 1, 2)),
    ]
    filled = []

    def fill(config, record, store, run_dir, dataset, target, reference, cache_dir):
        arch = config_space.validate_params(record.params["arch"])
        if arch["width_1"] == 8:
            arch = {**arch, **{k: 2 * arch[k] for k in ("width_1", "width_2", "width_3")}}
        filled.append(record.proposal)
        return {"member": 0, "seed": 0, "fill": {"arch": arch}}

    from compressor.spaces import get_space

    config_space = get_space("all")
    monkeypatch.setattr(compress, "_fill_finalist", fill)
    config = SearchConfig(space="all", finalists=2)
    finalists, merged = compress._distinct_finalists(config, records, 0.0, False, None, tmp_path, None, None, None,
                                                     None, True)
    # 5 first (proposal 2, the same network, is passed over); 7 fills to 5's network and 9 takes its place.
    assert [r.proposal for r in finalists] == [5, 9]
    assert merged == [{"proposal": 7, "fidelity": 1, "network_of": "proposal 5"}]
    assert filled.count(7) == 1
    config = SearchConfig(space="all", finalists=3)
    finalists, merged = compress._distinct_finalists(config, records, 0.0, False, None, tmp_path, None, None, None,
                                                     None, True)
    assert [r.proposal for r in finalists] == [5, 9, 11] and [m["proposal"] for m in merged] == [7]
