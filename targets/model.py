"""What a target is: `Target`, `Budgets` and `Measurement`, with every key declared once.

Each field that is a key of a target file is declared with `setting()`: its
type (the annotation), default, meaning and constraints. Validation, error
messages, the list of valid keys and TOML rendering are all derived from
these declarations (`targets.schema`, `targets.io`), so a new key is one
field here. The one rule that spans keys (provider options only for listed
providers; a remote target needs its agent's url and token variable) is
`Target.__post_init__`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from targets.errors import TargetError
from targets.schema import declarations, expected, parse, plain, setting

KINDS = ("cpu", "gpu", "edge")
RUNTIMES = ("onnxruntime", "tensorrt", "torch", "remote")
LOCAL_RUNTIMES = ("onnxruntime", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
PERCENTILES = ("p50", "p90", "p99")
PROVIDERS = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "CoreMLExecutionProvider",
    "OpenVINOExecutionProvider",
    "DmlExecutionProvider",
    "ROCMExecutionProvider",
    "QNNExecutionProvider",
    "XnnpackExecutionProvider",
)
# `graph_optimization` values -> the name of ONNX Runtime's GraphOptimizationLevel member (a string,
# so that this package needs no onnxruntime import; backends getattr() it).
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@dataclass(frozen=True)
class Budgets:
    """What a deployed model must meet on the target; None means unconstrained."""

    latency_ms: float | None = setting(None, gt=0, doc="milliseconds")
    latency_percentile: str = setting("p50", choices=PERCENTILES, doc="the latency statistic judged")
    memory_mb: float | None = setting(None, gt=0, doc="peak memory, MiB")
    size_mb: float | None = setting(None, gt=0, doc="model file size, MiB")

    def any(self) -> bool:
        return any(v is not None for v in (self.latency_ms, self.memory_mb, self.size_mb))


@dataclass(frozen=True)
class Measurement:
    """How latency is sampled: untimed warm-up, then adaptive timing."""

    warmup_runs: int = setting(10, ge=0, doc="untimed runs before timing")
    min_runs: int = setting(50, ge=1, doc="the fewest timed runs")
    min_seconds: float = setting(1.0, ge=0, doc="the least time spent timing, seconds")
    max_seconds: float = setting(10.0, gt=0, doc="the most time spent timing, seconds")
    max_runs: int = setting(100_000, ge=1, doc="the most timed runs")
    stable_rel: float = setting(0.01, gt=0, doc="relative change of the median that counts as stable")


@dataclass(frozen=True)
class Target:
    """A hardware target profile: the runtime and its settings, the budgets, how to measure."""

    name: str = setting(doc="what the target is called")
    kind: str = setting(choices=KINDS, doc="the class of device")
    runtime: str = setting(choices=RUNTIMES, doc="what serves the model; remote: an agent on the device")
    description: str = setting("", doc="one line for listings")
    providers: tuple[str, ...] = setting(("CPUExecutionProvider",), choices=PROVIDERS, non_empty=True,
                                         doc="ONNX Runtime execution providers, in order of preference")
    provider_options: Mapping[str, Mapping[str, Any]] = setting(
        factory=dict, doc="one table of options per execution provider, named in providers")
    threads: int = setting(0, ge=0, doc="intra-op threads; 0: one per physical core")
    inter_op_threads: int = setting(1, ge=1, doc="inter-op threads")
    cpu_affinity: tuple[int, ...] = setting((), ge=0, doc="CPU indices to pin the measuring process to")
    graph_optimization: str = setting("all", choices=tuple(GRAPH_OPTIMIZATION_LEVELS),
                                      doc="ONNX Runtime graph optimisation level")
    precision: str = setting("fp32", choices=PRECISIONS, doc="the precision the runtime may use")
    batch_size: int = setting(1, ge=1, doc="inputs per inference")
    workspace_mb: int = setting(1024, ge=1, doc="TensorRT builder workspace, MiB")
    url: str | None = setting(None, prefixes=("http://", "https://"), doc="the agent's address, remote targets")
    token_env: str | None = setting(None, doc="environment variable holding the agent's token, remote targets")
    remote_runtime: str = setting("onnxruntime", choices=LOCAL_RUNTIMES, doc="what serves the model on the device")
    timeout_s: float = setting(300.0, gt=0, doc="seconds one remote request may take")
    budgets: Budgets = setting(factory=Budgets, doc="latency, memory and file-size limits")
    measure: Measurement = setting(factory=Measurement, doc="how latency is sampled")
    # Where the target was loaded from ("preset:NAME", a path, "agent"); not a key of the file.
    source: str = ""

    def __post_init__(self) -> None:
        for provider in self.provider_options:
            if provider not in self.providers:
                raise TargetError(
                    f"'provider_options': {provider!r} is not in providers ({', '.join(self.providers)})"
                )
        if self.runtime == "remote":
            keys = declarations(Target)
            for key in ("url", "token_env"):
                if getattr(self, key) is None:
                    raise TargetError(f"a remote target needs {key!r}: {expected(keys[key])}")

    @property
    def served_by(self) -> str:
        """The runtime that executes the model (on the device, for remote targets)."""
        return self.remote_runtime if self.runtime == "remote" else self.runtime

    def with_budgets(self, **overrides: float | str | None) -> "Target":
        """A copy with the given budget fields replaced (None leaves a field as it is)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        budgets = parse(Budgets, {**dataclasses.asdict(self.budgets), **changes}, "budgets: ")
        return dataclasses.replace(self, budgets=budgets)

    def with_measure(self, **overrides: float | int | None) -> "Target":
        """A copy with the given measurement fields replaced (None leaves a field as it is)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        measure = parse(Measurement, {**dataclasses.asdict(self.measure), **changes}, "measure: ")
        return dataclasses.replace(self, measure=measure)

    def to_dict(self) -> dict[str, Any]:
        """The target as JSON-ready dicts and lists, `source` included."""
        return plain(self)
