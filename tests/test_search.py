"""The constrained search end to end on digits: store, resume after SIGKILL, failures, budgets."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compressor.errors import UserError
from compressor.search.store import RunLock, TrialRecord, TrialStore
from compressor.search.strategies import is_warm_start

ROOT = Path(__file__).resolve().parents[1]

# Small and quick: one-epoch fidelities, one member per family, FP32 ONNX export only.
# `tuning_trials=2`: the winner's and the baseline's lr/KD tunings are under test in test_finish,
# test_baseline and test_finalists; elsewhere two evaluations still give the final training its two knob sets.
FAST = dict(trials=3, family_size=1, fidelities=(1,), final_epochs=1, finalists=1, profile_seconds=0.1,
            export_formats=("onnx",), tuning_trials=2)


def _compress(teacher, out, cache, **kw):
    from compressor.pipeline.compress import DataOptions, compress

    options = {"target": "cpu-1t", **FAST, **kw}
    return compress(teacher, out=out, data="digits", cache_dir=cache,
                    data_options=DataOptions(image_size=16, channels=1), **options)


def test_store_round_trip(tmp_path):
    store = TrialStore(tmp_path / "t.sqlite")
    rec = TrialRecord(proposal=3, fidelity=1, status="infeasible", params={"arch": {"a": 1}, "lr": 0.1},
                      seeds=[7, 8], reason="latency p50 0.3 ms > budget 0.1 ms", misc={"vals": {"lr": [0.1]}},
                      archs=["{}"], profiles=[{"latency_ms": {"p50": 0.3}}], loss=2.0, latency_ms=0.3,
                      screen_s=1.5, total_s=1.6)
    store.add(rec)
    store.set_meta("fingerprint", {"x": [1, 2]})
    store.close()
    again = TrialStore(tmp_path / "t.sqlite")
    [loaded] = again.records()
    assert loaded == rec
    assert again.get_meta("fingerprint") == {"x": [1, 2]}
    with pytest.raises(ValueError):
        again.add(TrialRecord(proposal=0, fidelity=1, status="weird", params={}, seeds=[]))


def test_store_migrates_schema_1_and_refuses_a_newer_one(tmp_path):
    path = tmp_path / "t.sqlite"
    store = TrialStore(path)
    store.add(TrialRecord(proposal=0, fidelity=1, status="failed", params={}, seeds=[1], reason="RemoteError: down"))
    store.add(TrialRecord(proposal=1, fidelity=1, status="ok", params={}, seeds=[2], val_accuracy=0.5))
    store.close()
    db = sqlite3.connect(path)
    with db:  # the store as schema 1 wrote it: no retryable column, no cross-entropy
        db.execute("ALTER TABLE trials DROP COLUMN retryable")
        db.execute("ALTER TABLE trials DROP COLUMN val_loss")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.close()
    store = TrialStore(path)
    assert store.get_meta("schema_version") == 3
    store.add(TrialRecord(proposal=0, fidelity=1, status="ok", params={}, seeds=[1], retryable=True,
                          val_accuracy=0.5, val_loss=math.log(4)))
    assert [r.retryable for r in store.records()] == [False, False, True]
    # an old record has no cross-entropy and ranks by its accuracy; a new one by exp(-cross-entropy)
    assert [r.score for r in store.records()] == pytest.approx([None, 0.5, 0.25])
    store.set_meta("schema_version", 4)
    store.close()
    with pytest.raises(UserError, match="trial store schema 4, this version reads 3"):
        TrialStore(path)


def test_run_lock_refuses_second_owner(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(UserError, match="in use by another compressor process"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released: can be taken again
        pass


@pytest.mark.slow
def test_short_search_end_to_end(tiny_teacher, tight_latency_ms, quick_target, tmp_path):
    budget = dict(latency_ms=tight_latency_ms, target=quick_target)
    result = _compress(tiny_teacher, tmp_path / "run", tmp_path / "cache", trials=4, fidelities=(1, 2), eta=2,
                       baseline=True, **budget)
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())
    for key in ("target", "budgets", "teacher", "student", "search", "artifacts"):
        assert key in report
    for key in ("test_accuracy", "params", "macs", "profile"):
        assert key in report["teacher"] and key in report["student"]
    assert 0.0 <= report["student"]["test_accuracy"] <= 1.0
    assert report["student"]["profile"]["latency_ms"]["p50"] > 0
    # `trials` families trained; proposals screened over the budget do not count towards it
    assert report["search"]["trained"] == 4
    # training's share of the search's wall-clock, the strategy's proposing included, never of the evaluations' alone
    search = report["search"]
    assert search["wall_seconds"] >= search["seconds"] > 0 and 0 < search["train_fraction"] <= 1
    assert (report["search"]["feasible"] + report["search"]["infeasible"] + report["search"]["failed"]
            == report["search"]["trials"] >= 4)
    # successive halving with eta=2 over rounds of 2: each round's best by score goes on to 2 epochs, and so
    # does every warm start (the space's known-good points) whatever its score
    records = result.records
    trained = [r for r in records if r.fidelity == 1 and r.status == "ok"]
    rounds = [trained[start:start + 2] for start in range(0, len(trained), 2)]
    promoted = {max(members, key=lambda r: r.score).proposal for members in rounds}
    assert any(is_warm_start(r) for r in trained)
    warm = {r.proposal for r in trained if is_warm_start(r)}
    assert {r.proposal for r in records if r.fidelity == 2} == promoted | warm
    for rec in records:
        if rec.status == "ok":
            assert rec.latency_ms <= tight_latency_ms
    assert (run / "pareto.png").stat().st_size > 1000
    assert (run / "report.md").read_text().startswith("# Compression report")
    assert (run / "best.pt").is_file()
    artifacts = json.loads((run / "artifacts" / "artifacts.json").read_text())["artifacts"]
    assert artifacts[0]["format"] == "onnx"
    # the hand-designed baseline is measured at the same budget and reported beside the student
    [baseline] = report["baselines"]
    assert baseline["name"].startswith("plain CNN") and baseline["epochs"] == 1
    assert baseline["meets_budget"] and baseline["profile"]["latency_ms"]["p50"] > 0
    assert 0.0 <= baseline["test_accuracy"] <= 1.0
    assert f"hand-designed: {baseline['name']}" in (run / "report.md").read_text()
    # a finished run resumed does nothing more: same trials, and the stored baseline, not a retrained one
    again = _compress(tiny_teacher, run, tmp_path / "cache", trials=4, fidelities=(1, 2), eta=2, resume=True,
                      baseline=True, **budget)
    assert len(again.records) == len(records)
    assert again.report["baselines"] == report["baselines"]


@pytest.mark.slow
def test_all_infeasible_budget_is_reported_before_search(tiny_teacher, tmp_path):
    # a size budget no network meets (a latency budget this low is refused earlier, below the runtime's floor)
    with pytest.raises(UserError, match="budgets unreachable"):
        _compress(tiny_teacher, tmp_path / "run", tmp_path / "cache", size_mb=1e-6)
    with sqlite3.connect(tmp_path / "run" / "trials.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 0


@pytest.mark.slow
def test_every_trial_failing_says_why(tiny_teacher, tmp_path):
    with pytest.raises(UserError, match=r"no feasible student in 3 evaluations: 3 failed \(trial timeout: over # s\)"):
        _compress(tiny_teacher, tmp_path / "run", tmp_path / "cache", trial_timeout_s=1e-6)
    # a timeout is transient: a resumed run evaluates those families again
    with sqlite3.connect(tmp_path / "run" / "trials.sqlite") as db:
        assert db.execute("SELECT status, retryable FROM trials").fetchall() == [("failed", 1)] * 3


@pytest.mark.slow
def test_injected_failing_candidate_is_a_failed_trial(tiny_teacher, tight_latency_ms, quick_target, tmp_path,
                                                     monkeypatch):
    from compressor.spaces import SPACES, get_space

    nago = get_space("nago")

    class Broken:
        """The nago space, but every other proposal's network cannot be built."""

        name = "broken-for-test"

        def __getattr__(self, item):
            return getattr(nago, item)

        def build(self, spec, input_shape, num_classes):
            if spec.seed % 2:
                raise RuntimeError("injected build failure")
            return nago.build(spec, input_shape, num_classes)

    # registered for this test only (other tests sweep every registered space)
    monkeypatch.setitem(SPACES._items, "broken-for-test", Broken())
    result = _compress(tiny_teacher, tmp_path / "run", tmp_path / "cache", space="broken-for-test", trials=4,
                       latency_ms=tight_latency_ms, target=quick_target)
    statuses = {r.seeds[0] % 2: r.status for r in result.records}
    assert statuses.get(1) == "failed"
    failed = [r for r in result.records if r.status == "failed"]
    assert failed and all("injected build failure" in r.reason for r in failed)
    assert result.report["student"] is not None


def wait_for_trials(proc: subprocess.Popen, db_path: Path, count: int, timeout: float = 240) -> None:
    """Wait until the search run by `proc` has stored `count` evaluations; it must still be running then."""
    deadline = time.time() + timeout
    finished = 0
    while time.time() < deadline and proc.poll() is None and finished < count:
        time.sleep(0.5)
        if db_path.exists():
            try:
                with sqlite3.connect(db_path) as db:
                    finished = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
            except sqlite3.OperationalError:
                continue
    assert proc.poll() is None, "the search ended before it could be killed"


@pytest.mark.slow
def test_resume_after_sigkill_keeps_finished_trials(tiny_teacher, tight_latency_ms, quick_target, tmp_path):
    run = tmp_path / "run"
    budget = dict(latency_ms=tight_latency_ms, target=quick_target)
    code = (
        "import sys, torch; torch.set_num_threads(1); sys.path.insert(0, %r);"
        "from tests.test_search import _compress; _compress(%r, %r, %r, trials=5, **%r)"
        % (str(ROOT), tiny_teacher, str(run), str(tmp_path / "cache"), budget)
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db_path = run / "trials.sqlite"
    wait_for_trials(proc, db_path, 1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db_path) as db:
        before = db.execute("SELECT id, proposal, status, params FROM trials ORDER BY id").fetchall()
    assert len(before) >= 1
    result = _compress(tiny_teacher, run, tmp_path / "cache", trials=5, resume=True, **budget)
    with sqlite3.connect(db_path) as db:
        after = db.execute("SELECT id, proposal, status, params FROM trials ORDER BY id").fetchall()
    assert after[: len(before)] == before
    proposals = sorted({r.proposal for r in result.records})
    assert proposals == list(range(len(proposals))) and result.report["search"]["trained"] == 5
    # a different configuration on --resume is refused
    with pytest.raises(UserError, match="different configuration"):
        _compress(tiny_teacher, run, tmp_path / "cache", trials=5, resume=True, strategy="random", **budget)
