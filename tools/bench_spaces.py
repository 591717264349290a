"""Benchmark of the student spaces: what a candidate costs the search, and what each space spans.

    .venv/bin/python tools/bench_spaces.py [--points 200] [--export-points 30] [--json]

1. Per-candidate cost (the search pays it for every candidate it screens):
   sample + build + ONNX export of random students up to 1M parameters at
   1x3x32x32, median and p90 per step, both spaces side by side.
2. Span: parameters and MACs over `--points` random points of each space
   (hyperopt's own sampler, fixed seeds) at 3x32x32 / 10 classes, and how
   many fall under 100k and 1M parameters.
3. ONNX Runtime latency (1 thread, batch 1, 32 px) of each space's default
   member and of the `plain` baseline, measured side by side in this run.
4. With `--accuracy`: test accuracy on the bundled digits (32 px, plain
   cross-entropy, `compressor.train.distill.train_student` defaults, 8 epochs) of
   the default members, the adapted `mobilenet_v3_small` and torchvision's
   stock `mobilenet_v3_small` (the small-image adaptation's reason to exist).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (3, 32, 32)
NUM_CLASSES = 10
MAX_PARAMS = 1_000_000


def random_params(space, seed: int) -> dict:
    from hyperopt.pyll.stochastic import sample

    return sample(space.hyperopt_space(), rng=np.random.default_rng(seed))


def candidate_cost(space, seeds: list[int]) -> dict[str, list[float]]:
    """Seconds for sample, build and export of students under MAX_PARAMS."""
    from compressor.models.onnx_export import export_onnx
    from compressor.spaces import build_model

    times: dict[str, list[float]] = {"sample": [], "build": [], "export": [], "total": []}
    for seed in seeds:
        params = random_params(space, seed)
        t0 = time.perf_counter()
        spec = space.sample(params, seed)
        t1 = time.perf_counter()
        model = build_model(spec, SHAPE, NUM_CLASSES)
        t2 = time.perf_counter()
        if sum(p.numel() for p in model.parameters()) > MAX_PARAMS:
            continue
        export_onnx(model, (1, *SHAPE))
        t3 = time.perf_counter()
        for key, value in (("sample", t1 - t0), ("build", t2 - t1), ("export", t3 - t2), ("total", t3 - t0)):
            times[key].append(value)
    return times


def span(space, seeds: list[int]) -> tuple[list[int], list[int]]:
    from compressor.spaces import build_model
    from compressor.spaces.stats import count_macs, count_params

    params_list, macs_list = [], []
    for seed in seeds:
        model = build_model(space.sample(random_params(space, seed), seed), SHAPE, NUM_CLASSES)
        params_list.append(count_params(model))
        macs_list.append(count_macs(model, SHAPE))
    return params_list, macs_list


def ort_latency_ms(model, runs: int = 2000) -> float:
    import onnxruntime as ort

    from compressor.models.onnx_export import export_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(export_onnx(model, (1, *SHAPE)), options, providers=["CPUExecutionProvider"])
    x = {"input": np.random.default_rng(0).standard_normal((1, *SHAPE), dtype=np.float32)}
    for _ in range(200):
        session.run(None, x)
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        session.run(None, x)
        samples.append(time.perf_counter_ns() - start)
    return float(np.median(samples)) / 1e6


def pct(values, q) -> float:
    return float(np.percentile(values, q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200, help="random points per space for the span (default 200)")
    parser.add_argument("--export-points", type=int, default=30, help="random points per space for the cost (default 30)")
    parser.add_argument("--accuracy", action="store_true", help="also train default members on digits (~2 min)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from compressor.cli.console import print_table
    from compressor.spaces import SPACES, build_model, get_space, spec_from_ref
    from compressor.spaces.stats import count_macs, count_params

    from compressor.models.onnx_export import export_onnx

    # Warm-up: the first export pays for torch.onnx's imports, which a long search pays once.
    export_onnx(build_model(spec_from_ref("nago"), SHAPE, NUM_CLASSES), (1, *SHAPE))

    result: dict = {"python": platform.python_version(), "torch": torch.__version__, "cost": {}, "span": {}, "latency": {}}
    cost_rows, span_rows = [], []
    for name in SPACES:
        space = get_space(name)
        times = candidate_cost(space, list(range(args.export_points)))
        result["cost"][name] = {k: {"median_s": float(np.median(v)), "p90_s": pct(v, 90), "n": len(v)} for k, v in times.items()}
        cost_rows.append(
            (name, len(times["total"]), *(round(float(np.median(times[k])) * 1000, 1) for k in ("sample", "build", "export", "total")),
             round(pct(times["total"], 90) * 1000, 1), round(max(times["total"]) * 1000, 1))
        )
        params, macs = span(space, list(range(10_000, 10_000 + args.points)))
        result["span"][name] = {"params": params, "macs": macs}
        span_rows.append(
            (name, len(params), min(params), int(np.median(params)), int(pct(params, 90)), max(params),
             sum(p < 100_000 for p in params), sum(p < 1_000_000 for p in params),
             round(min(macs) / 1e6, 2), round(float(np.median(macs)) / 1e6, 2), round(pct(macs, 90) / 1e6, 1), round(max(macs) / 1e6, 1))
        )
    latency_rows = []
    for ref in ("nago", "zoo:plain", "zoo:mobilenet_v3_small", "zoo:resnet"):
        model = build_model(spec_from_ref(ref), SHAPE, NUM_CLASSES)
        ms = ort_latency_ms(model)
        result["latency"][ref] = {"p50_ms": ms, "params": count_params(model), "macs": count_macs(model, SHAPE)}
    plain_ms = result["latency"]["zoo:plain"]["p50_ms"]
    for ref, row in result["latency"].items():
        latency_rows.append((ref, row["params"], round(row["macs"] / 1e6, 2), round(row["p50_ms"], 3), round(row["p50_ms"] / plain_ms, 2)))

    accuracy_rows = accuracy_table(result) if args.accuracy else []

    if args.json:
        print(json.dumps(result))
        return 0
    print_table(
        f"per-candidate cost, students <= 1M params, {SHAPE} (ms)",
        ["space", "n", "sample", "build", "export", "total median", "total p90", "total max"],
        cost_rows,
    )
    print_table(
        f"span over {args.points} random points (params; MACs in millions, {SHAPE})",
        ["space", "n", "params min", "median", "p90", "max", "< 100k", "< 1M", "MMACs min", "median", "p90", "max"],
        span_rows,
    )
    print_table("ONNX Runtime, 1 thread, batch 1, 32 px: median latency", ["student", "params", "MMACs", "p50 ms", "vs plain"], latency_rows)
    if accuracy_rows:
        print_table("digits 32 px, 8 epochs cross-entropy: test accuracy", ["student", "params", "test accuracy", "train s"], accuracy_rows)
    return 0


def accuracy_table(result: dict) -> list[tuple]:
    """Train each reference student on digits; returns (student, params, accuracy, seconds) rows."""
    import torch
    import torchvision

    from compressor.data.datasets import load_dataset
    from compressor.train.distill import TrainConfig, train_student
    from compressor.spaces import build_model, spec_from_ref

    dataset = load_dataset("digits", image_size=32, channels=3)
    dataset = dataset.normalised(dataset.student_preprocessing())
    config = TrainConfig(epochs=8, seed=0)
    builders = {ref: (lambda ref=ref: build_model(spec_from_ref(ref), dataset.input_shape, dataset.num_classes))
                for ref in ("nago", "zoo:plain", "zoo:mobilenet_v3_small", "zoo:resnet")}
    builders["torchvision mobilenet_v3_small (stock)"] = lambda: torchvision.models.mobilenet_v3_small(num_classes=dataset.num_classes)
    rows = []
    result["accuracy"] = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        model = build()
        trained = train_student(model, dataset, config)
        params = sum(p.numel() for p in model.parameters())
        result["accuracy"][name] = {"test_accuracy": trained.test_accuracy, "params": params, "seconds": trained.seconds}
        rows.append((name, params, round(trained.test_accuracy, 3), round(trained.seconds, 1)))
    return rows


if __name__ == "__main__":
    sys.exit(main())
