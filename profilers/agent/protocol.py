"""The agent's wire protocol: version, headers, limits, settings validation, authentication.

Both sides use this module: the client (`profilers.backends.remote`) encodes
a request's settings with `encode_settings`; the server (`server`) and the
measurement process (`worker`) validate them with `parse_settings`. It imports
only the standard library and `targets`, so the client pays nothing for the
server's machinery.

Settings arrive from the network, so they are validated as data: JSON of
known keys and types, a target that `targets.target_from_dict` accepts with a
local runtime, and execution-provider options from the allow-list
`NETWORK_PROVIDER_OPTIONS` only. Provider options are where ONNX Runtime takes
file and directory names (engine and timing caches, calibration tables, plugin
and decryption libraries, dump folders); a client naming one could make the
device read, write or load a file of its choosing. Only tuning knobs are
accepted, and a value that looks like a path is refused even for those.

The measurement process reports one of the `WORKER_*` statuses in its result
file; `WORKER_HTTP_STATUS` says how the server answers each.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from targets import LOCAL_RUNTIMES, Target, TargetError, target_from_dict

PROTOCOL_VERSION = 1
AGENT_NAME = "compressor-agent"
SETTINGS_HEADER = "X-Compressor-Settings"
MODEL_CONTENT_TYPE = "application/octet-stream"
# A request's own timeout_s cannot hold the device longer than this.
MAX_MEASURE_S = 1800.0
MIN_TOKEN_CHARS = 16

# Files of one request in its private directory: what the server hands the worker, and what comes back.
MODEL_FILE = "model.onnx"
REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"

# The worker's verdicts ({"status": ..., "error": one line} or {"status": "ok", "profile": Profile}).
WORKER_OK = "ok"
WORKER_INVALID_MODEL = "invalid_model"  # the body is not a self-contained, valid ONNX model
WORKER_REJECTED = "rejected"  # the profiler refuses the model with these settings (say an input shape)
WORKER_FAILED = "failed"  # the measurement itself failed
WORKER_HTTP_STATUS = {WORKER_INVALID_MODEL: 400, WORKER_REJECTED: 422, WORKER_FAILED: 500}

# Execution-provider options a request may set: tuning knobs that name no file, directory, library or pointer.
NETWORK_PROVIDER_OPTIONS: dict[str, frozenset[str]] = {
    "CPUExecutionProvider": frozenset(),
    "CUDAExecutionProvider": frozenset({
        "device_id", "gpu_mem_limit", "arena_extend_strategy", "cudnn_conv_algo_search",
        "do_copy_in_default_stream", "cudnn_conv_use_max_workspace", "cudnn_conv1d_pad_to_nc1d",
        "enable_cuda_graph", "enable_skip_layer_norm_strict_mode", "prefer_nhwc", "use_tf32",
        "tunable_op_enable", "tunable_op_tuning_enable", "tunable_op_max_tuning_duration_ms",
    }),
    "TensorrtExecutionProvider": frozenset({
        "device_id", "trt_max_workspace_size", "trt_max_partition_iterations", "trt_min_subgraph_size",
        "trt_fp16_enable", "trt_int8_enable", "trt_dla_enable", "trt_dla_core", "trt_builder_optimization_level",
        "trt_auxiliary_streams", "trt_build_heuristics_enable", "trt_sparsity_enable",
        "trt_force_sequential_engine_build", "trt_context_memory_sharing_enable", "trt_layer_norm_fp32_fallback",
        "trt_cuda_graph_enable", "trt_profile_min_shapes", "trt_profile_max_shapes", "trt_profile_opt_shapes",
        "trt_op_types_to_exclude",
    }),
    "OpenVINOExecutionProvider": frozenset({
        "device_type", "precision", "num_of_threads", "num_streams", "enable_opencl_throttling",
        "enable_qdq_optimizer", "disable_dynamic_shapes", "model_priority",
    }),
    "ROCMExecutionProvider": frozenset({
        "device_id", "gpu_mem_limit", "arena_extend_strategy", "miopen_conv_exhaustive_search",
        "do_copy_in_default_stream", "tunable_op_enable", "tunable_op_tuning_enable",
    }),
    "DmlExecutionProvider": frozenset({"device_id", "performance_preference", "device_filter"}),
    "CoreMLExecutionProvider": frozenset({"ModelFormat", "MLComputeUnits", "RequireStaticInputShapes",
                                          "EnableOnSubgraphs"}),
    "QNNExecutionProvider": frozenset({"htp_performance_mode", "htp_graph_finalization_optimization_mode",
                                       "soc_model", "htp_arch", "device_id", "enable_htp_fp16_precision"}),
    "XnnpackExecutionProvider": frozenset({"intra_op_num_threads"}),
}

_SETTINGS_KEYS = ("input_shape", "keep_samples", "max_seconds", "memory", "target")


@dataclass(frozen=True)
class ProfileRequest:
    """The validated settings of one `POST /v1/profile`."""

    target: Target
    input_shape: tuple[int, ...] | None = None
    max_seconds: float | None = None
    memory: bool = True
    keep_samples: bool = False

    def encode(self) -> str:
        """These settings as `parse_settings` reads them back (the server hands them to the worker so)."""
        return encode_settings(self.target, self.input_shape, self.max_seconds, self.memory, self.keep_samples)


class RequestError(Exception):
    """A request the agent refuses; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


def device_target_fields(target: Target) -> dict[str, Any]:
    """The TOML-level fields of the local target the device measures with.

    A remote target becomes a local one (`runtime = remote_runtime`, the same
    threads, providers, precision, batch and measurement settings); budgets
    and the agent's address stay on the workstation.

    Args:
        target: a remote target (or a local one, sent as it is).

    Returns:
        A JSON-serialisable dict that `targets.target_from_dict` accepts.
    """
    if target.runtime == "remote":
        target = dataclasses.replace(target, runtime=target.remote_runtime, url=None, token_env=None)
    fields = target.to_dict()
    for key in ("source", "budgets", "url", "token_env"):
        fields.pop(key)
    return {key: value for key, value in fields.items() if value is not None}


def encode_settings(target: Target, input_shape: tuple[int, ...] | None, max_seconds: float | None,
                    memory: bool, keep_samples: bool = False) -> str:
    """The `X-Compressor-Settings` header value for a profile request."""
    return json.dumps(
        {
            "target": device_target_fields(target),
            "input_shape": list(input_shape) if input_shape is not None else None,
            "max_seconds": max_seconds,
            "memory": memory,
            "keep_samples": keep_samples,
        },
        separators=(",", ":"),
    )


def parse_settings(text: str | None) -> ProfileRequest:
    """Validate the settings header of a profile request.

    Raises:
        RequestError: 400 naming what is wrong.
    """
    if not text:
        raise RequestError(400, f"missing {SETTINGS_HEADER} header (JSON measurement settings)")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"{SETTINGS_HEADER} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"{SETTINGS_HEADER} must be a JSON object")
    unknown = sorted(set(data) - set(_SETTINGS_KEYS))
    if unknown:
        raise RequestError(400, f"{SETTINGS_HEADER}: unknown key {unknown[0]!r}; valid: {', '.join(_SETTINGS_KEYS)}")
    if not isinstance(data.get("target"), dict):
        raise RequestError(400, f"{SETTINGS_HEADER}: 'target' must be an object of target fields")
    try:
        target = target_from_dict(data["target"], source="agent")
    except TargetError as exc:
        raise RequestError(400, f"target: {exc}") from None
    if target.runtime not in LOCAL_RUNTIMES:
        raise RequestError(400, f"target: the agent measures with a local runtime ({', '.join(LOCAL_RUNTIMES)}), "
                                f"got {target.runtime!r}")
    check_provider_options(target.provider_options)
    shape = data.get("input_shape")
    if shape is not None:
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 8
                or any(isinstance(d, bool) or not isinstance(d, int) or not 0 < d <= 1 << 16 for d in shape)):
            raise RequestError(400, f"'input_shape' must be a list of 1..8 positive integers, got {shape!r}")
        shape = tuple(shape)
    max_seconds = data.get("max_seconds")
    if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float))
                                    or not 0 < max_seconds <= MAX_MEASURE_S):
        raise RequestError(400, f"'max_seconds' must be a number in (0, {MAX_MEASURE_S:g}], got {max_seconds!r}")
    flags = {key: data.get(key, default) for key, default in (("memory", True), ("keep_samples", False))}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise RequestError(400, f"{key!r} must be true or false, got {value!r}")
    return ProfileRequest(target, shape, float(max_seconds) if max_seconds is not None else None, **flags)


def check_provider_options(provider_options: dict[str, dict[str, Any]]) -> None:
    """Refuse provider options outside `NETWORK_PROVIDER_OPTIONS` and values that look like file paths.

    Raises:
        RequestError: 400 naming the first offending key.
    """
    for provider, options in sorted(provider_options.items()):
        allowed = NETWORK_PROVIDER_OPTIONS.get(provider, frozenset())
        for key, value in sorted(options.items()):
            name = f"provider_options.{provider}.{key}"
            if key not in allowed:
                accepted = ", ".join(sorted(allowed)) or "none"
                raise RequestError(400, f"target: {name} is not accepted over the network (only tuning options "
                                        f"that name no file on the device; for {provider}: {accepted})")
            if _looks_like_path(value):
                raise RequestError(400, f"target: {name} = {value!r} looks like a file path; "
                                        "the agent accepts no paths over the network")


def _looks_like_path(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or "\\" in value or value.startswith("~") or value in (".", ".."))


def check_bearer(header: str | None, token: bytes) -> bool:
    """Whether an `Authorization` header carries the token (constant-time comparison)."""
    scheme, _, value = (header or "").partition(" ")
    # Compare even on a wrong scheme so the answer takes the same time.
    supplied = value.strip().encode("latin-1", errors="replace")
    return hmac.compare_digest(supplied, token) and scheme.lower() == "bearer"


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the agent reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
