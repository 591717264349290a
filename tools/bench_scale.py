"""Benchmark: the same search with `--workers 1` (in process) and `--workers N` (Ray), throughput and verdicts.

Runs `compressor compress` twice as fresh processes, same teacher, data,
target, budget and seed, with `--strategy random` so that both runs propose
the same architectures in the same order (a proposal's random point depends
only on the seed and its number, not on what is pending), which makes the
work identical and the screenings comparable. Prints:

- the search's wall-clock (first evaluation's start to last evaluation's end,
  from trials.sqlite) and the whole command's, their ratio, and the trained
  families per hour of search;
- how many architectures screened by both runs got the same verdict (feasible
  or over budget), and how many judged latencies agree within the
  side-by-side measurement's 95% interval: the in-process figure inside the
  interval that the parallel run's measuring actor logged for the same
  architecture (RUN_DIR/measurements.jsonl holds the intervals; the trial
  store keeps only the judged figure).

Run: .venv/bin/python tools/bench_scale.py --teacher T.pt [--workers 2] [--trials 12] [--latency-ms 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: argparse.Namespace, workers: int, out: Path) -> dict:
    command = [sys.executable, "-m", "compressor", "compress", "--teacher", args.teacher, "--data", "digits",
               "--image-size", "16", "--channels", "1", "--target", "cpu-1t", "--latency-ms", str(args.latency_ms),
               "--strategy", "random", "--trials", str(args.trials), "--family-size", "1", "--fidelities", "1,2",
               "--eta", "2", "--final-epochs", "1", "--no-export", "--seed", "0", "--workers", str(workers),
               "--out", str(out), "--cache-dir", str(out.parent / "cache"), "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"--workers {workers} failed: {done.stderr[-1500:]}")
    with sqlite3.connect(out / "trials.sqlite") as db:
        rows = db.execute("SELECT proposal, fidelity, status, archs, latency_ms, ended_at - total_s, ended_at "
                          "FROM trials ORDER BY id").fetchall()
    first = [r for r in rows if r[1] == 1]
    search_s = max(r[6] for r in rows) - min(r[5] for r in rows)
    trained = sum(r[2] != "infeasible" for r in first)
    return {"workers": workers, "command_s": wall, "search_s": search_s, "trained": trained,
            "screened": len(first), "evaluations": len(rows), "per_hour": 3600 * trained / search_s,
            "screens": {json.loads(r[3])[0]: (r[2] == "infeasible", r[4]) for r in first if r[3] != "[]"},
            "log": out / "measurements.jsonl"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--latency-ms", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        one = run(args, 1, Path(tmp) / "w1")
        many = run(args, args.workers, Path(tmp) / f"w{args.workers}")
        # The parallel run's measurements in screening order: its store's first-fidelity rows are in the order
        # they ended, the log in the order measured; map them by the judged latency they share.
        logged = {round(m["latency_ms"], 9): m for m in map(json.loads, many["log"].read_text().splitlines())
                  if m["latency_ms"] is not None}
    for r in (one, many):
        print(f"--workers {r['workers']}: search {r['search_s']:.0f} s (command {r['command_s']:.0f} s), "
              f"{r['trained']} trained / {r['screened']} screened / {r['evaluations']} evaluations, "
              f"{r['per_hour']:.0f} trained families per hour")
    print(f"wall-clock ratio (search) {one['search_s'] / many['search_s']:.2f}x, "
          f"(command) {one['command_s'] / many['command_s']:.2f}x")
    shared = sorted(set(one["screens"]) & set(many["screens"]))
    same_verdict = sum(one["screens"][a][0] == many["screens"][a][0] for a in shared)
    within = 0
    for arch in shared:
        entry = logged.get(round(many["screens"][arch][1], 9))
        low, high = entry["latency_interval"] if entry else (None, None)
        within += entry is not None and low <= one["screens"][arch][1] <= high
    print(f"{len(shared)} architectures screened by both: {same_verdict} same verdict, {within} in-process "
          "latencies inside the parallel run's 95% interval")
    for arch in shared:
        print(f"  {one['screens'][arch][1]:.4f} ms vs {many['screens'][arch][1]:.4f} ms "
              f"{'over' if one['screens'][arch][0] else 'within'}/{'over' if many['screens'][arch][0] else 'within'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
