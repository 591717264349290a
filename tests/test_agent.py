"""The remote profiling agent, end to end on loopback: a real `compressor agent`
in a subprocess, real HTTP, real measurements with ONNX Runtime.

Every request goes to 127.0.0.1 only and every loop is bounded. Measurement
settings are tiny (a fraction of a second per profile). Tests that start an
agent are marked slow; the protocol's and the worker's pieces are also tested
in-process, fast.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from conftest import make_conv_gemm_model
from profilers import ProfileError, measure
from profilers.agent import SETTINGS_HEADER, RequestError, encode_settings, parse_settings
from profilers.agent import worker
from profilers.agent.server import _verdict
from profilers.backends.remote import RemoteBackend, RemoteError, RetryPolicy
from targets import target_from_dict

REPO = Path(__file__).resolve().parent.parent
TOKEN_ENV = "COMPRESSOR_TEST_AGENT_TOKEN"
TOKEN = "test-token-0123456789abcdef"
FAST_MEASURE = {"warmup_runs": 2, "min_runs": 10, "min_seconds": 0.05, "max_seconds": 0.2}


@dataclass
class RunningAgent:
    process: subprocess.Popen
    url: str
    tmpdir: Path
    stderr_path: Path

    def work_dirs(self) -> list[Path]:
        # Only the agent's own: importing onnxruntime drops a `.ses` file in TMPDIR.
        return sorted(self.tmpdir.glob("compressor-agent-*"))

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_agent(base: Path, *args: str, extra_pythonpath: str | None = None, port: int = 0) -> RunningAgent:
    """Start `compressor agent` (port 0: a free one) with its own TMPDIR; wait for its 'listening on' line."""
    base.mkdir(parents=True, exist_ok=True)
    token_file = base / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    tmpdir = base / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmpdir))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_pythonpath, str(REPO), env.get("PYTHONPATH")) if p)
    stderr_path = base / "agent.log"
    # stderr to a file: the agent logs every request, more than a pipe holds.
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "compressor", "agent", "--port", str(port), "--token-file", str(token_file), *args],
            stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=REPO,
        )
    ready, _, _ = select.select([process.stdout], [], [], 90)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("listening on http://127.0.0.1:"):
        process.kill()
        process.wait()
        pytest.fail(f"agent did not start: {line!r}\n{stderr_path.read_text()}")
    return RunningAgent(process, line.split()[-1], tmpdir, stderr_path)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    running = start_agent(tmp_path_factory.mktemp("agent"), "--max-model-mb", "1", "--queue", "8")
    yield running
    code = running.stop()
    assert code == 0, running.stderr_path.read_text()
    assert running.work_dirs() == [], "the agent left temporary files behind"


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


def local_target_fields() -> dict:
    return {"name": "agent-test", "kind": "cpu", "runtime": "onnxruntime", "threads": 1, "measure": dict(FAST_MEASURE)}


def remote_target(url: str, **overrides):
    fields = {**local_target_fields(), "runtime": "remote", "url": url, "token_env": TOKEN_ENV,
              "remote_runtime": "onnxruntime", "timeout_s": 120.0, **overrides}
    return target_from_dict(fields)


def model_bytes(seed: int = 0) -> bytes:
    return make_conv_gemm_model(seed=seed).SerializeToString()


def call(url: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
         token: str | None = TOKEN, method: str | None = None) -> tuple[int, dict, dict]:
    """One HTTP request; returns (status, JSON body, headers)."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=body, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def profile_headers(settings: str | None = None) -> dict:
    target = target_from_dict(local_target_fields())
    return {"Content-Type": "application/octet-stream",
            SETTINGS_HEADER: settings if settings is not None else encode_settings(target, None, 0.2, False)}


@pytest.mark.slow
def test_health_reports_the_device(agent):
    status, health, _ = call(agent.url, "/v1/health")
    assert status == 200
    assert health["protocol"] == 1
    device = health["device"]
    assert device["cores_logical"] == os.cpu_count()
    assert device["memory_mb"] > 0
    assert device["runtimes"]["onnxruntime"] == __import__("onnxruntime").__version__
    assert "CPUExecutionProvider" in device["runtimes"]["onnxruntime_providers"]
    assert health["limits"] == {"max_model_mb": 1.0, "queue": 8}


@pytest.mark.slow
def test_remote_profile_agrees_with_local_profile(agent, token, tmp_path):
    path = tmp_path / "conv_gemm.onnx"
    onnx.save(make_conv_gemm_model(), str(path))
    shape = (16, 3, 8, 8)
    remote = measure(path, remote_target(agent.url), input_shape=shape, max_seconds=0.5, memory=True)
    local = measure(path, target_from_dict(local_target_fields()), input_shape=shape, max_seconds=0.5, memory=True)
    assert remote["target"] == "agent-test" and remote["model"] == "conv_gemm.onnx"
    for key in ("runtime", "input_shape", "params", "macs", "model_size_mb"):
        assert remote[key] == local[key], key
    assert remote["environment"]["intra_op_threads"] == local["environment"]["intra_op_threads"] == 1
    assert remote["environment"]["device"]["cpu"] == local["environment"]["cpu"]
    assert remote["environment"]["agent"]["url"] == agent.url
    assert remote["peak_memory_mb"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", TOKEN, "Bearer"])
def test_missing_or_wrong_token_is_401(agent, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    status, body, response_headers = call(agent.url, "/v1/health", headers=headers, token=None)
    assert status == 401 and "token" in body["error"]
    assert response_headers["WWW-Authenticate"] == "Bearer"
    status, _, _ = call(agent.url, "/v1/profile", body=model_bytes(), headers={**profile_headers(), **headers},
                        token=None)
    assert status == 401


@pytest.mark.slow
def test_client_names_the_token_variable_the_agent_refused(agent, monkeypatch, tmp_path):
    monkeypatch.setenv(TOKEN_ENV, "not-the-token-0123456789")
    with pytest.raises(ProfileError, match=f"refused the token in \\${TOKEN_ENV}"):
        RemoteBackend().measure(model_bytes(), remote_target(agent.url))


def raw_post_headers(port: int, headers: dict[str, str]) -> tuple[int, str]:
    """Send a POST's headers without its body; return (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        lines = ["POST /v1/profile HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


@pytest.mark.slow
def test_oversized_model_is_413_before_the_body_is_read(agent):
    headers = {**profile_headers(), "Authorization": f"Bearer {TOKEN}", "Content-Length": str(5 * 2**20)}
    status, body = raw_post_headers(agent.port, headers)
    assert status == 413 and "--max-model-mb" in body


@pytest.mark.slow
def test_client_refuses_a_model_over_the_agents_limit(agent, token):
    big = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])], "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        initializer=[helper.make_tensor("pad", TensorProto.FLOAT, [2**19], [0.0] * 2**19)],
    ))
    with pytest.raises(ProfileError, match="accepts at most 1 MiB"):
        RemoteBackend().measure(big.SerializeToString(), remote_target(agent.url))


@pytest.mark.slow
def test_missing_content_length_is_411(agent):
    status, body = raw_post_headers(agent.port, {**profile_headers(), "Authorization": f"Bearer {TOKEN}"})
    assert status == 411 and "Content-Length" in body


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"target": {}, "colour": 1}', "unknown key 'colour'"),
        ('{"target": {"name": "x", "kind": "cpu", "runtime": "onnxruntime", "thread": 1}}', "unknown key 'thread'"),
        ('{"target": {"name": "x", "kind": "cpu", "runtime": "remote", "url": "http://a", "token_env": "T"}}',
         "local runtime"),
        ('{"target": {"name": "x", "kind": "cpu", "runtime": "onnxruntime"}, "input_shape": [1, -3]}',
         "input_shape"),
        ('{"target": {"name": "x", "kind": "cpu", "runtime": "onnxruntime"}, "memory": "yes"}', "'memory'"),
        ("", "missing X-Compressor-Settings"),
    ],
)
def test_malformed_settings_are_400_with_a_message(agent, settings, message):
    status, body, _ = call(agent.url, "/v1/profile", body=model_bytes(), headers=profile_headers(settings))
    assert status == 400
    assert message in body["error"]


def external_data_model() -> bytes:
    """Weights "stored" in a file that exists next to the agent (its working directory is the repository)."""
    model = make_conv_gemm_model()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="pyproject.toml")
    return model.SerializeToString()


@pytest.mark.slow
@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x00\x01 definitely not a protobuf \xff" * 10, "not a valid ONNX model"),
        (model_bytes()[:200], "not a valid ONNX model"),
        (external_data_model(), "external data"),
    ],
    ids=["garbage", "truncated", "external-data"],
)
def test_payloads_that_are_not_self_contained_onnx_are_400(agent, payload, message):
    status, body, _ = call(agent.url, "/v1/profile", body=payload, headers=profile_headers())
    assert status == 400
    assert message in body["error"]


def checker_failing_model() -> bytes:
    model = make_conv_gemm_model()
    model.graph.node[1].input[0] = "nowhere"  # Relu reads a tensor nothing produces
    return model.SerializeToString()


@pytest.mark.slow
def test_a_model_failing_the_checker_is_400_in_one_line(agent):
    status, body, _ = call(agent.url, "/v1/profile", body=checker_failing_model(), headers=profile_headers())
    assert status == 400
    assert "onnx.checker" in body["error"] and len(body["error"].splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the agent's mapped libraries from /proc")
def test_the_server_process_never_parses_a_model(agent):
    """Parsing and onnx.checker run in the worker: the agent's own process never loads onnx's native code."""
    for payload in (checker_failing_model(), b"\x08\x07" + os.urandom(64), model_bytes()):
        call(agent.url, "/v1/profile", body=payload, headers=profile_headers())
    maps = Path(f"/proc/{agent.process.pid}/maps").read_text()
    assert "onnx_cpp2py_export" not in maps


def provider_settings(providers: list[str], options: dict) -> str:
    fields = {**local_target_fields(), "providers": providers, "provider_options": options}
    return json.dumps({"target": fields, "max_seconds": 0.2, "memory": False})


@pytest.mark.slow
@pytest.mark.parametrize(
    "providers, options, message",
    [
        (["TensorrtExecutionProvider"], {"TensorrtExecutionProvider": {"trt_engine_cache_path": "/tmp/engines"}},
         "provider_options.TensorrtExecutionProvider.trt_engine_cache_path is not accepted"),
        (["TensorrtExecutionProvider"], {"TensorrtExecutionProvider": {"trt_timing_cache_path": "cache"}},
         "trt_timing_cache_path"),
        (["CPUExecutionProvider"], {"CPUExecutionProvider": {"anything": 1}}, "CPUExecutionProvider.anything"),
        (["OpenVINOExecutionProvider"], {"OpenVINOExecutionProvider": {"cache_dir": "ov"}}, "cache_dir"),
        (["OpenVINOExecutionProvider"], {"OpenVINOExecutionProvider": {"device_type": "../../etc/x"}},
         "looks like a file path"),
    ],
    ids=["trt-engine-cache", "trt-timing-cache", "cpu-unknown", "openvino-cache-dir", "path-value"],
)
def test_provider_options_outside_the_allow_list_are_400(agent, providers, options, message):
    status, body, _ = call(agent.url, "/v1/profile", body=model_bytes(),
                           headers=profile_headers(provider_settings(providers, options)))
    assert status == 400, body
    assert message in body["error"]


@pytest.mark.slow
def test_client_reports_a_refused_provider_option(agent, token):
    target = remote_target(agent.url, providers=["CUDAExecutionProvider"],
                           provider_options={"CUDAExecutionProvider": {"user_compute_stream": "1234"}})
    with pytest.raises(ProfileError, match=r"\(400\).*CUDAExecutionProvider.user_compute_stream"):
        RemoteBackend().measure(model_bytes(), target)


def test_tuning_provider_options_pass_validation():
    options = {"CUDAExecutionProvider": {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}}
    request = parse_settings(provider_settings(["CUDAExecutionProvider"], options))
    assert request.target.provider_options == options


def write_request(directory: Path, model: bytes, **settings) -> Path:
    directory.mkdir()
    (directory / "model.onnx").write_bytes(model)
    target = target_from_dict(local_target_fields())
    (directory / "request.json").write_text(encode_settings(target, settings.get("input_shape"), 0.05, False))
    return directory


@pytest.mark.parametrize(
    "model, settings, status, message",
    [
        (b"\x00\x01 not a protobuf \xff" * 4, {}, "invalid_model", "not a valid ONNX model"),
        (external_data_model(), {}, "invalid_model", "external data"),
        (checker_failing_model(), {}, "invalid_model", "onnx.checker"),
        (model_bytes(), {"input_shape": (1, 5, 8, 8)}, "rejected", "axis 1"),
    ],
    ids=["garbage", "external-data", "checker", "bad-shape"],
)
def test_worker_tells_an_invalid_model_from_a_rejected_measurement(tmp_path, model, settings, status, message):
    directory = write_request(tmp_path / "request", model, **settings)
    assert worker.main(directory) == 0
    result = json.loads((directory / "result.json").read_text())
    assert result["status"] == status and message in result["error"]


@pytest.mark.parametrize(
    "result, returncode, status, message",
    [
        ({"status": "invalid_model", "error": "not a valid ONNX model: x"}, 0, 400, "not a valid ONNX model: x"),
        # The worker died inside onnx.checker: its provisional verdict stands.
        ({"status": "invalid_model", "error": "checking it crashed"}, -11, 400, "checking it crashed"),
        ({"status": "rejected", "error": "bad shape"}, 0, 422, "bad shape"),
        ({"status": "failed", "error": ""}, -9, 500, "measurement failed: the measurement process was killed by SIGKILL"),
        ({"status": "ok", "profile": {}}, 1, 500, "last words"),
        (None, 1, 500, "measurement failed: last words"),
    ],
)
def test_server_answers_each_worker_verdict(result, returncode, status, message):
    with pytest.raises(RequestError) as info:
        _verdict(result, returncode, b"Traceback\n  ...\nlast words\n")
    assert info.value.status == status and message in str(info.value)
    assert _verdict({"status": "ok", "profile": {"target": "t"}}, 0, b"") == {"target": "t"}


@pytest.mark.slow
def test_unknown_path_is_404(agent):
    status, body, _ = call(agent.url, "/v1/nothing")
    assert status == 404 and "/v1/health" in body["error"]


@pytest.mark.slow
def test_concurrent_clients_are_measured_one_at_a_time(agent):
    results: list[tuple[int, dict]] = []

    def client(seed: int) -> None:
        status, body, _ = call(agent.url, "/v1/profile", body=model_bytes(seed), headers=profile_headers())
        results.append((status, body))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert [status for status, _ in results] == [200, 200, 200], results
    spans = sorted((b["environment"]["agent"]["started_at"], b["environment"]["agent"]["finished_at"])
                   for _, b in results)
    for (_, previous_end), (next_start, _) in zip(spans, spans[1:]):
        assert next_start >= previous_end, f"measurements overlapped: {spans}"
    assert max(b["environment"]["agent"]["queued_s"] for _, b in results) > 0


def malformed_request(i: int, port: int) -> None:
    kind = i % 4
    if kind == 0:  # not HTTP at all
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"\x16\x03\x01 garbage " * (1 + i % 7) + b"\r\n\r\n")
            while sock.recv(65536):
                pass
    elif kind == 1:
        assert call(f"http://127.0.0.1:{port}", "/v1/profile", body=b"x",
                    headers=profile_headers("{" * (1 + i % 50)))[0] == 400
    elif kind == 2:
        assert call(f"http://127.0.0.1:{port}", "/v1/health", token=f"guess-{i}")[0] == 401
    elif i % 40 == 3:  # a few reach a worker process, which refuses them as invalid models
        assert call(f"http://127.0.0.1:{port}", "/v1/profile", body=os.urandom(64), headers=profile_headers())[0] == 400
    else:
        headers = {**profile_headers(), "Content-Type": "text/plain"}
        assert call(f"http://127.0.0.1:{port}", "/v1/profile", body=os.urandom(64), headers=headers)[0] == 400


@pytest.mark.slow
def test_agent_survives_1000_malformed_requests_and_keeps_no_files(agent):
    _, before, _ = call(agent.url, "/v1/health")
    for i in range(1000):
        malformed_request(i, agent.port)
    status, after, _ = call(agent.url, "/v1/health")
    assert status == 200 and after["in_flight"] == 0
    assert after["measured"] == before["measured"]
    [work_dir] = agent.work_dirs()
    assert list(work_dir.iterdir()) == []
    assert agent.process.poll() is None


@pytest.fixture(scope="module")
def busy_agent(tmp_path_factory):
    """An agent with no queue, on an interpreter where `import torch` fails."""
    base = tmp_path_factory.mktemp("busy-agent")
    blocker = base / "no_torch" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked: the agent must not need it')\n")
    running = start_agent(base, "--queue", "0", extra_pythonpath=str(blocker.parent))
    yield running
    assert running.stop() == 0
    assert running.work_dirs() == []


@pytest.mark.slow
def test_agent_works_without_torch_and_a_full_queue_is_503(busy_agent, token):
    slow = target_from_dict({**local_target_fields(), "measure": {**FAST_MEASURE, "min_seconds": 1.5,
                                                                  "max_seconds": 2.0}})
    headers = profile_headers(encode_settings(slow, None, None, False))
    first: list = []
    worker = threading.Thread(target=lambda: first.append(call(busy_agent.url, "/v1/profile", body=model_bytes(),
                                                               headers=headers)))
    worker.start()
    for _ in range(600):  # until the first request holds the only slot
        if call(busy_agent.url, "/v1/health")[1]["in_flight"] == 1:
            break
        time.sleep(0.05)
    status, body, response_headers = call(busy_agent.url, "/v1/profile", body=model_bytes(1), headers=headers)
    assert status == 503 and "busy" in body["error"]
    assert int(response_headers["Retry-After"]) >= 1

    # The client waits for the slot (bounded tries) instead of failing the trial.
    delays: list[float] = []

    def short_sleep(seconds: float) -> None:
        delays.append(seconds)
        time.sleep(0.25)

    backend = RemoteBackend(RetryPolicy(tries=200, backoff_s=0.25), sleep=short_sleep)
    profile = backend.measure(model_bytes(2), remote_target(busy_agent.url), max_seconds=0.2, memory=False)
    worker.join(timeout=120)
    assert first and first[0][0] == 200, first
    assert profile["runtime"] == "onnxruntime" and profile["latency_ms"]["n"] >= 1
    assert profile["environment"]["device"]["runtimes"]["torch"] is not None  # installed, just never imported
    assert delays, "the second client should have been told to wait"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_device_is_a_remote_error_after_bounded_retries(token):
    delays: list[float] = []
    backend = RemoteBackend(RetryPolicy(tries=3, backoff_s=0.01), sleep=delays.append)
    with pytest.raises(RemoteError, match="device unreachable: connection refused.*gave up after 3 tries"):
        backend.measure(model_bytes(), remote_target(f"http://127.0.0.1:{closed_port()}"))
    assert delays == [0.01, 0.02]
    assert not isinstance(RemoteError("x"), ProfileError)


def test_a_device_that_stops_answering_times_out(token):
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        backend = RemoteBackend(RetryPolicy(tries=2, backoff_s=0.01), sleep=lambda s: None)
        target = remote_target(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.3)
        with pytest.raises(RemoteError, match="device unreachable: timed out after 0.3 s"):
            backend.measure(model_bytes(), target)


def test_template_and_missing_token_are_explained(monkeypatch):
    from targets import load_target

    monkeypatch.delenv("COMPRESSOR_AGENT_TOKEN", raising=False)
    with pytest.raises(ProfileError, match="template: set url"):
        measure(model_bytes(), load_target("rpi4-remote"))
    with pytest.raises(ProfileError, match=f"set \\${TOKEN_ENV}"):
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        RemoteBackend().measure(model_bytes(), remote_target("http://127.0.0.1:9"))


@pytest.mark.parametrize(
    "content, mode, message",
    [
        (None, 0o600, "does not exist"),
        (TOKEN, 0o644, "chmod 600"),
        ("short", 0o600, "at least 16 characters"),
    ],
)
def test_agent_refuses_bad_token_files(tmp_path, capsys, content, mode, message):
    from compressor.cli import main

    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
        token_file.chmod(mode)
    assert main(["agent", "--port", "0", "--token-file", str(token_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_loopback_detection():
    from profilers.agent import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("pi.local")


def _stored_meta(path: Path, key: str) -> bool:
    """Whether the run store at `path` holds meta `key` yet (read while another thread writes it)."""
    import sqlite3

    if not path.is_file():
        return False
    db = sqlite3.connect(path, timeout=1)
    try:
        return db.execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone() is not None
    except sqlite3.OperationalError:  # the table is not created yet
        return False
    finally:
        db.close()


@pytest.mark.slow
def test_search_on_a_remote_target_survives_losing_the_device_and_resumes(tiny_teacher, tmp_path, token):
    """A device that goes away mid-search gives failed trials with the reason; --resume finishes the run."""
    import torch

    from compressor.errors import UserError
    from compressor.pipeline.compress import DataOptions, compress

    torch.set_num_threads(1)
    port = closed_port()
    target_file = tmp_path / "device.toml"
    target_file.write_text(
        f'name = "agent-e2e"\nkind = "edge"\nruntime = "remote"\nurl = "http://127.0.0.1:{port}"\n'
        f'token_env = "{TOKEN_ENV}"\nthreads = 1\ntimeout_s = 120\n\n[measure]\n'
        + "".join(f"{key} = {value}\n" for key, value in FAST_MEASURE.items())
    )
    options = dict(out=tmp_path / "run", data="digits", target=str(target_file), cache_dir=tmp_path / "cache",
                   data_options=DataOptions(image_size=16, channels=1), family_size=1, fidelities=(1,),
                   final_epochs=1, finalists=1, tuning_trials=1, profile_seconds=0.1, export=False)

    device = start_agent(tmp_path / "agent", port=port)
    outcome: list[BaseException | None] = []

    def first_run() -> None:
        try:
            compress(tiny_teacher, trials=2, **options)
            outcome.append(None)
        except (UserError, RemoteError) as exc:
            outcome.append(exc)

    search = threading.Thread(target=first_run)
    search.start()
    # The device goes away once the measurements before the search (floor, teacher, smallest network)
    # are done, so that it is the trials that lose it; any earlier, the run fails before its first trial.
    for _ in range(6000):
        if not search.is_alive() or _stored_meta(tmp_path / "run" / "trials.sqlite", "smallest_network"):
            break
        time.sleep(0.05)
    assert device.stop() == 0
    search.join(timeout=600)
    assert outcome and outcome[0] is not None, "the search cannot succeed without its device"

    device = start_agent(tmp_path / "agent", port=port)
    try:
        result = compress(tiny_teacher, trials=3, resume=True, **options)
    finally:
        assert device.stop() == 0
    from compressor.search.store import TrialStore

    store = TrialStore(tmp_path / "run" / "trials.sqlite")
    try:
        rows = store.records()
    finally:
        store.close()
    lost = [r for r in rows if r.status == "failed"]
    # Losing the device made retryable failures with the reason, and the resumed run, with the device
    # back, evaluated each of them again: none of them is what counts now.
    assert lost and all(r.retryable and "device unreachable: connection refused" in r.reason for r in lost)
    counted = {(r.proposal, r.fidelity): r for r in result.records}
    assert all(counted[(r.proposal, r.fidelity)].id > r.id for r in lost)
    assert not any(r.retryable for r in result.records)
    assert any(r.status == "ok" for r in result.records)
    student = json.loads((tmp_path / "run" / "report.json").read_text())["student"]
    assert student["profile"]["target"] == "agent-e2e"
    assert student["profile"]["environment"]["device"]["cores_logical"] == os.cpu_count()
