"""The final choice: the search's best families and the baseline trained in full, the best on validation kept."""

from __future__ import annotations

import pytest

from compressor.pipeline.finalists import choice_text, choose, finalist_records, summary
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


def test_finalists_tie_within_the_tolerance_goes_to_the_faster():
    records = [_record(0, 1, 0.800, latency=0.03), _record(1, 1, 0.799, latency=0.02), _record(2, 1, 0.70)]
    assert [r.proposal for r in finalist_records(records, 2, tolerance=0.002)] == [1, 0]
    assert [r.proposal for r in finalist_records(records, 2)] == [0, 1]


def test_the_student_is_the_best_on_validation_and_a_tie_goes_to_the_faster_then_the_search_order():
    searched = {"val_accuracy": 0.86, "latency_ms": 0.020}
    runner_up = {"val_accuracy": 0.84, "latency_ms": 0.010}
    baseline = {"val_accuracy": 0.87, "latency_ms": 0.027}
    assert choose([searched, runner_up, baseline], tolerance=0.001) == 2  # the baseline is ahead on validation
    assert choose([searched, runner_up, baseline], tolerance=0.02) == 0  # a tie: the faster of the two tied
    assert choose([searched, runner_up, baseline], tolerance=0.05) == 1
    unmeasured = {"val_accuracy": 0.87, "latency_ms": None}
    assert choose([unmeasured, baseline], tolerance=0.0) == 1  # no latency counts as the slowest
    same = {"val_accuracy": 0.87, "latency_ms": 0.027}
    assert choose([same, baseline], tolerance=0.0) == 0  # equal in everything: the search's order, baseline last
    with pytest.raises(ValueError):
        choose([], tolerance=0.0)


def test_the_choice_is_said_in_one_line_naming_what_it_beat():
    searched = {"name": "searched proposal 3", "source": "search", "val_accuracy": 0.80}
    baseline = {"name": "baseline plain CNN 16-32-64", "source": "baseline", "val_accuracy": 0.82}
    finalists = [summary(searched, False), summary(baseline, True)]
    text = choice_text(finalists, 15)
    assert text.startswith("student: baseline plain CNN 16-32-64, val 82.00% after 15 epochs")
    assert "searched proposal 3 80.00%" in text and "is the baseline's network" in text
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
    # never below any finalist on validation by more than one validation image (a tie goes to the faster)
    val_images = len(load_dataset("digits", image_size=16, channels=1).val_y)
    assert all(student["val_accuracy"] >= f["val_accuracy"] - 1.0 / val_images for f in finalists)
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
