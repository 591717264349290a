"""The TensorRT 10 backend: an engine built from the ONNX file, timed with CUDA events.

Build: `trt.Builder` -> `create_network(0)` (explicit batch, the only mode in
TensorRT 10) -> `OnnxParser.parse` -> a builder config with the target's
workspace limit (`MemoryPoolType.WORKSPACE`), the precision flags (fp16 ->
FP16; int8 -> INT8 + FP16 fallback, which expects an explicitly quantised
QDQ model: no calibrator is used) and one optimisation profile whose
min/opt/max are the measured input shapes -> `build_serialized_network` ->
`Runtime.deserialize_cuda_engine`.

Run: input/output buffers are CUDA tensors allocated with PyTorch (already a
dependency of the project; it also supplies streams and events), bound with
`set_tensor_address`; one run is `execute_async_v3` on a dedicated stream,
timed between two CUDA events on that stream (GPU time of the enqueue, as
trtexec's "GPU compute"; host<->device copies are not part of it).

Memory: `peak_memory_mb` is the device memory that the engine, its execution
context and the I/O buffers take, measured as the drop of free device memory
(cudaMemGetInfo) from before deserialising to after the first run; the
engine's own activation scratch (`device_memory_size_v2`) is reported in the
environment block.
"""

from __future__ import annotations

import importlib.util

from profilers import host
from profilers.errors import ProfileError
from profilers.onnx_model import prepare_model
from profilers.profile import build_profile
from profilers.stats import time_adaptively

__all__ = ["TensorRTBackend"]

MIB = 1024 * 1024


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


class TensorRTBackend:
    """Build a TensorRT engine for the target and time it on the GPU."""

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

    def describe(self) -> dict:
        import tensorrt as trt
        import torch

        return {
            "tensorrt": trt.__version__,
            "gpu": torch.cuda.get_device_name(0),
            "cuda": torch.version.cuda,
        }

    def build_engine(self, onnx_bytes: bytes, target, shapes: dict[str, tuple[int, ...]]) -> bytes:
        """Serialised engine (plan) for `onnx_bytes` with the target's precision and workspace.

        Raises:
            ProfileError: TensorRT cannot parse or build the model.
        """
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ProfileError(f"TensorRT cannot parse the model: {errors or 'unknown error'}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, target.workspace_mb * MIB)
        if target.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if target.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            shape = shapes.get(tensor.name)
            if shape is None:
                raise ProfileError(f"no shape for TensorRT input {tensor.name!r}")
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ProfileError("TensorRT could not build an engine for this model (see the TensorRT log above)")
        return bytes(plan)

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
        """Build an engine from the ONNX model and profile it (see `profilers.measure`)."""
        import tensorrt as trt
        import torch

        prepared = prepare_model(model, input_shape, target.batch_size)
        shapes = prepared.shapes
        plan = self.build_engine(prepared.checked.data, target, shapes)

        torch.cuda.synchronize()
        free_before, _ = torch.cuda.mem_get_info()
        logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        if engine is None:
            raise ProfileError("TensorRT could not deserialise the engine it just built")
        context = engine.create_execution_context()
        generator = torch.Generator(device="cuda").manual_seed(0)
        buffers = {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                context.set_input_shape(name, shapes[name])
                if dtype.is_floating_point:
                    buffers[name] = torch.randn(shapes[name], device="cuda", generator=generator).to(dtype)
                else:
                    buffers[name] = torch.zeros(shapes[name], device="cuda", dtype=dtype)
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                shape = tuple(context.get_tensor_shape(name))
                dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
                buffers[name] = torch.empty(shape, device="cuda", dtype=dtype)
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
            activation_memory_mb=scratch / MIB,
            io_buffers_mb=sum(t.numel() * t.element_size() for t in buffers.values()) / MIB,
        )
        peak = max(0, free_before - free_after) / MIB if memory else None
        del context, engine, buffers
        return build_profile(
            target=target,
            runtime=self.name,
            label=label or prepared.checked.label,
            input_shape=prepared.first_shape,
            timing=timing,
            peak_memory_mb=peak,
            static=prepared.static,
            environment=environment,
            warnings=[],
            keep_samples=keep_samples,
        )
