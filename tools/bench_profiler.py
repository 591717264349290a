"""Benchmark of the ONNX Runtime profiler: agreement, stability of side-by-side ratios, and cost, in one run.

- Agreement: for 4 torchvision architectures at 64 px on `cpu-1t`, the model's
  p50 from a side-by-side measurement (`profilers.compare` of the model and the
  drift reference, interleaved) against an independent minimal loop (its own
  SessionOptions with the same settings, the same pinning, perf_counter around
  `session.run`, numpy median), alternated over rounds; the figure is
  median(side-by-side p50) / median(loop median), goal 0.95-1.05.
- Stability: 5 repetitions, one after another, of: a side-by-side measurement of
  (resnet18 64px, the drift reference `zoo:plain:widths=8-16-32`), then Olive's
  method on both (10 warm-up runs + 20 timed runs, mean) and a minimal loop on
  both. Spread = (max - min) / median over the 5 repetitions, for the raw
  model latency and for the model/reference ratio of each method (goal for
  the side-by-side ratio: <= 3%).
- Cost: wall time of the `compressor profile` command for a small CNN.

Everything runs on one thread pinned to CPU 0 (the cpu-1t target).
Run: .venv/bin/python tools/bench_profiler.py [--rounds 3] [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import profilers  # noqa: E402
from compressor.cli.console import print_table  # noqa: E402
from compressor.models.on_target import DriftReference  # noqa: E402
from compressor.models.onnx_export import export_onnx  # noqa: E402
from targets import load_target  # noqa: E402

SIZE = 64
ARCHS = ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5"]


def pinned_session(path: str | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def run_pinned(fn):
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        return fn()
    finally:
        os.sched_setaffinity(0, previous)


def _feed(session: ort.InferenceSession) -> dict:
    inp = session.get_inputs()[0]
    return {inp.name: np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)}


def _timed_runs(model: str | bytes, *, runs: int | None = None, seconds: float = 0.0) -> list[float]:
    """A fresh pinned session, 10 warm-up runs, then `runs` timed runs (or at least 50 over `seconds`), in ms."""

    def loop():
        session = pinned_session(model)
        feed = _feed(session)
        for _ in range(10):
            session.run(None, feed)
        samples = []
        end = time.perf_counter() + seconds
        while len(samples) < (runs or 50) or (runs is None and time.perf_counter() < end):
            start = time.perf_counter_ns()
            session.run(None, feed)
            samples.append((time.perf_counter_ns() - start) / 1e6)
        return samples

    return run_pinned(loop)


def minimal_loop(model: str | bytes, seconds: float = 1.0) -> float:
    """Median latency from a minimal loop: one thread, pinned to CPU 0, ORT_ENABLE_ALL, about `seconds` long."""
    return float(np.median(_timed_runs(model, seconds=seconds)))


def olive_method(model: str | bytes) -> float:
    """Olive's latency metric: 10 warm-up runs, then the mean of 20 timed runs."""
    return float(np.mean(_timed_runs(model, runs=20)))


def export(arch: str, folder: Path) -> str:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=1000)
    path = folder / f"{arch}_{SIZE}.onnx"
    export_onnx(model, (1, 3, SIZE, SIZE), path)
    return str(path)


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for the agreement ratio")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds of each side-by-side measurement")
    args = parser.parse_args()
    target = load_target("cpu-1t")
    reference = DriftReference.model_bytes(target, (3, SIZE, SIZE), 1000)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = {arch: export(arch, folder) for arch in ARCHS}
        rows = []
        for arch, path in paths.items():
            ours, theirs = [], []
            for _ in range(args.rounds):
                result = profilers.compare([path, reference], target, reference=1, seconds=args.seconds)
                ours.append(result.profiles[0]["latency_ms"]["p50"])
                theirs.append(minimal_loop(path))
            ratio = statistics.median(ours) / statistics.median(theirs)
            rows.append((f"{arch} {SIZE}px", statistics.median(ours), statistics.median(theirs), ratio,
                         "yes" if 0.95 <= ratio <= 1.05 else "NO"))
        print_table(f"agreement on cpu-1t: side-by-side p50 vs independent loop (ms, medians of {args.rounds} rounds)",
                    ["model", "side-by-side p50", "loop median", "ratio", "in 0.95-1.05"], rows)

        model = paths["resnet18"]
        figures: dict[str, list[float]] = {k: [] for k in ("sbs_raw", "sbs_ratio", "sbs_ci", "olive_raw",
                                                             "olive_ratio", "loop_raw", "loop_ratio")}
        for _ in range(5):
            result = profilers.compare([model, reference], target, reference=1, seconds=args.seconds)
            figures["sbs_raw"].append(result.latency[0].value)
            figures["sbs_ratio"].append(result.ratios[0].value)
            figures["sbs_ci"].append((result.ratios[0].high - result.ratios[0].low) / result.ratios[0].value)
            olive = olive_method(model), olive_method(reference)
            figures["olive_raw"].append(olive[0])
            figures["olive_ratio"].append(olive[0] / olive[1])
            loop = minimal_loop(model), minimal_loop(reference)
            figures["loop_raw"].append(loop[0])
            figures["loop_ratio"].append(loop[0] / loop[1])

        def row(name: str, key: str, unit: str) -> tuple:
            values = figures[key]
            return (name, ", ".join(f"{v:.3f}" for v in values), statistics.median(values), f"{spread(values):.1%}",
                    unit)

        print_table("stability on cpu-1t: 5 repetitions of resnet18 64px beside the reference (zoo:plain 8-16-32)",
                    ["method", "values", "median", "spread (max-min)/median", "unit"],
                    [row("side by side: model/reference p50 ratio", "sbs_ratio", "ratio"),
                     row("side by side: raw model p50", "sbs_raw", "ms"),
                     row("Olive (10 warm-up + 20 runs, mean): model/reference", "olive_ratio", "ratio"),
                     row("Olive: raw model mean", "olive_raw", "ms"),
                     row("minimal loop: model/reference median ratio", "loop_ratio", "ratio"),
                     row("minimal loop: raw model median", "loop_raw", "ms")])
        print(f"side-by-side 95% interval widths (relative): {', '.join(f'{w:.2%}' for w in figures['sbs_ci'])}")

        small = export("mobilenet_v3_small", folder)
        walls, p50 = [], None
        for _ in range(3):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "compressor", "profile", small, "--target", "cpu-1t", "--json"],
                                  capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - start)
            p50 = json.loads(done.stdout)["latency_ms"]["p50"]
        print_table(f"cost: `compressor profile` of mobilenet_v3_small {SIZE}px on cpu-1t (whole command, memory "
                    "probe included)", ["p50 ms", "wall s (median of 3)", "<= 3 s"],
                    [(p50, statistics.median(walls), "yes" if statistics.median(walls) <= 3 else "NO")])
    print(f"benchmark wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
