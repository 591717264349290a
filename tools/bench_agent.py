"""Benchmark: what measuring through the remote agent costs, and whether it agrees with a local run.

Starts a real `compressor agent` on loopback (port 0, its own token), then for
models of three sizes (built with onnx.helper, no torch) alternates a local
`profilers.measure` and the same measurement through the agent (a remote
target with the same device-side settings), `--repeats` times each, and prints
medians side by side:

- wall time of one `measure` call, local vs remote, and their difference (the
  agent's overhead: health check, upload, worker process start, JSON);
- p50 latency, local vs remote, and their ratio (agreement; 1.0 is perfect).

Run: .venv/bin/python tools/bench_agent.py [--repeats 5] [--max-seconds 0.5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profilers import measure  # noqa: E402
from targets import target_from_dict  # noqa: E402

TOKEN_ENV = "COMPRESSOR_BENCH_AGENT_TOKEN"


def mlp_model(width: int, depth: int) -> bytes:
    """input[N, width] -> depth x (MatMul + Relu): width*width*depth float32 weights."""
    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "input"
    for i in range(depth):
        weights.append(numpy_helper.from_array((rng.standard_normal((width, width)) / width).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"mm{i}"]))
        out = "logits" if i == depth - 1 else f"relu{i}"
        nodes.append(helper.make_node("Relu", [f"mm{i}"], [out]))
        previous = out
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", width])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def start_agent(workdir: Path) -> tuple[subprocess.Popen, str, str]:
    token = secrets.token_urlsafe(32)
    token_file = workdir / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    process = subprocess.Popen(
        [sys.executable, "-m", "compressor", "agent", "--port", "0", "--token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    line = process.stdout.readline().decode().strip()
    if not line.startswith("listening on "):
        process.kill()
        raise SystemExit(f"agent did not start: {line!r}")
    return process, line.split()[-1], token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=0.5)
    args = parser.parse_args()

    models = {
        "mlp 64x2 (33 KiB)": mlp_model(64, 2),
        "mlp 512x4 (4 MiB)": mlp_model(512, 4),
        "mlp 1024x10 (40 MiB)": mlp_model(1024, 10),
    }
    settings = {"name": "bench", "kind": "cpu", "threads": 1,
                "measure": {"warmup_runs": 5, "min_runs": 20, "min_seconds": 0.2, "max_seconds": args.max_seconds}}
    with tempfile.TemporaryDirectory() as tmp:
        process, url, token = start_agent(Path(tmp))
        os.environ[TOKEN_ENV] = token
        try:
            local = target_from_dict({**settings, "runtime": "onnxruntime"})
            remote = target_from_dict({**settings, "runtime": "remote", "url": url, "token_env": TOKEN_ENV})
            rows = []
            for name, data in models.items():
                walls = {"local": [], "remote": []}
                p50s = {"local": [], "remote": []}
                for _ in range(args.repeats):
                    for kind, target in (("local", local), ("remote", remote)):
                        start = time.perf_counter()
                        profile = measure(data, target, memory=False)
                        walls[kind].append(time.perf_counter() - start)
                        p50s[kind].append(profile["latency_ms"]["p50"])
                wall = {k: statistics.median(v) for k, v in walls.items()}
                p50 = {k: statistics.median(v) for k, v in p50s.items()}
                rows.append((name, wall["local"], wall["remote"], wall["remote"] - wall["local"],
                             p50["local"], p50["remote"], p50["remote"] / p50["local"]))
        finally:
            process.terminate()
            process.wait(timeout=30)

    header = ("model", "wall local s", "wall remote s", "overhead s", "p50 local ms", "p50 remote ms", "p50 ratio")
    print(f"medians of {args.repeats} alternating runs, max_seconds={args.max_seconds}, memory=False, 1 thread")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [row[0]] + [f"{v:.3f}" if i < 3 else f"{v:.4f}" for i, v in enumerate(row[1:])]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
