"""The remote profiling agent: measure models on the device they will run on.

`compressor agent` runs this on an edge board (a Raspberry Pi, a Jetson). A
workstation's search sends each candidate's ONNX bytes here and gets back the
Profile (`profilers.profile.Profile`) measured on the device with the same
profilers as a local run (`profilers.measure`), so the numbers the search acts
on are the device's, not a prediction.

The parts, in the order a request meets them:

- `protocol`: the wire format both sides share (version, headers, limits,
  settings validation with the provider-option allow-list, the bearer check
  and the worker's verdicts); the client `profilers.backends.remote` imports
  only this.
- `server`: the HTTP server (standard library), the queue and the one
  measurement lock; it validates what can be validated without parsing the
  model and hands the rest to a worker.
- `worker`: a fresh process per request (`python -m profilers.agent.worker
  DIR`) that parses, checks and measures the model and writes its verdict.
- `device`: the fingerprint of the machine, in the health answer and in
  every Profile it returns.

Protocol (version `PROTOCOL_VERSION`; every call needs `Authorization: Bearer
TOKEN`, compared in constant time; errors are `{"error": "message"}`):

- `GET /v1/health` -> `{"agent", "protocol", "device": fingerprint, "limits":
  {"max_model_mb", "queue"}, "in_flight", "measured"}`.
- `POST /v1/profile`: body = the ONNX model bytes
  (`Content-Type: application/octet-stream`, `Content-Length` required: 411
  without, 413 above `--max-model-mb`, checked before a byte of the body is
  read); the measurement settings travel as JSON in the `X-Compressor-Settings`
  header: `{"target": {TOML-level fields of a *local* target}, "input_shape":
  [..] | null, "max_seconds": float | null, "memory": bool, "keep_samples":
  bool}`. Sending the model raw keeps a 200 MB upload at 200 MB (base64 in
  JSON would add a third and a parse). -> 200 with the Profile, its
  `environment` carrying `device` (the fingerprint) and `agent` (queue wait,
  start and end times of the measurement). 400: malformed settings, provider
  options outside the allow-list or naming a path, a body that is not a valid
  ONNX model (`onnx.checker`, in the worker) or that references external data
  files; 422: the device cannot run these settings (say a provider it lacks)
  or the profiler rejects them (say an input shape); 503 + `Retry-After`: the
  queue is full; 500: the measurement itself failed.

Isolation: each measurement runs in a fresh worker process, not in the
server: a native crash of the checker or a runtime on an odd model kills the
worker, not the agent; the worker's CPU affinity pinning (per target) and its
memory stay out of the server; and a runaway measurement is killed with its
process group after the target's `timeout_s`. The cost is an interpreter
start per request that reaches the worker (about a second on a small board),
small next to the measurement. The model and settings sit in a private (0700)
temporary directory per request, removed when the request ends whatever
happened; nothing received is unpickled or executed: the model is protobuf
data checked by `onnx.checker`, the settings are JSON validated by `targets`
and `protocol`.
"""

from profilers.agent.device import device_fingerprint
from profilers.agent.protocol import (
    AGENT_NAME,
    MIN_TOKEN_CHARS,
    MODEL_CONTENT_TYPE,
    PROTOCOL_VERSION,
    SETTINGS_HEADER,
    ProfileRequest,
    RequestError,
    device_target_fields,
    encode_settings,
    is_loopback,
    parse_settings,
)
from profilers.agent.server import AgentConfig, make_server

__all__ = [
    "AGENT_NAME",
    "AgentConfig",
    "MIN_TOKEN_CHARS",
    "MODEL_CONTENT_TYPE",
    "PROTOCOL_VERSION",
    "ProfileRequest",
    "RequestError",
    "SETTINGS_HEADER",
    "device_fingerprint",
    "device_target_fields",
    "encode_settings",
    "is_loopback",
    "make_server",
    "parse_settings",
]
