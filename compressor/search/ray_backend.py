"""Trials in parallel on Ray, every measurement on one measuring actor: `--workers N`, `--ray-address ADDR`.

How the parts fit:

* **The driver** (the `compressor compress` process) owns the run: it asks
  and promotes (`compressor.search.parallel.ParallelSchedule`), holds the run
  lock and is the only writer of `trials.sqlite`. Ray is an execution pool,
  never a store: a task returns its filled `TrialRecord` and the driver commits
  it as it arrives, so the object store is never the only copy of a result.
* **Ray itself.** `ray_session` starts a local instance (`ray.init(num_cpus=
  workers)`, the node on 127.0.0.1, no dashboard) or joins the cluster at
  `--ray-address` (with this machine's Ray token when it has one, as
  `ray start --head` asks: `join_with_token_if_available`); it reuses an
  instance that is already initialised in the process (its owner shuts it
  down). The dataset and the teacher's logits are
  put in the object store once per run (`ray.put`); every task carries only
  their references, and a worker process deserialises them once per run.
* **Trainings** are Ray tasks (`evaluate_family`, one CPU each, no Ray
  retries: the driver decides what is retried). A task runs the same
  `FamilyEvaluator` as the in-process search, with two differences: its
  `checker` (`MeasuringChecker`) does not measure; it exports the member to
  ONNX and hands the bytes to the measuring actor, and waits for its
  `Checked`; and it has no latency model. The driver owns the run's one
  model (`compressor.search.fit.BudgetFit`, opened from the calibration this
  machine stored for the target, saved after each sample as in process): it
  fits each proposal before submitting it (`ParallelSchedule`), and the task
  returns, with its record, the features and judged latency of each member it
  measured, which the driver's model learns when it commits the record. The
  features are computed in the worker, which has just built the member
  (3-26 ms; the driver would have to build it again, and a member's judged
  latency is not in its record). The driver's own work during the search
  (asks, the fit's forward passes) runs on one torch thread, pinned like the
  workers off the reserved cores.
* **Measurements are never disturbed.** There is one measuring actor per run
  and target (`Measurer`, `max_concurrency` 1, so it runs one measurement at a
  time, in arrival order) and it runs `check_on_target`, the one
  measure-and-check step, with the run's drift reference. Each measurement is
  logged to `RUN_DIR/measurements.jsonl` (pid, start, end, verdict, judged
  latency and its interval), so the serialisation can be checked after the fact. On one machine the measuring
  core is reserved: a local instance is started from a thread pinned away
  from the target's `cpu_affinity`, so Ray's daemons and every worker inherit
  that exclusion, and each task also sets its process's affinity to exclude
  those cores when it runs on the driver's node (a joined cluster's workers
  there included) and trains with one torch thread. Only the measuring actor,
  placed on the driver's node, pins itself (inside `check_on_target`, as
  always) to the target's cores. So while N trainings run, the measured model
  has its core to itself, as in the in-process search; what the trainings may
  still share with it is what no pinning separates (the last-level cache and
  memory bandwidth), and the drift reference, measured in the same
  interleaved rounds as each candidate, corrects the part of that which slows
  the reference and the candidate alike (`compressor.models.on_target`). With
  a target without `cpu_affinity` nothing is reserved and the verdicts rest on
  the drift correction alone. A remote target is measured by its agent, which
  runs one measurement at a time on the device; the actor only forwards (the
  remote backend inside `check_on_target`).
* The other verdicts of a run (reachability, the teacher, the baseline, the
  final session) are measured in the driver before the pool starts or after
  it has shut down, when no training runs.
* **Failures.** An evaluation that raises is a failed trial with its reason,
  recorded in the task as in process (`record_failure`), so the members it
  measured before failing still reach the driver's model; one whose worker died (killed, out of memory, its node lost) or
  whose measuring actor died is failed and `retryable` (`is_transient`), like
  the schedule's `TRANSIENT` errors: a resumed run evaluates it again. The
  measuring actor is restarted by Ray after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from compressor.errors import UserError
from compressor.search.config import SearchConfig
from compressor.search.parallel import Outcome, ParallelSchedule
from compressor.search.schedule import TRANSIENT, record_failure
from compressor.search.store import TrialRecord, TrialStore

RAY_EXTRA = "pip install 'compressor[ray]'"


def require_ray(config: SearchConfig) -> None:
    """Refuse a parallel search when Ray is not installed, naming the extra that installs it."""
    try:
        import ray  # noqa: F401
    except ImportError:
        flag = f"--ray-address {config.ray_address}" if config.ray_address else f"--workers {config.workers}"
        raise UserError(f"{flag} runs the trainings on Ray, which is not installed; install it with {RAY_EXTRA} "
                        "or use --workers 1") from None


def reserved_cpus(target) -> tuple[int, ...]:
    """The cores the target's measurements are pinned to (none for a remote target or an unpinned one)."""
    return () if target.runtime == "remote" else tuple(target.cpu_affinity)


def _other_cpus(reserved: tuple[int, ...]) -> list[int]:
    """This process's cores without `reserved`; empty when nothing is reserved or nothing would be left."""
    from profilers.host import current_affinity

    others = [cpu for cpu in current_affinity() if cpu not in reserved]
    return others if reserved and others else []


def join_with_token_if_available() -> None:
    """Send Ray's authentication token when joining a cluster, if this machine has one and no mode is set.

    `ray start --head` (Ray >= 2.5x) enables token authentication and saves a
    token to ~/.ray/auth_token, but `ray.init(address=...)` with an explicit
    address sends no token unless RAY_AUTH_MODE=token is set, so the join
    failed with InvalidAuthToken on the very machine that started the head.
    Ray's own `ray.init()` enables token mode when it finds a cluster by
    itself and a token exists; this does the same for `--ray-address`. An
    explicit RAY_AUTH_MODE (token or disabled) is left as the user set it.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        # Read by this process's Ray when it connects and inherited by the processes it starts.
        os.environ["RAY_AUTH_MODE"] = "token"


@contextlib.contextmanager
def ray_session(config: SearchConfig, target) -> Iterator[None]:
    """Ray for the search: joined (`ray_address`), already initialised, or a local instance started here."""
    import ray

    from profilers.host import pinned_to

    if ray.is_initialized():
        yield
        return
    if config.ray_address:
        join_with_token_if_available()
        try:
            ray.init(address=config.ray_address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as exc:
            raise UserError(f"--ray-address {config.ray_address}: cannot join the Ray cluster ({exc}); "
                            "start it with `ray start --head` or check the address") from None
    else:
        # Everything Ray starts inherits this thread's affinity: its daemons and workers stay off the target's core.
        with pinned_to(_other_cpus(reserved_cpus(target))):
            ray.init(num_cpus=config.workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


class Measurer:
    """The run's measuring actor: one `check_on_target` at a time, each logged to `log_path` (JSON lines).

    The log is written by the actor, on the driver's node, after the measurement: it never delays one.
    """

    def __init__(self, log_path: str, cpus: list[int]) -> None:
        self.log_path = log_path
        self.cpus = cpus

    def check(self, subject, target, input_shape: tuple[int, ...], options: dict[str, Any]):
        from compressor.models.on_target import check_on_target

        # This process was started off the reserved cores; `check_on_target` pins the measurement onto them.
        os.sched_setaffinity(0, self.cpus)
        start = time.time()
        checked = None
        try:
            checked = check_on_target(subject, target, input_shape, **options)
            return checked
        finally:
            line = {"pid": os.getpid(), "start": start, "end": time.time(),
                    "verdict": None if checked is None else checked.verdict,
                    "latency_ms": None if checked is None else checked.latency_ms,
                    "latency_interval": None if checked is None else checked.latency_interval}
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(line) + "\n")


@dataclass
class MeasuringChecker:
    """`FamilyEvaluator.checker` in a Ray task: export here, measure on the run's `Measurer`, return its `Checked`."""

    measurer: Any  # the actor handle

    def __call__(self, model, target, input_shape: tuple[int, ...], **options: Any):
        import ray

        from compressor.models.on_target import measurable

        subject = measurable(model, target, (target.batch_size, *input_shape))
        return ray.get(self.measurer.check.remote(subject, target, tuple(input_shape), options))


@dataclass
class WorkerContext:
    """What every training task needs, by reference: the data and logits sit once in the object store."""

    run: str  # a fresh id per run: a worker process builds its evaluator once per run
    config: SearchConfig
    target: Any
    reference: Any
    dataset: Any  # ObjectRef
    teacher_logits: Any  # ObjectRef
    checker: MeasuringChecker
    driver_node: str
    reserved: tuple[int, ...]


_EVALUATORS: dict[str, Any] = {}


def _evaluator(context: WorkerContext):
    """This worker process's evaluator for the run, set up on its first task (affinity, threads, data)."""
    import ray
    import torch

    from compressor.search.evaluate import FamilyEvaluator
    from compressor.spaces import get_space

    found = _EVALUATORS.get(context.run)
    if found is None:
        _EVALUATORS.clear()
        if ray.get_runtime_context().get_node_id() == context.driver_node:
            others = _other_cpus(context.reserved)
            if others:
                os.sched_setaffinity(0, others)
        torch.set_num_threads(1)
        found = FamilyEvaluator(config=context.config, space=get_space(context.config.space), target=context.target,
                                dataset=ray.get(context.dataset), teacher_logits=ray.get(context.teacher_logits),
                                reference=context.reference, checker=context.checker)
        _EVALUATORS[context.run] = found
    return found


def evaluate_family(context: WorkerContext, record: TrialRecord, previous: TrialRecord | None) -> Outcome:
    """One evaluation in a Ray worker: screen through the measuring actor, train here; the filled record and samples.

    A failure of the evaluation is recorded here, so the samples of the members measured before it go back too.
    """
    started = time.perf_counter()
    measured: list = []
    try:
        _evaluator(context)(record, previous, measured)
    except Exception as exc:  # noqa: BLE001 - any candidate failure is a failed trial, never a crashed search
        cause = _cause(exc)
        record_failure(record, cause, transient=is_transient(cause))
    record.total_s += time.perf_counter() - started  # after the driver's fit seconds
    return Outcome(record, samples=measured)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure says nothing about the proposal: the schedule's `TRANSIENT`, a dead worker, actor or node."""
    from ray import exceptions as rx

    return isinstance(exc, TRANSIENT + (rx.WorkerCrashedError, rx.RayActorError, rx.NodeDiedError, rx.OwnerDiedError,
                                        rx.ObjectLostError, rx.OutOfMemoryError, rx.LocalRayletDiedError,
                                        rx.TaskCancelledError))


def _cause(exc: BaseException) -> BaseException:
    """The task's own exception inside Ray's wrapper."""
    from ray.exceptions import RayTaskError

    while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
        exc = exc.cause
    return exc


class RayPool:
    """`compressor.search.parallel.Pool` on Ray: `slots` training tasks at once."""

    def __init__(self, context: WorkerContext, slots: int) -> None:
        import ray

        self.context = context
        self.slots = slots
        self._task = ray.remote(num_cpus=1, max_retries=0)(evaluate_family)
        self._flights: dict[Any, tuple[TrialRecord, float]] = {}

    def submit(self, record: TrialRecord, previous: TrialRecord | None) -> None:
        self._flights[self._task.remote(self.context, record, previous)] = (record, time.perf_counter())

    def next_result(self) -> Outcome:
        import ray

        [ref], _ = ray.wait(list(self._flights), num_returns=1)
        record, started = self._flights.pop(ref)
        try:
            return ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a lost task is a failed trial, never a crashed search
            cause = _cause(exc)
            record.total_s += time.perf_counter() - started
            return Outcome(record, cause, is_transient(cause))


@contextlib.contextmanager
def _driver_off_the_target(reserved: tuple[int, ...]) -> Iterator[None]:
    """The driver while trainings run: one torch thread (the fit's forward passes), off the reserved cores."""
    import torch

    from profilers.host import pinned_to

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pinned_to(_other_cpus(reserved)):
            yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def parallel_search(*, config: SearchConfig, target, dataset, teacher_logits: dict[str, Any], store: TrialStore,
                    log_path: Path, progress: Callable[[str, dict], None] | None = None,
                    reference=None, cache_dir=None, warm_starts=None) -> Iterator[ParallelSchedule]:
    """The search on Ray for `compressor.pipeline.compress`: Ray up, the measuring actor, the pool, the schedule.

    `cache_dir`: where the target's latency calibration is stored (`compressor.search.fit.BudgetFit.open`);
    `warm_starts`: the first points (default: the space's).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from compressor.search.config import kd_hyperopt_space, warm_start_points
    from compressor.search.fit import BudgetFit, network_key
    from compressor.spaces import get_space
    from profilers.host import current_affinity

    with ray_session(config, target):
        driver_node = ray.get_runtime_context().get_node_id()
        measurer = ray.remote(num_cpus=0, max_concurrency=1, max_restarts=-1, max_task_retries=0)(Measurer).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node, soft=False)).remote(
            str(log_path), current_affinity())
        context = WorkerContext(run=uuid.uuid4().hex, config=config, target=target, reference=reference,
                                dataset=ray.put(dataset), teacher_logits=ray.put(teacher_logits),
                                checker=MeasuringChecker(measurer), driver_node=driver_node,
                                reserved=reserved_cpus(target))
        space = get_space(config.space)
        warm_starts = warm_start_points(space) if warm_starts is None else warm_starts
        try:
            with _driver_off_the_target(context.reserved):
                yield ParallelSchedule(config=config, store=store, pool=RayPool(context, config.workers),
                                       space={"arch": space.hyperopt_space(), **kd_hyperopt_space()},
                                       progress=progress, warm_starts=warm_starts,
                                       budget=BudgetFit.open(config, space, target, dataset, cache_dir,
                                                             warm_starts, reference),
                                       network=lambda params: network_key(space, params["arch"]))
        finally:
            ray.kill(measurer)
