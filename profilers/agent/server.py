"""The agent's HTTP server: authentication, limits, the queue, and one measurement at a time.

HTTP stack: the standard library (`http.server.ThreadingHTTPServer`). The
agent has to install on a bare board next to onnxruntime, and it serves one
user at a handful of requests a minute; a framework (and its ASGI server)
would add dependencies to audit and keep working on ARM wheels without buying
anything at that rate. TLS is left to a reverse proxy or an SSH tunnel.

What the server does with a request, in order: the bearer token (constant
time), the route, `Content-Length` against `--max-model-mb` (before a byte of
the body is read), the settings header (`protocol.parse_settings`, pure
Python on JSON), a queue slot, the body into a private directory, whether
this device can run the target at all (422), then the measurement lock and a
`worker` process. The server itself never parses the model: the protobuf
parse, `onnx.checker` and the runtime all run in the worker, and the
worker's verdict (`protocol.WORKER_*`) becomes the answer.

Scheduling: one measurement at a time, so measurements never disturb each
other. A request takes a slot of a bounded semaphore of `queue + 1` (the one
measuring plus those waiting) before its body is read, or gets 503 at once;
slot holders then wait on one measurement lock. At most `MAX_CONNECTIONS`
connections are served at once (one thread each), and each socket times out,
so idle or slow clients cannot pile up threads.
"""

from __future__ import annotations

import json
import math
import os
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

from targets import availability

from profilers.agent.device import device_fingerprint
from profilers.agent.protocol import (
    AGENT_NAME,
    MAX_MEASURE_S,
    MODEL_CONTENT_TYPE,
    MODEL_FILE,
    PROTOCOL_VERSION,
    REQUEST_FILE,
    RESULT_FILE,
    SETTINGS_HEADER,
    WORKER_HTTP_STATUS,
    WORKER_OK,
    ProfileRequest,
    RequestError,
    check_bearer,
    parse_settings,
)

MAX_CONNECTIONS = 32
SOCKET_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
# The package root, put first on the worker's path so it imports this very code.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


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

    def profile(self, request: ProfileRequest, request_dir: Path) -> dict[str, Any]:
        """Check and measure the model received into `request_dir` in a worker process, one at a time.

        Raises:
            RequestError: 400 when the body is not a valid self-contained ONNX
                model, 422 when the device cannot run the settings or the
                profiler rejects the input, 500 when the measurement fails.
        """
        ok, why = availability(request.target)
        if not ok:
            raise RequestError(422, f"this device cannot measure target {request.target.name!r}: {why}")
        (request_dir / REQUEST_FILE).write_text(request.encode())
        queued = time.perf_counter()
        with self.measure_lock:
            started = time.time()
            waited_s = time.perf_counter() - queued
            try:
                profile = self._run_worker(request_dir, min(request.target.timeout_s, MAX_MEASURE_S))
            finally:
                finished = time.time()
                with self._state_lock:
                    self._recent_s = (self._recent_s + [finished - started])[-16:]
        with self._state_lock:
            self.measured += 1
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
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        # Own session: a timeout kills the worker together with any process it started.
        worker = subprocess.Popen(
            [sys.executable, "-m", "profilers.agent.worker", str(request_dir)],
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
        return _verdict(_read_result(request_dir / RESULT_FILE), worker.returncode, stderr)

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


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and isinstance(result.get("status"), str) else None


def _verdict(result: dict[str, Any] | None, returncode: int, stderr: bytes | None) -> dict[str, Any]:
    """The Profile of a worker that finished, or the RequestError its verdict (or its death) calls for."""
    if result is not None and result["status"] == WORKER_OK and returncode == 0:
        return result["profile"]
    if returncode < 0:
        try:
            died = f"the measurement process was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            died = f"the measurement process was killed by signal {-returncode}"
    else:
        died = _last_line(stderr) or f"the measurement process exited with code {returncode}"
    status = WORKER_HTTP_STATUS.get(result["status"], 500) if result is not None else 500
    message = (result or {}).get("error") or died
    if status == 500:
        raise RequestError(500, f"measurement failed: {message}")
    raise RequestError(status, message)


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
            self._receive_body(length, request_dir / MODEL_FILE)
            profile = agent.profile(request, request_dir)
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
