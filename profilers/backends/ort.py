"""The ONNX Runtime backend: the runtime most CPU and edge deployments serve with.

One measurement: check and analyse the model (`onnx_model.prepare_model`), derive
the inputs from its signature, pin the measuring thread to the target's
`cpu_affinity`, create the session with the target's options (see
`memprobe.SessionSettings`), time it adaptively (`stats.time_adaptively`),
restore the affinity, measure peak memory in a fresh child process
(`memprobe.py`) so that nothing of this process (torch, earlier sessions) is
counted, and assemble the `Profile` (`profilers.profile`).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from targets import GRAPH_OPTIMIZATION_LEVELS
from targets.errors import first_line

from profilers import host
from profilers.backends.memprobe import SessionSettings, create_session
from profilers.errors import ProfileError
from profilers.onnx_model import CheckedModel, make_inputs, prepare_model
from profilers.profile import Profile, build_profile
from profilers.stats import Timing, time_adaptively

__all__ = ["OnnxRuntimeBackend", "session_settings"]

MEMPROBE = Path(__file__).with_name("memprobe.py")
MEMPROBE_RUNS = 3
MEMPROBE_TIMEOUT_S = 300


def session_settings(target) -> SessionSettings:
    """The session settings a target asks for (threads 0 -> one per physical core)."""
    return SessionSettings(
        intra_op_threads=target.threads or host.physical_cores(),
        inter_op_threads=target.inter_op_threads,
        graph_optimization=GRAPH_OPTIMIZATION_LEVELS[target.graph_optimization],
        providers=[[p, dict(target.provider_options.get(p, {}))] for p in target.providers],
        affinity=list(target.cpu_affinity),
    )


class OnnxRuntimeBackend:
    """Measure an ONNX model with ONNX Runtime, configured as the target says."""

    name = "onnxruntime"

    def available(self) -> tuple[bool, str]:
        try:
            importlib.import_module("onnxruntime")
        except ImportError:
            return False, "onnxruntime not installed"
        return True, ""

    def memory_meaning(self, target) -> str | None:
        """What `peak_memory_mb` means on this runtime (None: not measured)."""
        return "resident memory added by a fresh process that loads the model and runs it (RSS)"

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "providers_available": ort.get_available_providers()}

    def measure(
        self,
        model,
        target,
        *,
        input_shape: tuple[int, ...] | None = None,
        max_seconds: float | None = None,
        memory: bool = True,
        keep_samples: bool = False,
        label: str | None = None,
    ) -> Profile:
        """Profile `model` (path, bytes or ModelProto) on `target`; see `profilers.measure`."""
        prepared = prepare_model(model, input_shape, target.batch_size)
        checked, specs, shapes = prepared.checked, prepared.specs, prepared.shapes
        feeds = make_inputs(specs, shapes)
        settings = session_settings(target)

        # The session lives only inside _time_session, so its memory and threads are gone before the probe runs.
        timing, providers, affinity = _time_session(checked, settings, feeds, shapes, target, max_seconds)

        warnings = []
        peak = None
        if memory:
            peak, problem = self._peak_memory(checked, settings, specs, shapes)
            if problem:
                warnings.append(f"peak memory not measured: {problem}")
        environment = host.environment(
            **self.describe(),
            providers=providers,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            graph_optimization=target.graph_optimization,
        )
        environment["affinity"] = affinity
        return build_profile(
            target=target,
            runtime=self.name,
            label=label or checked.label,
            input_shape=prepared.first_shape,
            timing=timing,
            peak_memory_mb=peak,
            static=prepared.static,
            environment=environment,
            warnings=warnings,
            keep_samples=keep_samples,
        )

    def _peak_memory(self, checked: CheckedModel, settings: SessionSettings, specs, shapes) -> tuple[float | None, str]:
        from profilers.backends.memprobe import request_for

        inputs = [{"name": s.name, "dtype": s.dtype.str, "shape": list(shapes[s.name])} for s in specs]
        with tempfile.TemporaryDirectory(prefix="compressor-memprobe-") as tmp:
            path = checked.path
            if path is None:
                path = Path(tmp) / "model.onnx"
                path.write_bytes(checked.data)
            request = request_for(str(path), settings, inputs, MEMPROBE_RUNS)
            try:
                done = subprocess.run(
                    [sys.executable, "-I", str(MEMPROBE)],
                    input=request,
                    capture_output=True,
                    text=True,
                    timeout=MEMPROBE_TIMEOUT_S,
                    env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                )
            except subprocess.TimeoutExpired:
                return None, f"the probe process took over {MEMPROBE_TIMEOUT_S} s"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"the probe process failed: {last}"
        return float(json.loads(done.stdout)["added_mb"]), ""


def _time_session(checked: CheckedModel, settings: SessionSettings, feeds: dict, shapes: dict, target,
                  max_seconds: float | None) -> tuple[Timing, list[str], list[int]]:
    """Create the session pinned to the target's CPUs, run it once, time it: (timing, providers, affinity)."""
    with host.pinned_to(target.cpu_affinity):
        try:
            session = create_session(str(checked.path) if checked.path else checked.data, settings)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ProfileError(f"onnxruntime cannot load the model: {first_line(exc)}") from None
        try:
            session.run(None, feeds)
        except Exception as exc:
            shape_text = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items())
            raise ProfileError(f"onnxruntime cannot run the model with inputs {shape_text}: {first_line(exc)}") from None

        def run_once() -> float:
            start = time.perf_counter_ns()
            session.run(None, feeds)
            return (time.perf_counter_ns() - start) / 1e6

        timing = time_adaptively(run_once, target.measure, max_seconds)
        return timing, session.get_providers(), host.current_affinity()
