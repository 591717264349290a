"""ONNX Runtime sessions as the target configures them, and the peak-memory probe.

This file imports only the standard library, numpy and onnxruntime, because
it is also run as a script (by path, `python -I .../memprobe.py`) in a fresh
child process that measures peak memory: importing the `profilers` package
there would load onnx (and, in a pipeline, torch) and pollute the baseline,
and in isolated mode `targets` would resolve to whatever copy is installed,
not this one. So the graph optimisation level arrives already resolved, as
the name of the `ort.GraphOptimizationLevel` member
(`targets.GRAPH_OPTIMIZATION_LEVELS`, resolved by `ort.session_settings`).

Session settings (see `SessionSettings`): intra-op threads as resolved from
the target (0 -> physical cores); inter-op threads; the graph optimisation
level (an `ort.GraphOptimizationLevel` member name); the execution providers
with their options. Thread spinning is left at
ONNX Runtime's default (on): with one thread there is no pool to spin, and
with several, spinning workers between back-to-back runs are what a serving
process sees under load; turning it off adds wake-up jitter to every run.

Peak memory (documented meaning): the peak resident set size of a fresh
process while it loads the model into a session and runs it, minus its
resident size right after importing numpy and onnxruntime; i.e. what the
model adds to a process (weights, arena, runtime buffers). On Linux the
kernel's high-water mark is reset after the imports (/proc/self/clear_refs)
and read from VmHWM; elsewhere `getrusage` peak is used. It is host memory:
device memory of a GPU provider is not included.

Protocol: settings as JSON on stdin ({"model", "session", "inputs", "runs"}),
the result as one JSON line on stdout ({"baseline_mb", "peak_mb", "added_mb"}).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field

import numpy as np
import onnxruntime as ort

MIB = 1024 * 1024


@dataclass(frozen=True)
class SessionSettings:
    """Everything that configures an InferenceSession for a target."""

    intra_op_threads: int
    inter_op_threads: int = 1
    graph_optimization: str = "ORT_ENABLE_ALL"
    providers: list = field(default_factory=lambda: [["CPUExecutionProvider", {}]])
    affinity: list = field(default_factory=list)


def session_options(settings: SessionSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings.graph_optimization)
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    return options


def create_session(model: str | bytes, settings: SessionSettings) -> ort.InferenceSession:
    """An InferenceSession from a path or bytes with the target's options and providers."""
    providers = [(name, {k: str(v) for k, v in opts.items()}) for name, opts in settings.providers]
    return ort.InferenceSession(model, sess_options=session_options(settings), providers=providers)


def _rss_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")  # 5: reset the peak RSS high-water mark (Linux >= 4.0)
        return True
    except OSError:
        return False


def _getrusage_peak_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def probe(request: dict) -> dict:
    """Load and run the model as `request` says; return baseline/peak/added MiB."""
    settings = SessionSettings(**request["session"])
    if settings.affinity and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(settings.affinity))
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in request["inputs"]:
        dtype = np.dtype(spec["dtype"])
        if np.issubdtype(dtype, np.floating):
            feeds[spec["name"]] = rng.standard_normal(spec["shape"]).astype(dtype)
        else:
            feeds[spec["name"]] = np.zeros(spec["shape"], dtype=dtype)
    use_hwm = _reset_peak() and _rss_kib("VmRSS") is not None
    baseline = _rss_kib("VmRSS") * 1024 if use_hwm else _getrusage_peak_bytes()
    session = create_session(request["model"], settings)
    for _ in range(max(1, int(request.get("runs", 3)))):
        session.run(None, feeds)
    peak = _rss_kib("VmHWM") * 1024 if use_hwm else _getrusage_peak_bytes()
    return {"baseline_mb": baseline / MIB, "peak_mb": peak / MIB, "added_mb": max(0, peak - baseline) / MIB}


def request_for(model_path: str, settings: SessionSettings, inputs: list[dict], runs: int) -> str:
    """The JSON a parent writes to the probe's stdin."""
    return json.dumps({"model": model_path, "session": asdict(settings), "inputs": inputs, "runs": runs})


if __name__ == "__main__":
    print(json.dumps(probe(json.loads(sys.stdin.read()))))
