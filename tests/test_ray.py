"""The search on a real Ray: end to end, measurements one at a time, a killed worker, a killed driver, a joined
cluster. One local Ray (2 CPUs) is shared by the in-process tests of this module; the driver and the cluster
tests run their own processes. Every process killed or stopped here is one these tests started."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from tests.test_search import ROOT, _compress, wait_for_trials  # noqa: E402

# One worker runs this module (pytest-xdist --dist loadgroup): its tests share one local Ray, and a
# second Ray on a 2-core machine would make every training here wait for the other.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

PARALLEL = dict(workers=2, export=False, fidelities=(1, 2), eta=2)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def _measurements(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "measurements.jsonl").read_text().splitlines()]


def test_parallel_search_end_to_end_measures_one_model_at_a_time(local_ray, tiny_teacher, tight_latency_ms, quick_target,
                                                                  tmp_path):
    run = tmp_path / "run"
    budget = dict(latency_ms=tight_latency_ms, target=quick_target)
    result = _compress(tiny_teacher, run, tmp_path / "cache", trials=4, **budget, **PARALLEL)
    report = result.report
    # `trials` families trained; proposals screened over the budget (or skipped unmeasured) do not count
    assert report["search"]["trained"] == 4 and report["student"] is not None
    first = [r for r in result.records if r.fidelity == 1]
    assert len(first) == report["search"]["trials"] >= 4 and any(r.fidelity == 2 for r in result.records)
    assert all(r.latency_ms <= tight_latency_ms for r in result.records if r.status == "ok")
    # two trainings were in flight at once
    spans = sorted((r.ended_at - r.total_s, r.ended_at) for r in result.records)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    # every screening went through the one measuring actor (the plain warm starts keep the verdict of the
    # width session, measured before the search), and no two measurements overlapped
    log = sorted(_measurements(run), key=lambda m: m["start"])
    measured = [r for r in first if "screened" not in (r.misc or {})]
    assert len(measured) < len(first) and len({m["pid"] for m in log}) == 1
    assert len(log) == sum(len(r.profiles) for r in measured) + report["search"]["latency_model"]["calibration"]
    assert all(a["end"] <= b["start"] for a, b in zip(log, log[1:]))
    # the stored rows are what the driver committed: resumed, nothing is evaluated again
    again = _compress(tiny_teacher, run, tmp_path / "cache", trials=4, resume=True, **budget, **PARALLEL)
    assert [r.id for r in again.records] == [r.id for r in result.records]


def test_on_ray_the_plain_warm_start_keeps_the_width_sessions_verdict(local_ray, tiny_teacher, tight_latency_ms,
                                                                      quick_target, tmp_path):
    """The baseline's width, judged in the width session, reaches the Ray task with that verdict: never measured again."""
    from compressor.pipeline.compress import compress
    from compressor.spaces import get_space
    from tests.test_finish import _options

    run = tmp_path / "run"
    result = compress(tiny_teacher, out=run, data="digits", target=quick_target, latency_ms=tight_latency_ms,
                      space="all", cache_dir=str(tmp_path / "cache"), quiet=True, trials=3, family_size=1,
                      final_epochs=1, tuning_trials=2, finalists=1, baseline=True, data_options=_options(),
                      profile_seconds=0.1, **PARALLEL)
    space = get_space("all")
    baseline = result.report["baselines"][0]
    session = baseline["width"]["session"]
    plain = next(r for r in result.records
                 if r.fidelity == 1 and space.validate_params(r.params["arch"]).get("family") == "plain")
    assert baseline["width"]["within"] and plain.status == "ok"
    assert plain.misc["screened"]["session"] == session
    assert plain.profiles == [baseline["width"]["profile"]]
    # The deeper plain warm start, where one fits, was judged in the width sessions too (the widths, then the stage
    # steps): that one is not measured either.
    from compressor.search.store import TrialStore

    store = TrialStore(run / "trials.sqlite")
    width = store.get_meta("plain_width")
    store.close()
    sessions = {c["session"] for c in width["candidates"] + width["deeper"]["candidates"]}
    assert session in sessions and len({c["session"] for c in width["candidates"]}) <= 2
    judged = {r.id: r for r in result.records
              if r.fidelity == 1 and (r.misc or {}).get("screened", {}).get("session") in sessions}
    assert plain.id in judged and len(judged) <= 2
    assert all(space.validate_params(r.params["arch"]).get("family") == "plain" for r in judged.values())
    # The measuring actor measured every other screened member and the calibration, and not these.
    first = [r for r in result.records if r.fidelity == 1 and r.id not in judged]
    calibration = result.report["search"]["latency_model"]["calibration"]
    assert len(_measurements(run)) == sum(len(r.profiles) for r in first) + calibration


def test_the_driver_fits_proposals_with_the_one_latency_model_and_learns_every_measurement(local_ray, tiny_teacher,
                                                                                            fast_target, tmp_path):
    """Calibrated before the run (real measurements of nago widths), the driver fits every proposal; the
    calibration stored for the target then holds one more sample per measurement the actor logged."""
    from compressor.errors import UserError
    from compressor.models.on_target import DriftReference, check_on_target
    from compressor.search.latency_model import MIN_SAMPLES, LatencyModel, network_features
    from compressor.search.store import TrialStore
    from compressor.spaces import get_space

    space, shape, cache = get_space("nago"), (1, 16, 16), tmp_path / "cache"
    # The run's target is cpu-1t (same speed settings) with a drift reference at the same input: same key. The
    # samples are in units of this reference's latency, as the run's will be in units of its own.
    unit = {"reference": DriftReference.start(fast_target, shape, 10), "input_shape": shape, "num_classes": 10}
    model = LatencyModel.open(fast_target, cache, **unit)
    for width in range(8, 8 + 8 * MIN_SAMPLES, 8):
        net = space.build(space.sample({"base_width": width}, 0), shape, 10)
        model.add(network_features(net, shape), check_on_target(net, fast_target, shape, max_seconds=0.2).latency_ms)
    seeded = len(model.samples)
    run = tmp_path / "run"
    middle_ms = sorted(units for _, units in model.samples)[seeded // 2] * model.unit_ms
    try:
        _compress(tiny_teacher, run, cache, trials=2, latency_ms=middle_ms, workers=2, export=False, space="nago")
    except UserError:
        pass  # nothing feasible is a possible outcome on a busy machine; the store is what is checked
    store = TrialStore(run / "trials.sqlite")
    records = store.records()
    store.close()
    assert records and all("fit" in r.misc and "predicted" in r.misc for r in records)
    skipped = [r for r in records if r.misc["fit"]["skipped"]]
    assert all(r.profiles == [] for r in skipped)
    log = _measurements(run)
    assert len(log) == sum(len(r.profiles) for r in records) == len(records) - len(skipped)
    assert len(LatencyModel.open(fast_target, cache, **unit).samples) == seeded + len(log)


def _descendants() -> list:
    return psutil.Process().children(recursive=True)


def _kill_first_training(killed: list, stop: threading.Event) -> None:
    """Kill -9 the first Ray worker seen running a training task (its title is ray::evaluate_family)."""
    while not stop.is_set():
        for proc in _descendants():
            try:
                if "ray::evaluate_family" in " ".join(proc.cmdline()):
                    proc.send_signal(signal.SIGKILL)
                    killed.append(proc.pid)
                    return
            except psutil.Error:
                continue
        time.sleep(0.05)


def test_a_worker_killed_mid_trial_is_a_retryable_failure_redone_on_resume(local_ray, tiny_teacher, tight_latency_ms,
                                                                            quick_target, tmp_path):
    budget = dict(latency_ms=tight_latency_ms, target=quick_target)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_training, args=(killed, stop))
    killer.start()
    try:
        result = _compress(tiny_teacher, tmp_path / "run", tmp_path / "cache", trials=3, **budget, **PARALLEL)
    finally:
        stop.set()
        killer.join()
    assert killed
    [failed] = [r for r in result.records if r.status == "failed"]
    assert failed.retryable and "WorkerCrashedError" in failed.reason
    again = _compress(tiny_teacher, tmp_path / "run", tmp_path / "cache", trials=3, resume=True, **budget, **PARALLEL)
    redone = [r for r in again.records if (r.proposal, r.fidelity) == (failed.proposal, failed.fidelity)]
    # the same proposal with the same KD knobs; its network is fitted to the budget again, by a latency
    # model that has learned from more measurements since, so its sizes may differ
    knobs = [{k: v for k, v in r.params.items() if k != "arch"} for r in (redone[0], failed)]
    assert redone[0].status != "failed" and knobs[0] == knobs[1]


def _kill_tree(procs: list) -> None:
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue


def test_driver_killed_then_resumed_loses_only_the_trials_in_flight(local_ray, tiny_teacher, tight_latency_ms,
                                                                     quick_target, tmp_path):
    run = tmp_path / "run"
    budget = dict(latency_ms=tight_latency_ms, target=quick_target)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tests.test_search import _compress; "
            f"_compress({tiny_teacher!r}, {str(run)!r}, {str(tmp_path / 'cache')!r}, trials=5, workers=2, "
            f"export=False, fidelities=(1, 2), eta=2, **{budget!r})")
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    db = run / "trials.sqlite"
    wait_for_trials(driver, db, 2, timeout=300)
    tree = psutil.Process(driver.pid).children(recursive=True)  # its local Ray, started by the driver
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    _kill_tree(tree)
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT id, proposal, fidelity, status, params FROM trials ORDER BY id").fetchall()
    result = _compress(tiny_teacher, run, tmp_path / "cache", trials=5, resume=True, **budget, **PARALLEL)
    with sqlite3.connect(db) as conn:
        after = conn.execute("SELECT id, proposal, fidelity, status, params FROM trials ORDER BY id").fetchall()
    assert after[:len(before)] == before
    # every proposal has its screening, `trials` families trained, and no failure is left from the killed driver
    screened = sorted(r.proposal for r in result.records if r.fidelity == 1)
    assert screened == list(range(len(screened))) and result.report["search"]["trained"] == 5
    assert not any(r.status == "failed" for r in result.records)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A one-node cluster from `ray start --head` on loopback, its files under its own short temp dir."""
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # Ray's socket paths must stay under 107 characters
    port = _free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--include-dashboard", "false", "--num-cpus", "2", "--temp-dir", temp, "--disable-usage-stats"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        # `ray stop` would stop every Ray on the machine: stop only this cluster's processes and their children.
        ours = [p for p in psutil.process_iter() if _mentions(p, temp) or _mentions(p, f":{port}")]
        _kill_tree([c for p in ours for c in _children(p)] + ours)


def _mentions(proc, text: str) -> bool:
    try:
        return proc.pid != os.getpid() and text in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _children(proc) -> list:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def test_cli_joins_a_running_cluster_with_ray_address(ray_cluster, tiny_teacher, tight_latency_ms, quick_target,
                                                     tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "compressor", "compress", "--teacher", tiny_teacher, "--data", "digits",
         "--image-size", "16", "--channels", "1", "--target", quick_target, "--latency-ms", str(tight_latency_ms),
         "--trials", "2", "--finalists", "1", "--family-size", "1",
         "--fidelities", "1", "--final-epochs", "1", "--profile-seconds", "0.1", "--no-export", "--workers", "2",
         "--ray-address", ray_cluster, "--out", str(run), "--cache-dir", str(tmp_path / "cache"), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=500,
        # This process's environment. Run alone, this test is a fresh shell's join (no RAY_AUTH_MODE, so
        # ray_backend.join_with_token_if_available sends the token). After the module's local Ray, which sets
        # RAY_AUTH_MODE=token here, the join inherits that mode (a shell environment with RAY_* stripped then
        # failed with InvalidAuthToken after the local Ray, cause not found).
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    # --trials counts trained families; at a tight budget proposals skipped or screened over budget are extra.
    search = report["search"]
    assert search["trained"] == 2 and search["trials"] >= 2 and report["student"] is not None
    assert len(_measurements(run)) == search["latency_model"]["screenings"] + search["latency_model"]["calibration"]
