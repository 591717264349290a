"""The TensorRT 10 backend: the toolkit's one engine builder, and engines timed with CUDA events.

Build (`build_engine`, also what `compressor export` ships): `trt.Builder` ->
`create_network(0)` (explicit batch, the only mode in TensorRT 10) ->
`OnnxParser.parse` -> a builder config with the workspace limit
(`MemoryPoolType.WORKSPACE`), the precision flags (fp16 -> FP16; int8 ->
INT8 + FP16 fallback, which expects an explicitly quantised QDQ model: no
calibrator is used) and one optimisation profile per input (min/opt/max
shapes: all three equal when profiling an ONNX file, a batch range for an
engine that is shipped) -> `build_serialized_network`.

Timing cache: tactic timings are the slow part of a build and depend only on
the GPU and the TensorRT version, so they are kept in
`profilers.host.cache_root()/tensorrt/<gpu>-trt<version>.timing` and loaded
into every build (`create_timing_cache`/`set_timing_cache` with
`ignore_mismatch=False`: a cache that does not match is dropped, not trusted);
the updated cache is written back after the build, atomically, because
concurrent builds share the file.

Measure: `measure` takes an ONNX file (an engine is built for the target's
shapes, as above) or a prebuilt serialised engine (`.engine`/`.plan`), which
is then timed as is, so a bundle profiles exactly the file it ships; the
engine's sha256 is in the Profile's environment block either way. Input and
output buffers are CUDA tensors allocated with PyTorch (already a dependency;
it also supplies streams and events), bound with `set_tensor_address`; one run
is `execute_async_v3` on a dedicated stream, timed between two CUDA events on
that stream (GPU time of the enqueue, as trtexec's "GPU compute";
host<->device copies are not part of it). `engine_outputs` runs an engine on
real inputs (the export's parity check).

Memory: `peak_memory_mb` is the device memory that the engine, its execution
context and the I/O buffers take, measured as the drop of free device memory
(cudaMemGetInfo) from before deserialising to after the first run; the
engine's own activation scratch (`device_memory_size_v2`) is reported in the
environment block.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from profilers import host
from profilers.errors import ProfileError
from profilers.onnx_model import prepare_model
from profilers.profile import build_profile
from profilers.stats import time_adaptively

__all__ = ["ENGINE_SUFFIXES", "TensorRTBackend", "build_engine", "engine_outputs", "is_engine_file", "timing_cache_path"]

MIB = 1024 * 1024
ENGINE_SUFFIXES = (".engine", ".plan")

# (min, opt, max) shapes of one input in an optimisation profile.
ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def timing_cache_path() -> Path:
    """The timing cache file for this machine's GPU and TensorRT version."""
    import tensorrt as trt
    import torch

    gpu = re.sub(r"[^A-Za-z0-9.]+", "-", torch.cuda.get_device_name(0)).strip("-")
    return host.cache_root() / "tensorrt" / f"{gpu}-trt{trt.__version__}.timing"


def _attach_timing_cache(config, path: Path):
    """Load the cache at `path` into `config` (an empty one if missing, corrupt or from another GPU/version)."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _save_timing_cache(config, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_bytes(bytes(cache.serialize()))
    os.replace(partial, path)


def build_engine(onnx_bytes: bytes, precision: str, *, workspace_mb: int, shapes: dict[str, ShapeRange]) -> bytes:
    """Build and serialise a TensorRT engine, reusing and updating the timing cache.

    Args:
        onnx_bytes: the ONNX model (QDQ for INT8).
        precision: "fp32", "fp16" or "int8".
        workspace_mb: builder workspace memory pool limit.
        shapes: input name -> (min, opt, max) shape of the optimisation profile.

    Returns:
        The serialised engine (plan).

    Raises:
        ProfileError: TensorRT cannot parse or build the model, or an input has no shapes.
    """
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ProfileError(f"TensorRT cannot parse the model: {errors or 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * MIB)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        if name not in shapes:
            raise ProfileError(f"no shape for TensorRT input {name!r}")
        profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(profile)
    cache_path = timing_cache_path()
    _attach_timing_cache(config, cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ProfileError("TensorRT could not build an engine for this model (see the TensorRT log above)")
    _save_timing_cache(config, cache_path)
    return bytes(plan)


def _torch_dtype(trt, torch, dtype):
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int8: torch.int8,
        trt.int32: torch.int32,
        trt.bool: torch.bool,
    }
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dtype not in table:
        raise ProfileError(f"TensorRT I/O tensor type {dtype} is not supported by this profiler")
    return table[dtype]


def _deserialize(plan: bytes):
    import tensorrt as trt

    engine = trt.Runtime(_logger()).deserialize_cuda_engine(plan)
    if engine is None:
        raise ProfileError("TensorRT could not deserialise the engine (built by another TensorRT version or GPU?)")
    return engine


def _io_names(engine) -> tuple[list[str], list[str]]:
    import tensorrt as trt

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    return inputs, [n for n in names if n not in inputs]


def _set_input_shape(context, name: str, shape: tuple[int, ...]) -> None:
    if not context.set_input_shape(name, tuple(shape)):
        raise ProfileError(f"input {name!r} shape {tuple(shape)} is outside the engine's optimisation profile")


def engine_outputs(plan: bytes, inputs: Iterable) -> Iterator:
    """Run a one-input engine on each float32 NCHW numpy batch of `inputs`; yields its first output as float32 numpy."""
    import numpy as np
    import tensorrt as trt
    import torch

    engine = _deserialize(plan)
    context = engine.create_execution_context()
    (input_name, *extra), outputs = _io_names(engine)
    if extra:
        raise ProfileError(f"the engine has {len(extra) + 1} inputs; only one-input models are run here")
    stream = torch.cuda.Stream()
    for batch in inputs:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
        _set_input_shape(context, input_name, tuple(x.shape))
        buffers = {input_name: x}
        for name in outputs:
            dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
            buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
        for name, tensor in buffers.items():
            context.set_tensor_address(name, tensor.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise ProfileError("TensorRT engine execution failed")
        stream.synchronize()
        yield buffers[outputs[0]].float().cpu().numpy()


def is_engine_file(model) -> bool:
    """Whether `model` names a serialised TensorRT engine (by its suffix) rather than an ONNX file."""
    return isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(ENGINE_SUFFIXES)


class TensorRTBackend:
    """Time a TensorRT engine on the GPU: a prebuilt one, or one built from an ONNX file for the target."""

    name = "tensorrt"

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "tensorrt not installed (pip install 'compressor[tensorrt]')"
        if importlib.util.find_spec("torch") is None:
            return False, "the tensorrt backend needs torch for CUDA buffers and events"
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU"
        return True, ""

    def memory_meaning(self, target) -> str | None:
        """What `peak_memory_mb` means on this runtime (None: not measured)."""
        return "GPU memory taken by the engine, its execution context and I/O buffers (drop in free device memory)"

    def describe(self) -> dict:
        import tensorrt as trt
        import torch

        return {
            "tensorrt": trt.__version__,
            "gpu": torch.cuda.get_device_name(0),
            "cuda": torch.version.cuda,
        }

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
    ) -> dict:
        """Profile a prebuilt engine file, or an engine built from the ONNX model (see `profilers.measure`)."""
        import tensorrt as trt
        import torch

        warnings = []
        if is_engine_file(model):
            plan = Path(model).read_bytes()
            default_label = Path(model).name
            static = {"params": None, "macs": None, "model_size_mb": len(plan) / MIB}
            warnings.append("params and MACs are not counted for a prebuilt engine; profile its ONNX file for them")
            shapes = None
        else:
            prepared = prepare_model(model, input_shape, target.batch_size)
            shapes = prepared.shapes
            plan = build_engine(
                prepared.checked.data or prepared.checked.proto.SerializeToString(),
                target.precision,
                workspace_mb=target.workspace_mb,
                shapes={name: (shape, shape, shape) for name, shape in shapes.items()},
            )
            default_label, static = prepared.checked.label, prepared.static

        torch.cuda.synchronize()
        free_before, _ = torch.cuda.mem_get_info()
        engine = _deserialize(plan)
        context = engine.create_execution_context()
        inputs, outputs = _io_names(engine)
        if shapes is None:
            shapes = {name: _engine_input_shape(engine, name, input_shape if name == inputs[0] else None, target.batch_size) for name in inputs}
        generator = torch.Generator(device="cuda").manual_seed(0)
        buffers = {}
        for name in inputs:
            dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
            _set_input_shape(context, name, shapes[name])
            if dtype.is_floating_point:
                buffers[name] = torch.randn(shapes[name], device="cuda", generator=generator).to(dtype)
            else:
                buffers[name] = torch.zeros(shapes[name], device="cuda", dtype=dtype)
        for name in outputs:
            dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
            buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)), device="cuda", dtype=dtype)
        for name, tensor in buffers.items():
            context.set_tensor_address(name, tensor.data_ptr())

        stream = torch.cuda.Stream()
        start_event = torch.cuda.Event(enable_timing=True)
        end_event = torch.cuda.Event(enable_timing=True)

        def run_once() -> float:
            start_event.record(stream)
            if not context.execute_async_v3(stream.cuda_stream):
                raise ProfileError("TensorRT execute_async_v3 failed")
            end_event.record(stream)
            end_event.synchronize()
            return start_event.elapsed_time(end_event)

        run_once()
        free_after, _ = torch.cuda.mem_get_info()
        timing = time_adaptively(run_once, target.measure, max_seconds)
        scratch = getattr(engine, "device_memory_size_v2", None)
        if scratch is None:
            scratch = engine.device_memory_size
        environment = host.environment(
            **self.describe(),
            precision=target.precision,
            workspace_mb=target.workspace_mb,
            engine_mb=len(plan) / MIB,
            engine_sha256=hashlib.sha256(plan).hexdigest(),
            activation_memory_mb=scratch / MIB,
            io_buffers_mb=sum(t.numel() * t.element_size() for t in buffers.values()) / MIB,
        )
        peak = max(0, free_before - free_after) / MIB if memory else None
        del context, engine, buffers
        return build_profile(
            target=target,
            runtime=self.name,
            label=label or default_label,
            input_shape=shapes[inputs[0]],
            timing=timing,
            peak_memory_mb=peak,
            peak_memory_meaning=self.memory_meaning(target),
            static=static,
            environment=environment,
            warnings=warnings,
            keep_samples=keep_samples,
        )


def _engine_input_shape(engine, name: str, requested: tuple[int, ...] | None, batch_size: int) -> tuple[int, ...]:
    """The shape to time a prebuilt engine's input at: `requested`, else its own with dynamic axes set to `batch_size`."""
    if requested is not None:
        return tuple(int(d) for d in requested)
    return tuple(batch_size if int(d) < 0 else int(d) for d in engine.get_tensor_shape(name))
