"""The ONNX Runtime backend: the runtime most CPU and edge deployments serve with.

One measurement: check and analyse the model (`onnx_model.prepare_model`), derive
the inputs from its signature, pin the measuring thread to the target's
`cpu_affinity`, create the session with the target's options (see
`memprobe.SessionSettings`), time it adaptively (`stats.time_adaptively`),
restore the affinity, measure peak memory in a fresh child process
(`memprobe.py`) so that nothing of this process (torch, earlier sessions) is
counted, and assemble the `Profile` (`profilers.profile`).

Several models side by side (`measure_interleaved`, driven by
`profilers.compare`): the same steps, but every session is created inside one
pinned block by `pinned_sessions` (the one place sessions are opened and pinned,
also used by `measure`), and the caller's loop runs them in interleaved rounds.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from targets import GRAPH_OPTIMIZATION_LEVELS
from targets.errors import first_line

from profilers import host
from profilers.backends.memprobe import SessionSettings, create_session
from profilers.errors import ProfileError
from profilers.onnx_model import PreparedModel, make_inputs, prepare_model
from profilers.profile import Profile, build_profile
from profilers.stats import Timing, time_adaptively

__all__ = ["OnnxRuntimeBackend", "OpenSessions", "pinned_sessions", "session_settings"]

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
        # The session lives only inside this block, so its memory and threads are gone before the probe runs.
        with pinned_sessions([prepared], target) as opened:
            timing = time_adaptively(opened.timed(0), target.measure, max_seconds)
        return self._profile(prepared, target, timing, opened, memory=memory, label=label, keep_samples=keep_samples)

    def measure_interleaved(self, models: list, target, *, input_shapes: list[tuple[int, ...] | None],
                            labels: list[str | None], memory: bool,
                            loop: Callable[[list[Callable[[], object]]], list[Timing]]) -> list[Profile]:
        """Profile several models whose sessions are open together, timed by `loop` (see `profilers.compare`).

        Args:
            models: paths, bytes or ModelProtos, each checked and analysed like `measure`'s.
            input_shapes: each model's first input shape, batch included (None: its own, as `measure`).
            loop: given one call per model (runs it once), returns one `Timing` per model.
        """
        prepared = [prepare_model(m, shape, target.batch_size) for m, shape in zip(models, input_shapes)]
        with pinned_sessions(prepared, target) as opened:
            timings = loop(opened.calls)
        return [self._profile(p, target, t, opened, memory=memory, label=label)
                for p, t, label in zip(prepared, timings, labels)]

    def _profile(self, prepared: PreparedModel, target, timing: Timing, opened: "OpenSessions", *, memory: bool,
                 label: str | None, keep_samples: bool = False) -> Profile:
        settings = session_settings(target)
        warnings = []
        peak = None
        if memory:
            peak, problem = self._peak_memory(prepared, settings)
            if problem:
                warnings.append(f"peak memory not measured: {problem}")
        environment = host.environment(
            **self.describe(),
            providers=opened.providers,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            graph_optimization=target.graph_optimization,
        )
        environment["affinity"] = opened.affinity
        return build_profile(
            target=target,
            runtime=self.name,
            label=label or prepared.checked.label,
            input_shape=prepared.first_shape,
            timing=timing,
            peak_memory_mb=peak,
            peak_memory_meaning=self.memory_meaning(target),
            static=prepared.static,
            environment=environment,
            warnings=warnings,
            keep_samples=keep_samples,
        )

    def _peak_memory(self, prepared: PreparedModel, settings: SessionSettings) -> tuple[float | None, str]:
        from profilers.backends.memprobe import request_for

        checked = prepared.checked
        inputs = [{"name": s.name, "dtype": s.dtype.str, "shape": list(prepared.shapes[s.name])}
                  for s in prepared.specs]
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


@dataclass(frozen=True)
class OpenSessions:
    """Sessions open on the target's pinned CPUs: `calls[i]()` runs model i once on its seeded inputs."""

    calls: list[Callable[[], object]]
    providers: list[str]
    affinity: list[int]

    def timed(self, index: int) -> Callable[[], float]:
        """A `run_once` for `stats.time_adaptively`: runs model `index` once, returns its wall time in ms."""
        call = self.calls[index]

        def run_once() -> float:
            start = time.perf_counter_ns()
            call()
            return (time.perf_counter_ns() - start) / 1e6

        return run_once


@contextlib.contextmanager
def pinned_sessions(prepared: list[PreparedModel], target) -> Iterator[OpenSessions]:
    """Open one session per model with the target's options, all inside one block pinned to its `cpu_affinity`.

    Each session runs once before the block yields, so a model that cannot run fails here with a
    `ProfileError` and no timing loop sees a first-run allocation.
    """
    settings = session_settings(target)
    with host.pinned_to(target.cpu_affinity):
        calls, providers = [], []
        for model in prepared:
            checked, shapes = model.checked, model.shapes
            try:
                session = create_session(str(checked.path) if checked.path else checked.data, settings)
            except Exception as exc:  # onnxruntime raises its own pybind exception types
                raise ProfileError(f"onnxruntime cannot load the model: {first_line(exc)}") from None
            feeds = make_inputs(model.specs, shapes)
            try:
                session.run(None, feeds)
            except Exception as exc:
                shape_text = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items())
                raise ProfileError(f"onnxruntime cannot run the model with inputs {shape_text}: "
                                   f"{first_line(exc)}") from None
            calls.append(functools.partial(session.run, None, feeds))
            providers = providers or session.get_providers()
        yield OpenSessions(calls=calls, providers=providers, affinity=host.current_affinity())
