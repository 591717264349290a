"""ONNX files as untrusted input: checked loading, static analysis, input signatures.

Every ONNX model a profiler runs passes `load_onnx_checked` first: the bytes
are parsed as a protobuf (data, never code) and `onnx.checker` validates the
graph (with strict shape inference for files up to `FULL_CHECK_MAX_MB`), so a
missing, truncated, non-ONNX or malformed file becomes a one-line
`ProfileError` before any runtime sees it.

Static analysis counts what the file carries: parameters are the elements of
its initializers except int64 tensors (shapes, axes and indices, not
weights); MACs are those of Conv, ConvTranspose, Gemm and MatMul (and their
quantised forms) from ONNX shape inference, for the given input shape (dynamic
dimensions default to 1); control-flow subgraphs are not counted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from targets.errors import first_line

from profilers.errors import ProfileError

__all__ = [
    "CheckedModel",
    "InputSpec",
    "check_model_source",
    "input_specs",
    "load_onnx_checked",
    "make_inputs",
    "PreparedModel",
    "prepare_model",
    "resolve_input_shapes",
    "static_analysis",
]

FULL_CHECK_MAX_MB = 256
MIB = 1024 * 1024


@dataclass(frozen=True)
class CheckedModel:
    """A model that passed the checker, with where it came from."""

    proto: onnx.ModelProto
    path: Path | None
    data: bytes | None
    label: str
    size_bytes: int


@dataclass(frozen=True)
class InputSpec:
    """One graph input: dims are ints or None (dynamic)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...]


def check_model_source(model: str | os.PathLike | bytes | onnx.ModelProto) -> CheckedModel:
    """Read and check a model given as a path, bytes or a ModelProto.

    Raises:
        ProfileError: missing, unreadable, non-ONNX, truncated or invalid model.
    """
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        return CheckedModel(_checked(_parse(data, "model")), None, data, "<in-memory model>", len(data))
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        return CheckedModel(_checked(_parse(data, "model bytes")), None, data, "<onnx bytes>", len(data))
    if not isinstance(model, (str, os.PathLike)):
        raise ProfileError(f"expected an ONNX file path or bytes, got {type(model).__name__}")
    path = Path(model)
    if not path.exists():
        raise ProfileError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise ProfileError(f"{str(path)!r} is not a file; give an .onnx file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    proto = _checked(_parse(data, repr(str(path))), path)
    return CheckedModel(proto, path, data, path.name, len(data))


def load_onnx_checked(model: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Parse and validate an ONNX model without running anything.

    Args:
        model: path to an .onnx file, its bytes, or a ModelProto.

    Returns:
        The checked `onnx.ModelProto`.

    Raises:
        ProfileError: missing, unreadable, non-ONNX, truncated or invalid model.
    """
    return check_model_source(model).proto


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    if not data:
        raise ProfileError(f"{what} is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ProfileError(f"{what} is not an ONNX model (protobuf parse failed; truncated or another format?)") from None
    # Protobuf parsing is lenient: arbitrary bytes can decode to an empty message.
    if not proto.HasField("graph") or not proto.opset_import or not proto.graph.output:
        raise ProfileError(f"{what} is not an ONNX model (no graph, opset or outputs; truncated or another format?)")
    return proto


def _checked(proto: onnx.ModelProto, path: Path | None = None) -> onnx.ModelProto:
    uses_external = any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer
    )
    try:
        if uses_external and path is not None:
            # The path form lets the checker verify external files stay inside the model's folder.
            onnx.checker.check_model(str(path))
        else:
            full = proto.ByteSize() <= FULL_CHECK_MAX_MB * MIB
            onnx.checker.check_model(proto, full_check=full)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ProfileError(f"model fails onnx.checker: {first_line(exc)}") from None
    if not _graph_inputs(proto):
        raise ProfileError("model has no inputs to feed; nothing to measure")
    return proto


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def input_specs(proto: onnx.ModelProto) -> list[InputSpec]:
    """The graph's real inputs (initializers excluded), with dtypes and dims."""
    specs = []
    for value in _graph_inputs(proto):
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ProfileError(f"input {value.name!r} is not a tensor; only tensor inputs can be generated")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        specs.append(InputSpec(value.name, dtype, dims))
    return specs


def _fmt_dims(dims: tuple[int | None, ...]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def resolve_input_shapes(
    specs: list[InputSpec], input_shape: tuple[int, ...] | None, batch_size: int
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for every input.

    `input_shape` (batch included) sets the first input's shape; otherwise a
    dynamic first axis takes `batch_size`. Any other dynamic axis needs an
    explicit shape.

    Raises:
        ProfileError: wrong rank, a shape that contradicts a fixed dimension, or a
            dynamic non-batch axis with no shape given.
    """
    shapes = {}
    for index, spec in enumerate(specs):
        if index == 0 and input_shape is not None:
            given = tuple(int(d) for d in input_shape)
            if len(given) != len(spec.dims):
                raise ProfileError(
                    f"--input-shape {_fmt_dims(given)} has rank {len(given)} but model input {spec.name!r} "
                    f"has rank {len(spec.dims)} ({_fmt_dims(spec.dims)})"
                )
            for axis, (want, got) in enumerate(zip(spec.dims, given)):
                if want is not None and want != got:
                    raise ProfileError(
                        f"--input-shape {_fmt_dims(given)} contradicts model input {spec.name!r} "
                        f"({_fmt_dims(spec.dims)}) at axis {axis}"
                    )
            shapes[spec.name] = given
            continue
        dims = list(spec.dims)
        if dims and dims[0] is None:
            dims[0] = batch_size
        if None in dims:
            hint = "give --input-shape" if index == 0 else "only the first input's shape can be given"
            raise ProfileError(
                f"model input {spec.name!r} ({_fmt_dims(spec.dims)}) has a dynamic dimension "
                f"at axis {dims.index(None)}; {hint}"
            )
        shapes[spec.name] = tuple(dims)
    return shapes


@dataclass(frozen=True)
class PreparedModel:
    """What every ONNX backend starts from: the checked model, concrete input shapes, static analysis."""

    checked: CheckedModel
    specs: list[InputSpec]
    shapes: dict[str, tuple[int, ...]]
    static: dict

    @property
    def first_shape(self) -> tuple[int, ...]:
        return self.shapes[self.specs[0].name]


def prepare_model(model, input_shape: tuple[int, ...] | None, batch_size: int) -> PreparedModel:
    """Check `model`, resolve its input shapes (see `resolve_input_shapes`) and analyse it statically."""
    checked = check_model_source(model)
    specs = input_specs(checked.proto)
    shapes = resolve_input_shapes(specs, input_shape, batch_size)
    return PreparedModel(checked, specs, shapes, static_analysis(checked, shapes[specs[0].name]))


def make_inputs(specs: list[InputSpec], shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal floats; zeros for integers and booleans (always valid indices)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = shapes[spec.name]
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feeds


# op type -> (index of the input whose last dim / weight shape gives MACs per output, kind)
_MAC_OPS = {
    "Conv": (1, "conv"),
    "ConvInteger": (1, "conv"),
    "QLinearConv": (3, "conv"),
    "ConvTranspose": (1, "conv_transpose"),
    "Gemm": (0, "gemm"),
    "MatMul": (0, "matmul"),
    "MatMulInteger": (0, "matmul"),
    "QLinearMatMul": (0, "matmul"),
}


def static_analysis(
    model: str | os.PathLike | bytes | onnx.ModelProto, input_shape: tuple[int, ...] | None = None
) -> dict:
    """Parameters, MACs and file size of an ONNX model, without running it.

    Args:
        model: path, bytes or ModelProto.
        input_shape: shape of the first input (batch included) for the MAC count;
            by default its dynamic dimensions are taken as 1.

    Returns:
        {"params": int, "macs": int, "model_size_mb": float, "unresolved_mac_nodes": int}
        (nodes whose shapes inference could not resolve are left out of "macs").
    """
    checked = model if isinstance(model, CheckedModel) else check_model_source(model)
    proto = checked.proto
    params = sum(
        math.prod(t.dims) for t in proto.graph.initializer if t.data_type != onnx.TensorProto.INT64
    )
    macs, unresolved = _count_macs(proto, input_shape)
    return {
        "params": int(params),
        "macs": int(macs),
        "model_size_mb": checked.size_bytes / MIB,
        "unresolved_mac_nodes": unresolved,
    }


def _count_macs(proto: onnx.ModelProto, input_shape: tuple[int, ...] | None) -> tuple[int, int]:
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    specs = input_specs(work)
    inputs = {i.name: i for i in work.graph.input}
    for index, spec in enumerate(specs):
        wanted = input_shape if index == 0 and input_shape is not None else tuple(d or 1 for d in spec.dims)
        dims = inputs[spec.name].type.tensor_type.shape.dim
        if len(dims) == len(wanted):
            for dim, value in zip(dims, wanted):
                dim.Clear()
                dim.dim_value = int(value)
    try:
        work = onnx.shape_inference.infer_shapes(work, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        pass  # counted from whatever shapes the file already declares
    shapes: dict[str, tuple[int | None, ...]] = {t.name: tuple(t.dims) for t in work.graph.initializer}
    for value in (*work.graph.input, *work.graph.value_info, *work.graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = tuple(
                d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim
            )
    macs = unresolved = 0
    for node in work.graph.node:
        if node.op_type not in _MAC_OPS or node.domain not in ("", "ai.onnx"):
            continue
        index, kind = _MAC_OPS[node.op_type]
        out = shapes.get(node.output[0])
        operand = shapes.get(node.input[index]) if len(node.input) > index else None
        if not out or not operand or None in out or None in operand:
            unresolved += 1
            continue
        if kind == "conv":  # weight [Cout, Cin/groups, k...]: each output element costs Cin/groups * prod(k)
            macs += math.prod(out) * math.prod(operand[1:])
        elif kind == "conv_transpose":  # weight [Cin, Cout/groups, k...]: each input element scatters that much
            x = shapes.get(node.input[0])
            if not x or None in x:
                unresolved += 1
                continue
            macs += math.prod(x) * math.prod(operand[1:])
        elif kind == "gemm":
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            macs += math.prod(out) * operand[0 if trans_a else -1]
        else:
            macs += math.prod(out) * operand[-1]
    return macs, unresolved
