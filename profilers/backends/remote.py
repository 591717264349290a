"""The `remote` runtime: measure on an edge device through `compressor agent`.

`RemoteBackend.measure` sends the ONNX bytes and the device-side settings (the
remote target turned into a local one: `runtime = remote_runtime`, the same
threads, providers, precision, batch and measurement settings) to the agent's
`POST /v1/profile` (protocol in `profilers.agent`, wire format in
`profilers.agent.protocol`) and returns the `Profile` (`profilers.profile`) the
device measured, with `"target"` set to the remote target's name and the
device's fingerprint in `environment.device`. The token is read from the
environment variable the target names (`token_env`), never from the file.

Errors, by who can fix them:

- `ProfileError` (bad input, not retried): a template URL, no token in the
  environment, a token the agent refuses (401), a model over the agent's size
  limit (413), settings or a model the agent rejects (400/422);
- `RemoteError` (a `RuntimeError`; the search records a failed trial with its
  reason and can be resumed): the device is unreachable (connection refused,
  timeout, reset, unknown host), a proxy in front of it fails (502/504) or
  its queue stays full (503) after `RetryPolicy.tries` attempts with
  exponential backoff (honouring `Retry-After`), or the measurement failed on
  the device (500, not retried: the same model would fail again).

Only the standard library (urllib) is used, so the client adds no dependency.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from targets import Target, availability

from profilers.agent.protocol import MODEL_CONTENT_TYPE, PROTOCOL_VERSION, SETTINGS_HEADER, encode_settings
from profilers.errors import ProfileError, RemoteError
from profilers.profile import Profile

__all__ = ["RemoteBackend", "RemoteError", "RetryPolicy"]

# Statuses worth another try: the agent's queue is full, or a proxy could not reach it.
_RETRY_STATUSES = (502, 503, 504)
# The health request (fingerprint, limits) precedes an upload: a cheap reachability probe.
_HEALTH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is retried when the device is unreachable or busy."""

    tries: int = 3
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        delay = retry_after_s if retry_after_s is not None else self.backoff_s * 2 ** (attempt - 1)
        return max(0.0, min(delay, self.max_backoff_s))


class RemoteBackend:
    """Measure on a device running `compressor agent`, over HTTP(S)."""

    name = "remote"

    def __init__(self, retry: RetryPolicy | None = None, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._health: dict[str, dict[str, Any]] = {}
        self._health_lock = threading.Lock()

    def available(self) -> tuple[bool, str]:
        # Only the standard library is needed; whether a given device is set up is
        # `targets.availability(target)` (template URL, token variable).
        return True, ""

    def memory_meaning(self, target) -> str | None:
        """The device measures with its own runtime, so peak memory means what it means there."""
        from profilers import backend

        return backend(target.remote_runtime).memory_meaning(target)

    def describe(self) -> dict:
        return {"remote": "compressor agent over HTTP", "protocol": PROTOCOL_VERSION}

    def health(self, target: Target) -> dict[str, Any]:
        """The agent's health answer (device fingerprint, limits), fetched once per URL by this instance.

        Raises:
            ProfileError: the target is not set up, or the agent refuses the token.
            RemoteError: the device stays unreachable.
        """
        base = self._base_url(target)
        with self._health_lock:
            if base not in self._health:
                timeout_s = min(_HEALTH_TIMEOUT_S, target.timeout_s)
                answer = self._request(target, "GET", f"{base}/v1/health", None, {}, timeout_s)
                if answer.get("protocol") != PROTOCOL_VERSION:
                    raise ProfileError(
                        f"agent at {base} speaks protocol {answer.get('protocol')!r}, this client "
                        f"{PROTOCOL_VERSION}; install the same compressor version on both machines"
                    )
                self._health[base] = answer
            return self._health[base]

    def measure(
        self,
        model,
        target: Target,
        *,
        input_shape: tuple[int, ...] | None = None,
        max_seconds: float | None = None,
        memory: bool = True,
        keep_samples: bool = False,
        label: str | None = None,
    ) -> Profile:
        """Profile `model` (path, bytes or ModelProto) on the device behind `target`.

        Returns:
            The Profile measured on the device.

        Raises:
            ProfileError: bad input or set-up (not retried).
            RemoteError: unreachable, busy or failing device after the retries.
        """
        data, default_label = _model_bytes(model)
        base = self._base_url(target)
        limits = self.health(target).get("limits", {})
        max_mb = limits.get("max_model_mb")
        if max_mb is not None and len(data) > max_mb * 2**20:
            raise ProfileError(
                f"model is {len(data) / 2**20:.1f} MiB; the agent at {base} accepts at most {max_mb:g} MiB "
                "(start it with a larger --max-model-mb)"
            )
        headers = {
            "Content-Type": MODEL_CONTENT_TYPE,
            SETTINGS_HEADER: encode_settings(target, input_shape, max_seconds, memory, keep_samples),
        }
        profile = self._request(target, "POST", f"{base}/v1/profile", data, headers, target.timeout_s)
        profile["target"] = target.name
        profile["model"] = label or default_label
        # An agent of an earlier version does not name the meaning; the device's runtime decides it.
        profile.setdefault("peak_memory_meaning", self.memory_meaning(target))
        environment = profile.setdefault("environment", {})
        environment.setdefault("agent", {})["url"] = base
        return profile

    def _base_url(self, target: Target) -> str:
        if target.runtime != "remote" or not target.url:
            raise ProfileError(f"target {target.name!r} is not a remote target (runtime = \"remote\" with a url)")
        ok, why = availability(target)
        if not ok:
            raise ProfileError(f"target {target.name!r}: {why}")
        return target.url.rstrip("/")

    def _request(self, target: Target, method: str, url: str, body: bytes | None, headers: dict[str, str],
                 timeout_s: float) -> dict[str, Any]:
        token = os.environ.get(target.token_env or "", "")
        request_headers = {**headers, "Authorization": f"Bearer {token}", "Accept": "application/json"}
        problem = ""
        for attempt in range(1, self.retry.tries + 1):
            retry_after = None
            request = urllib.request.Request(url, data=body, headers=request_headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as response:
                    payload = response.read()
                try:
                    return json.loads(payload)
                except ValueError:
                    raise RemoteError(f"agent at {url} sent a response that is not JSON") from None
            except urllib.error.HTTPError as exc:
                message = _error_message(exc)
                if exc.code == 401:
                    raise ProfileError(f"the agent at {url} refused the token in ${target.token_env}; "
                                       "set it to the contents of the agent's --token-file") from None
                if exc.code not in _RETRY_STATUSES:
                    if exc.code >= 500:
                        raise RemoteError(f"agent at {url}: {message}") from None
                    raise ProfileError(f"agent at {url} refused the request ({exc.code}): {message}") from None
                problem = f"agent busy: {message}" if exc.code == 503 else f"HTTP {exc.code} from {url}: {message}"
                retry_after = _retry_after_s(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                problem = f"device unreachable: {_network_reason(exc, timeout_s)} ({url})"
            if attempt < self.retry.tries:
                self._sleep(self.retry.delay_s(attempt, retry_after))
        raise RemoteError(f"{problem}; gave up after {self.retry.tries} tries")


def _model_bytes(model) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<onnx bytes>"
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        try:
            return path.read_bytes(), path.name
        except OSError as exc:
            raise ProfileError(f"cannot read model file {str(path)!r}: {exc.strerror}") from None
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString(), "<in-memory model>"
    raise ProfileError(f"the remote runtime measures ONNX models (path or bytes), got {type(model).__name__}")


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return exc.reason if isinstance(exc.reason, str) else f"HTTP {exc.code}"


def _retry_after_s(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:  # an HTTP date: fall back to the backoff schedule
        return None


def _network_reason(exc: BaseException, timeout_s: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout_s:g} s"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        return "connection reset"
    return str(reason) or type(reason).__name__
