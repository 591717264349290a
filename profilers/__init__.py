"""Profilers: how a model is measured on a target, with the runtime that will serve it.

`measure(model, target)` is the one entry point. It checks that this machine
can run the target (`targets.availability`), picks the backend registered for
`target.runtime` and returns a `Profile` (`profilers.profile`: the TypedDict
that fixes the keys every report reads). Backends are
small classes with `available()`, `measure(...)`, `describe()` and
`memory_meaning(target)`:

- `onnxruntime` (`profilers.backends.ort`): sessions configured from the target,
  adaptive timing, peak memory in a fresh child process;
- `tensorrt` (`profilers.backends.trt`): a prebuilt TensorRT 10 engine, or one built from the ONNX file,
  timed with CUDA events;
- `torch` (`profilers.backends.torch_eager`): eager PyTorch, the baseline deployment is
  compared against;
- `remote` (`profilers.backends.remote`): the same measurement on an edge device
  through `compressor agent`.

`compare(models, target, reference=0)` (`profilers.side_by_side`) measures several
models side by side in interleaved rounds and gives each one's ratio to a
reference with a bootstrap confidence interval; `latency_floor(target, shape)`
is the runtime's per-call floor there (a one-op model).

Every ONNX model passes `load_onnx_checked` (protobuf parse + `onnx.checker`)
before any runtime sees it; shared pieces are `stats` (timing loop, nearest-
rank percentiles), `onnx_model` (checked loading, static analysis, inputs)
and `host` (environment facts, CPU pinning).

Backends are imported lazily by name, and so is onnx: this package never
imports torch at module level and stays cheap to import, since the CLI's
error handling imports `ProfileError` for every command and an edge device
runs it without torch.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from profilers import stats
from profilers.errors import ProfileError, RemoteError
from profilers.profile import LatencyStats, Profile, budget_violations

__all__ = [
    "LatencyStats",
    "Profile",
    "ProfileError",
    "RemoteError",
    "available",
    "budget_violations",
    "backend",
    "compare",
    "Comparison",
    "Interval",
    "interleaves",
    "latency_floor",
    "load_onnx_checked",
    "measure",
    "memory_meaning",
    "ready_backend",
    "runtimes",
    "static_analysis",
    "stats",
]

# runtime name -> "module:Class"; imported on first use so that a runtime's
# dependencies are only needed when it is measured.
_BACKENDS = {
    "onnxruntime": "profilers.backends.ort:OnnxRuntimeBackend",
    "tensorrt": "profilers.backends.trt:TensorRTBackend",
    "torch": "profilers.backends.torch_eager:TorchBackend",
    "remote": "profilers.backends.remote:RemoteBackend",
}


def runtimes() -> list[str]:
    """The runtime names a target may use."""
    return sorted(_BACKENDS)


def backend(runtime: str):
    """An instance of the backend registered for `runtime`.

    Raises:
        ProfileError: unknown runtime, or its module is not installed.
    """
    if runtime not in _BACKENDS:
        raise ProfileError(f"unknown runtime {runtime!r}; valid: {', '.join(runtimes())}")
    module_name, class_name = _BACKENDS[runtime].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ProfileError(f"the {runtime} backend ({module_name}) is not part of this installation") from None
        raise
    return getattr(module, class_name)()


def available(runtime: str) -> tuple[bool, str]:
    """Whether this machine has what `runtime` needs (target-independent), and why not.

    Returns:
        (True, "") or (False, a one-line reason).
    """
    try:
        return backend(runtime).available()
    except ProfileError as exc:
        return False, str(exc)


def memory_meaning(target) -> str | None:
    """What `peak_memory_mb` means on `target`'s runtime, or None where that runtime does not measure it.

    Each runtime has one meaning, and figures of different meanings are never
    compared; a memory budget on a runtime that measures none cannot be judged.
    """
    return backend(target.runtime).memory_meaning(target)


def _is_torch_module(model: Any) -> bool:
    return any(cls.__module__.startswith("torch.nn") and cls.__name__ == "Module" for cls in type(model).__mro__)


def ready_backend(target, models: list):
    """The backend of `target`, after checking that this machine can run it and that it can take `models`.

    Raises:
        ProfileError: a missing model file, a target this machine cannot run, or a torch module
            given to a runtime that runs ONNX models.
    """
    from targets import availability

    for model in models:
        if isinstance(model, (str, os.PathLike)) and not os.path.exists(model):
            raise ProfileError(f"model file {str(model)!r} does not exist")
    runner = backend(target.runtime)
    ok, why = runner.available()
    if ok:
        ok, why = availability(target)
    if not ok:
        raise ProfileError(f"target {target.name!r} ({target.runtime}) cannot run here: {why}")
    if target.runtime != "torch" and any(_is_torch_module(m) for m in models):
        raise ProfileError(
            f"target {target.name!r} runs ONNX models; export the module first (compressor.models.onnx_export.export_onnx)"
        )
    return runner


def measure(
    model,
    target,
    *,
    input_shape: tuple[int, ...] | None = None,
    max_seconds: float | None = None,
    memory: bool = True,
    keep_samples: bool = False,
    label: str | None = None,
) -> Profile:
    """Profile a model on a target.

    Args:
        model: path to an .onnx file or its bytes; for `runtime = "torch"` also a
            torch.nn.Module (then `input_shape` is required); for `runtime = "tensorrt"`
            also a serialised engine file (.engine/.plan), timed as built.
        target: a `targets.Target`.
        input_shape: first input's full shape, batch included; by default from the
            model's signature with a dynamic batch axis set to `target.batch_size`.
        max_seconds: overrides the target's `measure.max_seconds`.
        memory: measure peak memory (a child process for ONNX Runtime); False
            leaves `peak_memory_mb` None and saves about half a second.
        keep_samples: add the raw per-run latencies as "latency_ms_samples".
        label: the model's name in the Profile (default: the file name).

    Returns:
        The `Profile` (`profilers.profile.Profile`).

    Raises:
        ProfileError: bad model or input shape, or a target this machine cannot run.
    """
    runner = ready_backend(target, [model])
    options: dict[str, Any] = {"input_shape": input_shape, "max_seconds": max_seconds, "memory": memory}
    # The remote backend lives in another module with the core signature; pass the
    # extras only when asked for, so it is not forced to accept them.
    if keep_samples:
        options["keep_samples"] = True
    if label is not None:
        options["label"] = label
    return runner.measure(model, target, **options)


def __getattr__(name: str):
    # side_by_side pulls in numpy and onnx (for the floor model): loaded on first use.
    if name in ("compare", "Comparison", "Interval", "interleaves", "latency_floor"):
        from profilers import side_by_side

        return getattr(side_by_side, name)
    raise AttributeError(f"module 'profilers' has no attribute {name!r}")


def load_onnx_checked(model):
    """Parse and `onnx.checker`-validate a model given as a path, bytes or ModelProto.

    Returns:
        The `onnx.ModelProto`.

    Raises:
        ProfileError: missing, truncated, non-ONNX or invalid model.
    """
    from profilers.onnx_model import load_onnx_checked as load

    return load(model)


def static_analysis(model, input_shape: tuple[int, ...] | None = None) -> dict:
    """Parameters, MACs (Conv/Gemm/MatMul) and file size of an ONNX model, without running it.

    Args:
        model: path, bytes or ModelProto.
        input_shape: first input's shape for the MAC count (dynamic dims default to 1).

    Returns:
        {"params": int, "macs": int, "model_size_mb": float, "unresolved_mac_nodes": int}
    """
    from profilers.onnx_model import static_analysis as analyse

    return analyse(model, input_shape)
