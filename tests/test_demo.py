"""`compressor demo` in its smallest setting, end to end through the CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SMALLEST = ["--image-size", "16", "--teacher-epochs", "1", "--trials", "2", "--family-size", "1",
            "--fidelities", "1", "--final-epochs", "1", "--latency-fraction", "0.5", "--profile-seconds", "0.1",
            "--quiet"]


def _demo(out: Path, cache: Path, target: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compressor", "demo", "--out", str(out), "--cache-dir", str(cache),
                           "--target", target, *SMALLEST], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_demo_smallest_setting_satisfies_the_run_directory_contract(tmp_path, quick_target):
    run, cache = tmp_path / "run", tmp_path / "cache"
    proc = _demo(run, cache, quick_target)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    for key in ("target", "budgets", "teacher", "student", "search", "artifacts"):
        assert key in report, key
    for who in ("teacher", "student"):
        for key in ("test_accuracy", "params", "macs", "profile"):
            assert key in report[who], (who, key)
        assert 0.0 <= report[who]["test_accuracy"] <= 1.0
        assert report[who]["profile"]["latency_ms"]["p50"] > 0
    for key in ("strategy", "trials", "feasible", "failed", "seconds", "pareto"):
        assert key in report["search"], key
    # the student is a searched member of the default space (`all`: nago or a zoo family), or the baseline's plain
    # CNN when no searched finalist beat it
    student = report["student"]["arch"]
    if report["student"]["source"] == "baseline":
        assert student["space"] == "zoo" and student["params"]["family"] == "plain"
    else:
        assert student["space"] in ("nago", "zoo")
    assert report["budgets"]["latency_ms"] > 0 and report["budgets"]["memory_mb"] > 0
    # every family that was trained passed the latency screen (the final re-measurement may drift)
    with sqlite3.connect(run / "trials.sqlite") as db:
        screened = db.execute("SELECT latency_ms FROM trials WHERE status = 'ok'").fetchall()
    assert screened and all(lat <= report["budgets"]["latency_ms"] for (lat,) in screened)
    assert report["baselines"][0]["name"].startswith("plain CNN")
    assert {g["goal"] for g in report["goals"]} >= {">= 100x fewer parameters"}
    for name in ("report.md", "pareto.png", "trials.sqlite", "best.pt", "artifacts/artifacts.json"):
        assert (run / name).is_file(), name
    artifacts = json.loads((run / "artifacts" / "artifacts.json").read_text())["artifacts"]
    assert {a["format"] for a in artifacts} >= {"onnx", "ort", "int8"}
    teachers = list((cache / "demo").glob("teacher-*.pt"))
    assert len(teachers) == 1
    stamp = teachers[0].stat().st_mtime_ns

    # running it again reuses the cached teacher and continues (here: finishes) the same run
    again = _demo(run, cache, quick_target)
    assert again.returncode == 0, again.stderr[-2000:]
    assert teachers[0].stat().st_mtime_ns == stamp  # not retrained
    assert list((cache / "demo").glob("teacher-*.pt")) == teachers
    rerun = json.loads((run / "report.json").read_text())
    assert rerun["search"]["evaluations"] == report["search"]["evaluations"]
    assert rerun["student"]["test_accuracy"] == report["student"]["test_accuracy"]
    assert rerun["baselines"][0]["test_accuracy"] == report["baselines"][0]["test_accuracy"]
