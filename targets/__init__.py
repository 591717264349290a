"""Deployment targets: what a device is, as frozen, validated data.

A `Target` says which runtime will serve the model (ONNX Runtime with its
execution providers, TensorRT, eager PyTorch, or a remote agent on an edge
board), how that runtime is configured (threads, CPU affinity, precision,
batch size, workspace), the budgets a compressed model must meet there
(latency at a stated percentile, peak memory, file size) and how to measure
(warm-up, minimum runs and seconds, time cap).

Built-in presets are TOML files in `targets/presets/`; a user's TOML file of
the same shape is accepted wherever a preset name is (`load_target`). Parsing
stops at the first bad key and names it with the valid choices
(`TargetError`). Whether a target can run on this machine is a separate,
cheap question (`availability`), answered without importing heavy runtimes.

This package imports nothing else of the project (DESIGN.md: compressor ->
profilers -> targets) and nothing heavy, so that it works on a device where
only onnxruntime is installed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from targets.errors import TargetError, UserError, first_line

__all__ = [
    "Budgets",
    "Measurement",
    "Target",
    "TargetError",
    "UserError",
    "first_line",
    "GRAPH_OPTIMIZATION_LEVELS",
    "availability",
    "list_targets",
    "load_target",
    "preset_path",
    "target_to_toml",
]

PRESETS_DIR = Path(__file__).parent / "presets"

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


@dataclass(frozen=True)
class Budgets:
    """What a deployed model must meet on the target; None means unconstrained."""

    latency_ms: float | None = None
    latency_percentile: str = "p50"
    memory_mb: float | None = None
    size_mb: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.latency_ms, self.memory_mb, self.size_mb))


@dataclass(frozen=True)
class Measurement:
    """How latency is sampled: untimed warm-up, then adaptive timing."""

    warmup_runs: int = 10
    min_runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 10.0
    max_runs: int = 100_000
    stable_rel: float = 0.01


@dataclass(frozen=True)
class Target:
    """A hardware target profile (DESIGN.md contract)."""

    name: str
    kind: str
    runtime: str
    description: str = ""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    threads: int = 0
    inter_op_threads: int = 1
    cpu_affinity: tuple[int, ...] = ()
    graph_optimization: str = "all"
    precision: str = "fp32"
    batch_size: int = 1
    workspace_mb: int = 1024
    url: str | None = None
    token_env: str | None = None
    remote_runtime: str = "onnxruntime"
    timeout_s: float = 300.0
    budgets: Budgets = field(default_factory=Budgets)
    measure: Measurement = field(default_factory=Measurement)
    source: str = ""

    @property
    def served_by(self) -> str:
        """The runtime that executes the model (on the device, for remote targets)."""
        return self.remote_runtime if self.runtime == "remote" else self.runtime

    def with_budgets(self, **overrides: float | str | None) -> "Target":
        """A copy with the given budget fields replaced (None leaves a field as it is)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        budgets = _validate_budgets({**dataclasses.asdict(self.budgets), **changes})
        return dataclasses.replace(self, budgets=budgets)

    def with_measure(self, **overrides: float | int | None) -> "Target":
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        measure = _validate_measure({**dataclasses.asdict(self.measure), **changes})
        return dataclasses.replace(self, measure=measure)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["providers"] = list(self.providers)
        data["cpu_affinity"] = list(self.cpu_affinity)
        data["provider_options"] = {k: dict(v) for k, v in self.provider_options.items()}
        return data


# `graph_optimization` values -> the name of ONNX Runtime's GraphOptimizationLevel member (a string,
# so that this package needs no onnxruntime import; backends getattr() it).
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_GRAPH_OPTS = tuple(GRAPH_OPTIMIZATION_LEVELS)

# key -> (type(s), description for messages)
_TOP_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a string"),
    "kind": ((str,), "one of " + ", ".join(KINDS)),
    "runtime": ((str,), "one of " + ", ".join(RUNTIMES)),
    "description": ((str,), "a string"),
    "providers": ((list,), "a list of execution provider names"),
    "provider_options": ((dict,), "a table of tables, one per provider"),
    "threads": ((int,), "an integer >= 0 (0: one per physical core)"),
    "inter_op_threads": ((int,), "an integer >= 1"),
    "cpu_affinity": ((list,), "a list of CPU indices"),
    "graph_optimization": ((str,), "one of " + ", ".join(_GRAPH_OPTS)),
    "precision": ((str,), "one of " + ", ".join(PRECISIONS)),
    "batch_size": ((int,), "an integer >= 1"),
    "workspace_mb": ((int,), "an integer >= 1"),
    "url": ((str,), "an http(s) URL"),
    "token_env": ((str,), "an environment variable name"),
    "remote_runtime": ((str,), "one of " + ", ".join(LOCAL_RUNTIMES)),
    "timeout_s": ((int, float), "a number > 0"),
    "budgets": ((dict,), "a table"),
    "measure": ((dict,), "a table"),
}
_BUDGET_KEYS = {
    "latency_ms": ((int, float), "a number > 0 (milliseconds)"),
    "latency_percentile": ((str,), "one of " + ", ".join(PERCENTILES)),
    "memory_mb": ((int, float), "a number > 0 (MiB)"),
    "size_mb": ((int, float), "a number > 0 (MiB)"),
}
_MEASURE_KEYS = {
    "warmup_runs": ((int,), "an integer >= 0"),
    "min_runs": ((int,), "an integer >= 1"),
    "min_seconds": ((int, float), "a number >= 0"),
    "max_seconds": ((int, float), "a number > 0"),
    "max_runs": ((int,), "an integer >= 1"),
    "stable_rel": ((int, float), "a number > 0"),
}


def _check_types(data: Mapping[str, Any], spec: Mapping[str, tuple], where: str) -> None:
    for key, value in data.items():
        if key not in spec:
            raise TargetError(
                f"{where}unknown key {key!r}; valid keys: {', '.join(sorted(spec))}"
            )
        types, what = spec[key]
        # bool is an int subclass; a budget of `true` is a typo, not 1.
        if isinstance(value, bool) or not isinstance(value, types):
            raise TargetError(f"{where}{key!r} must be {what}, got {value!r}")


def _validate_budgets(raw: Mapping[str, Any]) -> Budgets:
    raw = {k: v for k, v in raw.items() if v is not None}
    _check_types(raw, _BUDGET_KEYS, "budgets: ")
    for key in ("latency_ms", "memory_mb", "size_mb"):
        if key in raw and raw[key] <= 0:
            raise TargetError(f"budgets: {key!r} must be > 0, got {raw[key]!r}")
    if raw.get("latency_percentile", "p50") not in PERCENTILES:
        raise TargetError(
            f"budgets: 'latency_percentile' must be one of {', '.join(PERCENTILES)}, "
            f"got {raw['latency_percentile']!r}"
        )
    return Budgets(**{k: (float(v) if k != "latency_percentile" else v) for k, v in raw.items()})


def _validate_measure(raw: Mapping[str, Any]) -> Measurement:
    _check_types(raw, _MEASURE_KEYS, "measure: ")
    for key in ("warmup_runs", "min_seconds"):
        if key in raw and raw[key] < 0:
            raise TargetError(f"measure: {key!r} must be >= 0, got {raw[key]!r}")
    for key in ("min_runs", "max_seconds", "max_runs", "stable_rel"):
        if key in raw and raw[key] <= 0:
            raise TargetError(f"measure: {key!r} must be > 0, got {raw[key]!r}")
    return Measurement(**raw)


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if key in data and data[key] not in choices:
        raise TargetError(f"{key!r} must be one of {', '.join(choices)}, got {data[key]!r}")


def target_from_dict(data: Mapping[str, Any], source: str = "") -> Target:
    """Validate a parsed TOML table and build a `Target`.

    Raises:
        TargetError: at the first bad key, naming it and the valid choices.
    """
    _check_types(data, _TOP_KEYS, "")
    for key in ("name", "kind", "runtime"):
        if key not in data:
            raise TargetError(f"missing required key {key!r} ({_TOP_KEYS[key][1]})")
    _choice(data, "kind", KINDS)
    _choice(data, "runtime", RUNTIMES)
    _choice(data, "remote_runtime", LOCAL_RUNTIMES)
    _choice(data, "precision", PRECISIONS)
    _choice(data, "graph_optimization", _GRAPH_OPTS)
    providers = data.get("providers", ["CPUExecutionProvider"])
    for provider in providers:
        if provider not in PROVIDERS:
            raise TargetError(
                f"'providers': unknown execution provider {provider!r}; "
                f"valid: {', '.join(PROVIDERS)}"
            )
    if not providers:
        raise TargetError("'providers' must name at least one execution provider")
    options = data.get("provider_options", {})
    for provider, opts in options.items():
        if provider not in providers:
            raise TargetError(
                f"'provider_options': {provider!r} is not in providers ({', '.join(providers)})"
            )
        if not isinstance(opts, dict):
            raise TargetError(f"'provider_options.{provider}' must be a table")
    for key, low in (("threads", 0), ("inter_op_threads", 1), ("batch_size", 1), ("workspace_mb", 1)):
        if key in data and data[key] < low:
            raise TargetError(f"{key!r} must be >= {low}, got {data[key]!r}")
    if "timeout_s" in data and data["timeout_s"] <= 0:
        raise TargetError(f"'timeout_s' must be > 0, got {data['timeout_s']!r}")
    affinity = data.get("cpu_affinity", [])
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in affinity):
        raise TargetError(f"'cpu_affinity' must be a list of CPU indices >= 0, got {affinity!r}")
    if data["runtime"] == "remote":
        for key in ("url", "token_env"):
            if key not in data:
                raise TargetError(f"a remote target needs {key!r} ({_TOP_KEYS[key][1]})")
        if not data["url"].startswith(("http://", "https://")):
            raise TargetError(f"'url' must start with http:// or https://, got {data['url']!r}")
    fields = {k: v for k, v in data.items() if k not in ("budgets", "measure")}
    fields["providers"] = tuple(providers)
    fields["cpu_affinity"] = tuple(affinity)
    fields["provider_options"] = {k: dict(v) for k, v in options.items()}
    return Target(
        **fields,
        budgets=_validate_budgets(data.get("budgets", {})),
        measure=_validate_measure(data.get("measure", {})),
        source=source,
    )


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.toml"


def list_targets() -> list[Target]:
    """The built-in presets, sorted by name."""
    return [load_target(p.stem) for p in sorted(PRESETS_DIR.glob("*.toml"), key=lambda p: p.stem)]


def load_target(name_or_path: str | os.PathLike[str]) -> Target:
    """Load a built-in preset by name, or a user's TOML file by path.

    Raises:
        TargetError: unknown name, unreadable file, bad TOML or an invalid key.
    """
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or os.sep in text:
        if not path.is_file():
            raise TargetError(f"target file {text!r} does not exist")
        source = str(path)
    else:
        path = preset_path(text)
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
            raise TargetError(f"unknown target {text!r}; built-in targets: {names} (or a path to a .toml file)")
        source = f"preset:{text}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: not valid TOML: {exc}") from None
    try:
        return target_from_dict(data, source=source)
    except TargetError as exc:
        raise TargetError(f"{path.name}: {exc}") from None


def target_to_toml(target: Target) -> str:
    """The TOML text of a target: the preset file itself, or a rendering of the fields."""
    if target.source.startswith("preset:"):
        return preset_path(target.source.split(":", 1)[1]).read_text(encoding="utf-8")
    if target.source and Path(target.source).is_file():
        return Path(target.source).read_text(encoding="utf-8")
    return _render_toml(target)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _render_toml(target: Target) -> str:
    data = target.to_dict()
    data.pop("source")
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) or value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    for table in ("budgets", "measure"):
        entries = {k: v for k, v in data[table].items() if v is not None}
        lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in entries.items()]
    for provider, opts in data["provider_options"].items():
        lines += ["", f"[provider_options.{provider}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in opts.items()]
    return "\n".join(lines) + "\n"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _cuda_present() -> bool:
    # Cheap and import-free: the NVIDIA driver exposes this file when a GPU is usable.
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def availability(target: Target) -> tuple[bool, str]:
    """Whether this machine can measure on `target`, and why not.

    Returns:
        (True, "") or (False, a one-line reason such as "tensorrt not installed").
    """
    if target.runtime == "remote":
        if "REPLACE-WITH-DEVICE" in (target.url or ""):
            return False, "template: set url to your device's agent"
        if not os.environ.get(target.token_env or ""):
            return False, f"set ${target.token_env} to the agent's token"
        return True, ""
    if target.runtime == "tensorrt":
        if not _has_module("tensorrt"):
            return False, "tensorrt not installed (pip install 'compressor[tensorrt]')"
        if not _cuda_present():
            return False, "no CUDA GPU"
        return True, ""
    if target.runtime == "torch":
        if not _has_module("torch"):
            return False, "torch not installed"
        if "CUDAExecutionProvider" in target.providers and not _cuda_present():
            return False, "no CUDA GPU"
        return True, ""
    if not _has_module("onnxruntime"):
        return False, "onnxruntime not installed"
    import onnxruntime

    have = set(onnxruntime.get_available_providers())
    missing = [p for p in target.providers if p not in have]
    if missing:
        return False, f"{missing[0]} not available in this onnxruntime build"
    if target.cpu_affinity and hasattr(os, "sched_getaffinity"):
        allowed = os.sched_getaffinity(0)
        bad = [c for c in target.cpu_affinity if c not in allowed]
        if bad:
            return False, f"cpu {bad[0]} not available (allowed: {sorted(allowed)})"
    return True, ""
