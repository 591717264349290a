"""`compress` keeps its promises: resume follows the winner, a failed start leaves the directory reusable,
flags fail before any work, and checkpoints are durable (the baseline: tests/test_baseline.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import pytest

from compressor.errors import UserError

FAST = dict(trials=2, family_size=1, fidelities=(1,), final_epochs=1, finalists=1, profile_seconds=0.1,
            export_formats=("onnx",))


def _compress(teacher, out, cache, **kw):
    from compressor.pipeline.compress import DataOptions, compress

    options = {"target": "cpu-1t", **FAST, **kw}
    return compress(teacher, out=out, data="digits", cache_dir=cache,
                    data_options=DataOptions(image_size=16, channels=1), **options)


def test_bad_formats_fail_before_data_teacher_or_run_directory(tmp_path):
    with pytest.raises(UserError, match="unknown export format 'bogus'"):
        _compress("no-such-teacher.pt", tmp_path / "run", tmp_path / "cache", export_formats=("onnx", "bogus"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_unreachable_budget_leaves_the_directory_reusable(tiny_teacher, tight_latency_ms, quick_target, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(UserError, match="budgets unreachable"):
        _compress(tiny_teacher, run, tmp_path / "cache", size_mb=1e-6, target=quick_target)
    # the same command with a looser budget just works: no --resume, no "different configuration"
    result = _compress(tiny_teacher, run, tmp_path / "cache", latency_ms=tight_latency_ms, size_mb=100.0, trials=1,
                       target=quick_target)
    assert result.report["student"] is not None
    assert json.loads((run / "report.json").read_text())["budgets"]["latency_ms"] == tight_latency_ms


def test_a_relative_budget_is_given_once_and_needs_a_runtime_that_interleaves(tmp_path):
    from targets import load_target

    with pytest.raises(UserError, match="give the latency budget once"):
        _compress("no-such-teacher.pt", tmp_path / "run", tmp_path / "cache", latency_ms=1.0, latency_x_reference=3.0)
    eager_cpu = dataclasses.replace(load_target("cpu-1t"), runtime="torch")
    with pytest.raises(UserError, match="needs a drift reference"):
        _compress("no-such-teacher.pt", tmp_path / "run", tmp_path / "cache", latency_x_reference=3.0,
                  target=eager_cpu)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resume_retrains_a_stale_winner_and_refuses_other_final_epochs(tiny_teacher, tight_latency_x_ref,
                                                                       quick_target, tmp_path):
    """Stale: another family's, or the same family's trained by an older rule. Also: a budget relative to the drift reference is that multiple of the reference's start figure, and a
    resume keeps it (the stored start), whatever the machine's speed now."""
    from compressor.pipeline.baselines import FINISHING
    from compressor.search.store import TrialStore

    run, cache = tmp_path / "run", tmp_path / "cache"
    budget = dict(latency_x_reference=tight_latency_x_ref, target=quick_target)
    first = _compress(tiny_teacher, run, cache, **budget)
    budgets, start_ms = first.report["budgets"], first.report["latency_floor"]["drift_reference"]["start_ms"]
    assert budgets["latency_x_reference"] == tight_latency_x_ref
    assert budgets["latency_ms"] == pytest.approx(tight_latency_x_ref * start_ms)
    winner = first.report["student"]["proposal"]
    # The stored winner no longer matches the search's best evaluation: as after a resume with more
    # trials in which another family won.
    store = TrialStore(run / "trials.sqlite")
    final = store.get_meta("final")
    store.set_meta("final", {**final, "proposal": winner + 100, "identity": ["search", winner + 100, 1]})
    store.close()
    (run / "artifacts" / "artifacts.json").write_text("{}")  # a bundle that would be kept if not invalidated
    again = _compress(tiny_teacher, run, cache, resume=True, **budget)
    assert again.report["student"]["proposal"] == winner
    assert again.report["budgets"]["latency_ms"] == budgets["latency_ms"]
    assert again.report["artifacts"] and again.report["artifacts"][0]["format"] == "onnx"
    assert json.loads((run / "artifacts" / "artifacts.json").read_text())["artifacts"]
    # The same winner, finished on older terms (one knob set, other weights): finished again on today's, and
    # what was exported for the old weights is not kept.
    store = TrialStore(run / "trials.sqlite")
    final, finalists = store.get_meta("final"), store.get_meta("finalists")
    key = next(k for k, entry in finalists.items() if entry["proposal"] == winner)
    store.set_meta("finalists", {**finalists, key: {k: v for k, v in finalists[key].items() if k != "finishing"}})
    store.set_meta("final", {**final, "weights_sha256": "0" * 64})
    store.close()
    (run / "artifacts" / "artifacts.json").write_text("{}")
    third = _compress(tiny_teacher, run, cache, resume=True, **budget).report["student"]
    store = TrialStore(run / "trials.sqlite")
    assert store.get_meta("finalists")[key]["finishing"] == FINISHING
    store.close()
    assert third["proposal"] == winner and third["finishing"] == FINISHING
    assert third["weights_sha256"] == hashlib.sha256((run / "finalists" / f"{key}.pt").read_bytes()).hexdigest()
    assert json.loads((run / "artifacts" / "artifacts.json").read_text())["artifacts"]
    with pytest.raises(UserError, match="final_epochs differs"):
        _compress(tiny_teacher, run, cache, resume=True, final_epochs=2, **budget)
    with pytest.raises(UserError, match="latency_x_reference differs"):
        _compress(tiny_teacher, run, cache, resume=True, latency_ms=budgets["latency_ms"], target=quick_target)


def test_teacher_trained_on_another_split_is_flagged():
    from compressor.data.datasets import load_dataset
    from compressor.models.teachers import Teacher
    from compressor.pipeline.compress import _teacher_split_warning

    seed0 = load_dataset("digits", image_size=8, channels=1, seed=0)
    seed1 = load_dataset("digits", image_size=8, channels=1, seed=1)
    resized = load_dataset("digits", image_size=12, channels=1, seed=0)
    assert seed0.split_identity != seed1.split_identity
    assert seed0.split_identity == resized.split_identity  # the images' size is not the split
    teacher = Teacher(ref="t.pt", arch="x", content_hash="h", num_classes=10, params=1,
                      meta={"data_split": seed0.split_identity})
    assert _teacher_split_warning(teacher, seed0) is None
    assert _teacher_split_warning(teacher, resized) is None
    assert "may include images it was trained on" in _teacher_split_warning(teacher, seed1)
    assert _teacher_split_warning(dataclasses.replace(teacher, meta={}), seed1) is None


def test_checkpoint_is_fsynced_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    import torch

    from compressor.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    path = tmp_path / "best.pt"
    save_checkpoint(path, Checkpoint({"w": torch.ones(2)}, "torchvision:resnet18", 10, (3, 8, 8)))
    assert events == ["fsync", "replace", "fsync"]  # data, rename, then the directory entry
    assert load_checkpoint(path).state_dict["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_a_memory_budget_on_a_runtime_that_measures_no_memory_is_refused_up_front(tmp_path):
    import profilers
    from targets import load_target

    cpu = load_target("cpu-1t")
    eager_cpu = dataclasses.replace(cpu, runtime="torch")
    assert "RSS" in profilers.memory_meaning(cpu)
    assert profilers.memory_meaning(eager_cpu) is None
    with pytest.raises(UserError, match="does not measure peak memory"):
        _compress("no-such-teacher.pt", tmp_path / "run", tmp_path / "cache", memory_mb=10.0, target=eager_cpu)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_final_verdicts_and_speedup_come_from_one_side_by_side_session(tiny_teacher, tight_latency_ms, quick_target,
                                                                       tmp_path):
    run = tmp_path / "run"
    budget = dict(latency_ms=tight_latency_ms, target=quick_target)
    report = _compress(tiny_teacher, run, tmp_path / "cache", trials=1, baseline=True, export=False, **budget).report
    session = report["final_session"]
    finalists = report["student"]["finalists"]
    # every finalist is judged in the session, and the student is one within the budget whenever one is
    assert session["mode"] == "interleaved" and set(session["models"]) >= {"teacher", *(f["name"] for f in finalists)}
    assert all(f["within_budget"] in (True, False, "borderline") and f["latency_ms"] > 0 for f in finalists)
    assert report["student"]["fits"] or not any(f["fits"] for f in finalists)
    assert session["reference"]["arch"] == "zoo:plain:widths=8-16-32" and session["drift"] > 0
    for entry in (report["student"], report["baselines"][0], report["teacher"]):
        assert entry["session"] == session["id"]
        low, high = entry["budget_ratio_interval"]
        assert low <= entry["budget_ratio"] <= high
        assert entry["within_budget"] in (True, False, "borderline")
    assert report["baselines"][0]["at_same_budget"] == (report["baselines"][0]["within_budget"] is True)
    low, high = report["speedup_p50_interval"]
    assert low <= report["speedup_p50"] <= high and report["speedup_session"] == session["id"]
    assert report["latency_floor"]["one_op_ms"] > 0 and report["latency_floor"]["smallest_network"]["latency_ms"] > 0
    assert report["student"]["profile"]["peak_memory_meaning"]
    on_disk = json.loads((run / "report.json").read_text())
    assert on_disk["student"]["within_budget"] == report["student"]["within_budget"]
    assert "side-by-side session" in (run / "report.md").read_text()
    # A finished run resumed reports the stored session instead of measuring again.
    again = _compress(tiny_teacher, run, tmp_path / "cache", trials=1, baseline=True, export=False, resume=True,
                      **budget).report
    assert again["final_session"]["id"] == session["id"] and again["speedup_p50"] == report["speedup_p50"]
