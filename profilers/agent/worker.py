"""The measurement process: check one received model and measure it, isolated from the agent's server.

The server starts `python -m profilers.agent.worker DIR` once per request,
with DIR (private, 0700) holding `MODEL_FILE` (the received bytes) and
`REQUEST_FILE` (the validated settings, re-validated here with
`protocol.parse_settings`). It writes its verdict to `RESULT_FILE`: a status
of `protocol.WORKER_*` with a one-line error, or `ok` with the Profile.

Everything that parses or runs the received model happens here, not in the
server: the protobuf parse, the external-data check (a tensor stored "in a
file" could name any path on the device), `onnx.checker` (native code, on
untrusted input) and the runtime itself. Before each stage the worker writes
the verdict that stage's crash would deserve (an invalid model while
checking, a failed measurement while measuring), so a native crash that
leaves no chance to write still reads right on the server: a model that
crashes the checker is answered 400, not 500.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from targets.errors import TargetError, first_line

from profilers.agent.protocol import (
    MODEL_FILE,
    REQUEST_FILE,
    RESULT_FILE,
    WORKER_FAILED,
    WORKER_INVALID_MODEL,
    WORKER_OK,
    WORKER_REJECTED,
    parse_settings,
)


class InvalidModelError(Exception):
    """The received bytes are not a self-contained, valid ONNX model (one-line message)."""


def check_model(data: bytes) -> None:
    """Parse the received bytes, refuse external data, then run `onnx.checker`.

    Raises:
        InvalidModelError: naming what is wrong.
    """
    import onnx
    from google.protobuf.message import DecodeError

    from profilers.errors import ProfileError
    from profilers.onnx_model import load_onnx_checked

    try:
        # Parsed before the checker, which would look up external data paths on this device.
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidModelError(f"not a valid ONNX model: cannot parse it ({first_line(exc)})") from None
    external = external_data_tensor(model)
    if external is not None:
        raise InvalidModelError(f"tensor {external!r} refers to an external data file; send a self-contained model")
    try:
        load_onnx_checked(model)
    except (ProfileError, onnx.checker.ValidationError, ValueError) as exc:
        raise InvalidModelError(f"not a valid ONNX model: {first_line(exc)}") from None


def external_data_tensor(model) -> str | None:
    """The name of a tensor whose data lives in a side file, if any."""
    from onnx import AttributeProto, TensorProto

    def tensors(graph):
        yield from graph.initializer
        yield from (sparse.values for sparse in graph.sparse_initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == AttributeProto.TENSORS:
                    yield from attr.tensors
                elif attr.type == AttributeProto.GRAPH:
                    yield from tensors(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        yield from tensors(sub)

    for tensor in tensors(model.graph):
        if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
            return tensor.name or "(unnamed)"
    return None


def write_result(request_dir: Path, payload: dict[str, Any]) -> None:
    """Replace `RESULT_FILE` atomically, so the server never reads half a verdict."""
    tmp = request_dir / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, default=str))
    tmp.replace(request_dir / RESULT_FILE)


def main(request_dir: Path) -> int:
    """Check and measure `request_dir/MODEL_FILE` as `REQUEST_FILE` says; the verdict goes to `RESULT_FILE`."""
    import profilers

    write_result(request_dir, {"status": WORKER_INVALID_MODEL,
                               "error": "not a valid ONNX model: checking it crashed the measurement process"})
    try:
        check_model((request_dir / MODEL_FILE).read_bytes())
    except InvalidModelError as exc:
        write_result(request_dir, {"status": WORKER_INVALID_MODEL, "error": str(exc)})
        return 0
    write_result(request_dir, {"status": WORKER_FAILED, "error": ""})
    try:
        request = parse_settings((request_dir / REQUEST_FILE).read_text())
        profile = profilers.measure(request_dir / MODEL_FILE, request.target, input_shape=request.input_shape,
                                    max_seconds=request.max_seconds, memory=request.memory,
                                    keep_samples=request.keep_samples)
    except (profilers.ProfileError, TargetError) as exc:
        write_result(request_dir, {"status": WORKER_REJECTED, "error": first_line(exc)})
        return 0
    except Exception as exc:  # reported to the client as a failed measurement, with its reason
        write_result(request_dir, {"status": WORKER_FAILED, "error": f"{type(exc).__name__}: {first_line(exc)}"})
        return 0
    write_result(request_dir, {"status": WORKER_OK, "profile": profile})
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m profilers.agent.worker DIR (started by `compressor agent`)")
    sys.exit(main(Path(sys.argv[1])))
