"""TensorRT 10: build a serialised engine from ONNX and run it for the parity check.

Explicit batch is the only network mode in TensorRT 10 (`create_network(0)`).
The ONNX files have a dynamic batch axis, so the engine gets one optimisation
profile covering batch 1 (latency) up to the parity batch. FP16 engines are
built from the FP32 ONNX file with the FP16 flag; INT8 engines from the QDQ
model (explicit quantisation, which replaces the deprecated calibrator API),
with FP16 allowed for layers left unquantised. Device buffers are torch CUDA
tensors, so no extra CUDA binding is needed.

Everything here needs `tensorrt` and a CUDA GPU; callers check availability
first (`compressor.export.runtime_missing`), and the module imports TensorRT
lazily so the CPU-only paths never touch it.
"""

from __future__ import annotations

import numpy as np

from compressor.errors import UserError

from compressor.export.parity import PARITY_BATCH, batches


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_bytes: bytes, input_shape: tuple[int, ...], precision: str, *, workspace_mb: int, opt_batch: int = 1) -> bytes:
    """Build and serialise a TensorRT engine.

    Args:
        onnx_bytes: the ONNX model (QDQ for INT8).
        input_shape: (C, H, W) of one sample.
        precision: "fp32", "fp16" or "int8".
        workspace_mb: builder workspace memory pool limit.
        opt_batch: the batch size the engine is tuned for.

    Returns:
        The serialised engine (plan).
    """
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    max_batch = max(PARITY_BATCH, opt_batch)
    name = network.get_input(0).name
    profile.set_shape(name, (1, *input_shape), (opt_batch, *input_shape), (max_batch, *input_shape))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(plan)


def engine_logits(plan: bytes, x: np.ndarray) -> np.ndarray:
    """Run a serialised engine on `x` (float32, NCHW) batch by batch; returns float32 logits."""
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(_logger())
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise UserError("TensorRT could not deserialise the engine it just built")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    output_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    stream = torch.cuda.Stream()
    outputs = []
    for chunk in batches(x):
        inp = torch.from_numpy(np.ascontiguousarray(chunk)).cuda()
        context.set_input_shape(input_name, tuple(inp.shape))
        out = torch.empty(tuple(context.get_tensor_shape(output_name)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(input_name, inp.data_ptr())
        context.set_tensor_address(output_name, out.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise UserError("TensorRT engine execution failed")
        stream.synchronize()
        outputs.append(out.cpu().numpy())
    return np.concatenate(outputs)
