"""The remote profiling agent: measure models on the device they will run on.

`compressor agent` runs this on an edge board (a Raspberry Pi, a Jetson). A
workstation's search sends each candidate's ONNX bytes here and gets back the
Profile (DESIGN.md contract) measured on the device with the same profilers
as a local run (`profilers.measure`), so the numbers the search acts on are
the device's, not a prediction.

HTTP stack: the standard library (`http.server.ThreadingHTTPServer`). The
agent has to install on a bare board next to onnxruntime, and it serves one
user at a handful of requests a minute; a framework (and its ASGI server)
would add dependencies to audit and keep working on ARM wheels without buying
anything at that rate. TLS is left to a reverse proxy or an SSH tunnel (README)
rather than re-implemented here.

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
  bool}`. Sending the model
  raw keeps a 200 MB upload at 200 MB (base64 in JSON would add a third and a
  parse). -> 200 with the Profile, its `environment` carrying `device` (the
  fingerprint) and `agent` (queue wait, start and end times of the
  measurement). 400: malformed settings, a body that is not a valid ONNX model
  (`onnx.checker`) or that references external data files; 422: the device
  cannot run these settings (say a provider it lacks); 503 + `Retry-After`:
  the queue is full; 500: the measurement itself failed.

Scheduling: one measurement at a time, so measurements never disturb each
other. A request takes a slot of a bounded semaphore of `queue + 1` (the one
measuring plus those waiting) before its body is read, or gets 503 at once;
slot holders then wait on one measurement lock. At most `MAX_CONNECTIONS`
connections are served at once (one thread each), and each socket times out,
so idle or slow clients cannot pile up threads.

Isolation: each measurement runs in a fresh worker process
(`python -m profilers.agent --worker DIR`), not in the server: a native crash
of a runtime on an odd model kills the worker, not the agent; the worker's CPU
affinity pinning (per target) and its memory stay out of the server; and a
runaway measurement is killed with its process group after the target's
`timeout_s`. The cost is an interpreter start per measurement (about a second
on a small board), small next to the measurement. The model and settings sit
in a private (0700) temporary directory per request, removed when the request
ends whatever happened; nothing received is unpickled or executed: the model
is protobuf data checked by `onnx.checker`, the settings are JSON validated by
`targets`.
"""

from __future__ import annotations

import dataclasses
import hmac
import importlib.metadata
import ipaddress
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from targets import LOCAL_RUNTIMES, Target, TargetError, availability, target_from_dict

PROTOCOL_VERSION = 1
AGENT_NAME = "compressor-agent"
SETTINGS_HEADER = "X-Compressor-Settings"
MODEL_CONTENT_TYPE = "application/octet-stream"
MAX_CONNECTIONS = 32
SOCKET_TIMEOUT_S = 60.0
# A request's own timeout_s cannot hold the device longer than this.
MAX_MEASURE_S = 1800.0
MIN_TOKEN_CHARS = 16
_CHUNK = 1 << 20
# Exit codes of the worker process.
_WORKER_BAD_INPUT = 3
_WORKER_FAILED = 4


@dataclass(frozen=True)
class AgentConfig:
    """How the agent listens and what it accepts."""

    token: str
    host: str = "127.0.0.1"
    port: int = 8765
    max_model_mb: float = 200.0
    queue: int = 8

    @property
    def max_model_bytes(self) -> int:
        return int(self.max_model_mb * 1024 * 1024)


@dataclass(frozen=True)
class ProfileRequest:
    """The validated settings of one `POST /v1/profile`."""

    target: Target
    input_shape: tuple[int, ...] | None = None
    max_seconds: float | None = None
    memory: bool = True
    keep_samples: bool = False


_SETTINGS_KEYS = ("input_shape", "keep_samples", "max_seconds", "memory", "target")


class RequestError(Exception):
    """A request the agent refuses; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


# ---------------------------------------------------------------- protocol


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


# ---------------------------------------------------------------- device


def _board() -> str | None:
    # Raspberry Pi and Jetson boards name themselves in the device tree.
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ") or None
    except OSError:
        return None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_fingerprint() -> dict[str, Any]:
    """What the device is: board, CPU, cores, memory, OS and the runtimes with versions.

    Hostname-free like a Profile's environment (`profilers.host`), since it
    travels inside every Profile. Runtime versions come from package metadata,
    so nothing heavy (torch, tensorrt) is imported; onnxruntime is, to list its
    execution providers.
    """
    import psutil

    from profilers import host

    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    except ImportError:
        providers = []
    return {
        "board": _board(),
        "cpu": host.cpu_model(),
        "machine": platform.machine(),
        "cores_physical": host.physical_cores(),
        "cores_logical": psutil.cpu_count() or 1,
        "memory_mb": round(psutil.virtual_memory().total / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "runtimes": {
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
            "onnxruntime_providers": providers,
            "tensorrt": _version("tensorrt"),
            "torch": _version("torch"),
            "onnx": _version("onnx"),
        },
    }


def _external_data_tensor(model) -> str | None:
    """The name of a tensor whose data lives in a side file, if any (refused: a path could point anywhere)."""
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


# ---------------------------------------------------------------- server


class Agent:
    """The agent's state: limits, the queue, the measurement lock and the work directory."""

    def __init__(self, config: AgentConfig, *, log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.token = config.token.encode("utf-8")
        self.fingerprint = device_fingerprint()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.slots = threading.BoundedSemaphore(config.queue + 1)
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.measure_lock = threading.Lock()
        self.work_dir = Path(tempfile.mkdtemp(prefix="compressor-agent-"))
        self._state_lock = threading.Lock()
        self.in_flight = 0
        self.measured = 0
        self._recent_s: list[float] = []
        self._worker: subprocess.Popen | None = None

    def health(self) -> dict[str, Any]:
        return {
            "agent": AGENT_NAME,
            "protocol": PROTOCOL_VERSION,
            "device": self.fingerprint,
            "limits": {"max_model_mb": self.config.max_model_mb, "queue": self.config.queue},
            "in_flight": self.in_flight,
            "measured": self.measured,
        }

    def retry_after_s(self) -> int:
        """A guess at when a slot frees: recent measurement time times the requests ahead."""
        with self._state_lock:
            typical = sorted(self._recent_s)[len(self._recent_s) // 2] if self._recent_s else 5.0
            return max(1, min(600, math.ceil(typical * max(1, self.in_flight))))

    def profile(self, request: ProfileRequest, model_path: Path) -> dict[str, Any]:
        """Measure a received model (already checked) in a worker process, one at a time.

        Raises:
            RequestError: 422 when the device cannot run the settings or the
                profiler rejects the input, 500 when the measurement fails.
        """
        ok, why = availability(request.target)
        if not ok:
            raise RequestError(422, f"this device cannot measure target {request.target.name!r}: {why}")
        request_file = model_path.parent / "request.json"
        request_file.write_text(json.dumps({
            "target": device_target_fields(request.target),
            "input_shape": request.input_shape,
            "max_seconds": request.max_seconds,
            "memory": request.memory,
            "keep_samples": request.keep_samples,
        }))
        queued = time.perf_counter()
        with self.measure_lock:
            started = time.time()
            waited_s = time.perf_counter() - queued
            profile = self._run_worker(model_path.parent, min(request.target.timeout_s, MAX_MEASURE_S))
            finished = time.time()
        with self._state_lock:
            self.measured += 1
            self._recent_s = (self._recent_s + [finished - started])[-16:]
        profile.setdefault("environment", {})
        profile["environment"]["device"] = self.fingerprint
        profile["environment"]["agent"] = {
            "protocol": PROTOCOL_VERSION,
            "queued_s": round(waited_s, 4),
            "started_at": started,
            "finished_at": finished,
        }
        return profile

    def _run_worker(self, request_dir: Path, timeout_s: float) -> dict[str, Any]:
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        # Own session: a timeout kills the worker together with any process it started.
        worker = subprocess.Popen(
            [sys.executable, "-m", "profilers.agent", "--worker", str(request_dir)],
            cwd=request_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True,
        )
        self._worker = worker
        try:
            _, stderr = worker.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(worker)
            raise RequestError(500, f"measurement exceeded the target's timeout_s ({timeout_s:g} s)") from None
        finally:
            self._worker = None
        result_file = request_dir / "result.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else None
        if worker.returncode == 0 and result is not None:
            return result
        if worker.returncode == _WORKER_BAD_INPUT and result is not None:
            raise RequestError(422, result["error"])
        message = result["error"] if result is not None else _last_line(stderr) or f"exit code {worker.returncode}"
        raise RequestError(500, f"measurement failed: {message}")

    def close(self) -> None:
        """Stop a running measurement and remove the work directory."""
        worker = self._worker
        if worker is not None and worker.poll() is None:
            _kill_group(worker)
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _last_line(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode("utf-8", errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


class _Handler(BaseHTTPRequestHandler):
    server_version = f"{AGENT_NAME}/{PROTOCOL_VERSION}"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_S
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch({"/v1/health": self._health})

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch({"/v1/profile": self._profile})

    def _dispatch(self, routes: dict[str, Callable[[], None]]) -> None:
        # Every failure becomes an answer: nothing a client sends may take the server thread down.
        try:
            if not check_bearer(self.headers.get("Authorization"), self.server.agent.token):
                raise RequestError(401, "missing or wrong bearer token", (("WWW-Authenticate", "Bearer"),))
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                raise RequestError(404, f"no {self.command} {self.path}; the agent serves GET /v1/health "
                                        "and POST /v1/profile")
            route()
        except RequestError as exc:
            self._send_json(exc.status, {"error": str(exc)}, exc.headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug here must not stop the agent: answer 500 and log it
            self.log_message("internal error: %s", traceback.format_exc().replace("\n", " | "))
            self._send_json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    def _health(self) -> None:
        self._send_json(200, self.server.agent.health())

    def _profile(self) -> None:
        agent = self.server.agent
        length = self._content_length(agent.config.max_model_bytes)
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != MODEL_CONTENT_TYPE:
            raise RequestError(400, f"Content-Type must be {MODEL_CONTENT_TYPE} (the ONNX model bytes), "
                                    f"got {content_type!r}")
        request = parse_settings(self.headers.get(SETTINGS_HEADER))
        if not agent.slots.acquire(blocking=False):
            self._discard_body(length)
            raise RequestError(503, f"the agent is busy ({agent.config.queue} requests queued); retry later",
                               (("Retry-After", str(agent.retry_after_s())),))
        request_dir = None
        try:
            with agent._state_lock:
                agent.in_flight += 1
            request_dir = Path(tempfile.mkdtemp(dir=agent.work_dir))
            model_path = request_dir / "model.onnx"
            self._receive_body(length, model_path)
            _check_model(model_path)
            profile = agent.profile(request, model_path)
        finally:
            with agent._state_lock:
                agent.in_flight -= 1
            if request_dir is not None:
                shutil.rmtree(request_dir, ignore_errors=True)
            agent.slots.release()
        self._send_json(200, profile)

    def _content_length(self, limit: int) -> int:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(411, "send the model with a Content-Length (chunked transfer is not accepted)")
        text = self.headers.get("Content-Length")
        if text is None:
            self.close_connection = True
            raise RequestError(411, "missing Content-Length header")
        try:
            length = int(text)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise RequestError(400, f"bad Content-Length {text!r}")
        if length > limit:
            # Not read: the connection closes with the body unread.
            self.close_connection = True
            raise RequestError(413, f"model is {length / 2**20:.1f} MiB; this agent accepts at most "
                                    f"{limit / 2**20:g} MiB (--max-model-mb)")
        if length == 0:
            raise RequestError(400, "empty body: send the ONNX model bytes")
        return length

    def _receive_body(self, length: int, path: Path) -> None:
        remaining = length
        with open(path, "wb") as out:
            while remaining:
                chunk = self.rfile.read(min(_CHUNK, remaining))
                if not chunk:
                    self.close_connection = True
                    raise RequestError(400, f"body ended after {length - remaining} of {length} bytes")
                out.write(chunk)
                remaining -= len(chunk)

    def _discard_body(self, length: int) -> None:
        # Read (within the size limit) so the client sees the answer instead of a reset connection.
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def _send_json(self, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> None:
        body = json.dumps(payload, default=str).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        self.server.agent.log(f"{self.address_string()} {format % args}")


def _check_model(path: Path) -> None:
    """No external data (its paths could point anywhere on the device), then onnx.checker."""
    import onnx
    from google.protobuf.message import DecodeError

    from profilers import ProfileError, load_onnx_checked

    try:
        # Parsed before the checker, which would look up external data paths on this device.
        model = onnx.load_model_from_string(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise RequestError(400, f"not a valid ONNX model: cannot parse it ({exc})") from None
    external = _external_data_tensor(model)
    if external is not None:
        raise RequestError(400, f"tensor {external!r} refers to an external data file; send a self-contained model")
    try:
        load_onnx_checked(model)
    except (ProfileError, onnx.checker.ValidationError, ValueError) as exc:
        raise RequestError(400, f"not a valid ONNX model: {exc}") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        super().__init__((agent.config.host, agent.config.port), _Handler)

    def process_request(self, request, client_address) -> None:
        if not self.agent.connections.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.agent.connections.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.agent.connections.release()


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(config: AgentConfig, *, log: Callable[[str], None] | None = None) -> _Server:
    """Bind the agent's HTTP server (port 0 picks a free port: see `server.server_address`).

    Raises:
        OSError: the address cannot be bound.
    """
    agent = Agent(config, log=log)
    try:
        server_class = _Server6 if ":" in config.host else _Server
        return server_class(agent)
    except BaseException:
        agent.close()
        raise


# ---------------------------------------------------------------- worker


def _worker_main(request_dir: Path) -> int:
    """Measure `request_dir/model.onnx` with the settings in `request.json`; write `result.json`."""
    import profilers

    def write(payload: dict[str, Any]) -> None:
        tmp = request_dir / "result.json.tmp"
        tmp.write_text(json.dumps(payload, default=str))
        tmp.replace(request_dir / "result.json")

    settings = json.loads((request_dir / "request.json").read_text())
    try:
        target = target_from_dict(settings["target"], source="agent")
        shape = tuple(settings["input_shape"]) if settings["input_shape"] is not None else None
        profile = profilers.measure(request_dir / "model.onnx", target, input_shape=shape,
                                    max_seconds=settings["max_seconds"], memory=settings["memory"],
                                    keep_samples=settings["keep_samples"])
    except (profilers.ProfileError, TargetError) as exc:
        write({"error": str(exc)})
        return _WORKER_BAD_INPUT
    except Exception as exc:  # reported to the client as a failed measurement, with its reason
        write({"error": f"{type(exc).__name__}: {exc}"})
        return _WORKER_FAILED
    write(profile)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m profilers.agent --worker DIR (started by `compressor agent`)")
    sys.exit(_worker_main(Path(sys.argv[2])))
