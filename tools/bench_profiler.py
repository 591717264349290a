"""Benchmark of the ONNX Runtime profiler: agreement, stability and cost, side by side in one run.

- Agreement: for several torchvision architectures on `cpu-1t`, the profiler's
  p50 against an independent minimal loop (its own SessionOptions with the same
  settings, the same pinning, perf_counter around `session.run`, numpy median),
  alternated over rounds; the ratio is median(profiler p50) / median(loop median).
- Stability: five profiles of one model on `cpu-1t`; spread = (max - min) / median of the p50s.
- Cost: wall time of the `compressor profile` command (process start, export-free
  ONNX file, session creation, timing, memory probe) for a small CNN.

Run: .venv/bin/python tools/bench_profiler.py [--rounds 3]
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
from compressor.models.onnx_export import export_onnx  # noqa: E402
from targets import load_target  # noqa: E402

ARCHS = [("resnet18", 112), ("mobilenet_v3_small", 160), ("squeezenet1_1", 160), ("shufflenet_v2_x0_5", 160)]


def independent_p50(path: str, shape: tuple[int, ...], seconds: float = 2.0) -> float:
    """Median latency from a minimal loop: one thread, pinned to CPU 0, ORT_ENABLE_ALL."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        for _ in range(10):
            session.run(None, feed)
        samples = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(samples) < 50:
            start = time.perf_counter_ns()
            session.run(None, feed)
            samples.append((time.perf_counter_ns() - start) / 1e6)
        return float(np.median(samples))
    finally:
        os.sched_setaffinity(0, previous)


def export(arch: str, size: int, folder: Path) -> str:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=1000)
    path = folder / f"{arch}_{size}.onnx"
    export_onnx(model, (1, 3, size, size), path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for the agreement ratio")
    args = parser.parse_args()
    target = load_target("cpu-1t")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        for arch, size in ARCHS:
            path = export(arch, size, folder)
            shape = (1, 3, size, size)
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(profilers.measure(path, target, memory=False)["latency_ms"]["p50"])
                theirs.append(independent_p50(path, shape))
            ratio = statistics.median(ours) / statistics.median(theirs)
            rows.append((f"{arch} {size}px", statistics.median(ours), statistics.median(theirs), ratio,
                         "yes" if 0.95 <= ratio <= 1.05 else "NO"))
        print_table("agreement on cpu-1t: profiler p50 vs independent loop (ms, medians of rounds)",
                    ["model", "profiler p50", "loop median", "ratio", "in 0.95-1.05"], rows)

        stable_path = str(folder / "resnet18_112.onnx")
        p50s = [profilers.measure(stable_path, target, memory=False)["latency_ms"]["p50"] for _ in range(5)]
        spread = (max(p50s) - min(p50s)) / statistics.median(p50s)
        print_table("stability on cpu-1t: 5 profiles of resnet18 112px",
                    ["p50s (ms)", "median", "spread", "<= 3%"],
                    [(", ".join(f"{p:.3f}" for p in p50s), statistics.median(p50s), f"{spread:.2%}",
                      "yes" if spread <= 0.03 else "NO")])

        small = export("mobilenet_v3_small", 64, folder)
        walls, p50 = [], None
        for _ in range(3):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "compressor", "profile", small, "--target", "cpu-1t", "--json"],
                                  capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - start)


            p50 = json.loads(done.stdout)["latency_ms"]["p50"]
        print_table("cost: `compressor profile` of mobilenet_v3_small 64px on cpu-1t (whole command, memory probe included)",
                    ["p50 ms", "wall s (median of 3)", "<= 3 s"],
                    [(p50, statistics.median(walls), "yes" if statistics.median(walls) <= 3 else "NO")])


if __name__ == "__main__":
    main()
