"""Constrained Bayesian search for a student family under a target's budgets.

How the parts fit (DESIGN.md, "Data flow of compressor compress"):

* A *proposal* is a point θ of the space's hyperopt space plus the
  distillation knobs (`kd_alpha`, `kd_tau`, `lr`). It names a *family*: its
  `family_size` members are `space.sample(θ, seed_j)` for seeds derived from
  the run seed and the proposal number, so a resumed run rebuilds them.
* **Screen before training.** Each member is built, exported to ONNX and
  profiled on the target with `profilers.measure`. Feasibility rule: a family
  is feasible only if *every* member meets every budget (latency at the
  target's percentile, peak memory, file size) — any member a user might
  deploy must fit. The first member over budget ends the screen: the trial is
  recorded `infeasible` with the measured values and the reason, and no
  training is spent on it.
* **Trials are trained families.** An over-budget proposal costs one
  screening (about a second) and no training, so it does not count towards
  `trials`; at most `trials * screen_factor` proposals are screened. Under a
  tight budget most of a space is over budget, and counting those would spend
  the whole search on screenings.
* **Multi-fidelity** (successive halving, BOHB-style): trained families come
  in rounds of η^(L-1) at the smallest fidelity (epochs); the best 1/η of a
  round's feasible families are trained again at the next fidelity, and so
  on. A family's score is its members' mean validation accuracy (std kept).
* **Strategy.** hyperopt TPE (default) or random, driven ask/tell style: the
  algorithm's `suggest` proposes one point from the `Trials` history, the
  point is evaluated, and its result is inserted back. TPE learns from the
  smallest-fidelity results, the only ones every proposal has, so its losses
  are comparable. An infeasible family is reported as failed, but hyperopt is
  given a penalty loss above every feasible one (1 + the worst relative
  overshoot): TPE ignores failed trials, and would otherwise keep proposing
  over-budget families. Errors (exceptions, NaN losses, timeouts) are failed
  trials to hyperopt too.
* **Nothing lost.** Every evaluation is committed to `trials.sqlite` when it
  ends (compressor.search.store). `resume=True` restores hyperopt's history from the
  store and replays the same schedule, skipping finished evaluations; at most
  the evaluation in flight is redone.
* **After the search** the best family's best member at the highest fidelity
  is trained for `final_epochs`, evaluated on the test split, saved as
  `best.pt`, profiled, exported (compressor.export) and reported
  (compressor.pipeline.report).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compressor.errors import UserError
from compressor.search.store import TrialRecord, TrialStore

STRATEGIES = ("tpe", "random")
KD_KNOBS = ("kd_alpha", "kd_tau", "lr")


@dataclass(frozen=True)
class SearchConfig:
    """Every knob of `compressor compress` (the CLI maps one flag to one field)."""

    trials: int = 24
    strategy: str = "tpe"
    space: str = "nago"
    family_size: int = 2
    fidelities: tuple[int, ...] = (1, 3)
    eta: int = 3
    final_epochs: int = 15
    seed: int = 0
    trial_timeout_s: float | None = None
    # Over-budget proposals cost one screening, no training, and do not count as trials; at most
    # trials x screen_factor proposals are screened, so that a tight budget cannot loop forever.
    screen_factor: int = 10
    profile_seconds: float = 0.6
    # Small batches: digits has ~1,100 training images, and one-epoch fidelities need enough SGD steps.
    batch_size: int = 16
    export: bool = True
    export_formats: tuple[str, ...] | None = None

    def validate(self) -> "SearchConfig":
        if self.trials <= 0:
            raise UserError(f"--trials must be >= 1, got {self.trials}")
        if self.strategy not in STRATEGIES:
            raise UserError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.family_size <= 0:
            raise UserError(f"--family-size must be >= 1, got {self.family_size}")
        if not self.fidelities or any(f <= 0 for f in self.fidelities) or list(self.fidelities) != sorted(set(self.fidelities)):
            raise UserError(f"--fidelities must be increasing positive epochs like 1,3,9, got {self.fidelities}")
        if self.screen_factor < 1:
            raise UserError(f"screen_factor must be >= 1, got {self.screen_factor}")
        if self.eta < 2:
            raise UserError(f"--eta must be >= 2, got {self.eta}")
        if self.final_epochs <= 0:
            raise UserError(f"--final-epochs must be >= 1, got {self.final_epochs}")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """The fields a resumed run must share with the original (trials may grow)."""
        keep = ("strategy", "space", "family_size", "fidelities", "eta", "seed", "batch_size")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items() if k in keep}


@dataclass
class CompressResult:
    """What `compress` returns: the report (report.json's content) and where things are."""

    run_dir: Path
    report: dict[str, Any]
    checkpoint: Path | None
    records: list[TrialRecord] = field(default_factory=list)


def kd_hyperopt_space() -> dict[str, Any]:
    """The distillation knobs searched beside the architecture.

    α starts at 0 so that the search can turn KD off where it hurts a small
    student. τ stops at 6 rather than REFERENCES.md's 10: with a confident
    teacher (logit std ~13 on digits) the τ²-weighted KL term at τ≈10 drowned
    the cross-entropy and a 19k-parameter student stalled at 47% after 20
    epochs, while τ=4 trained normally.
    """
    from hyperopt import hp

    return {
        "kd_alpha": hp.uniform("kd_alpha", 0.0, 0.9),
        "kd_tau": hp.uniform("kd_tau", 1.0, 6.0),
        "lr": hp.loguniform("lr", math.log(0.01), math.log(0.2)),
    }


def member_seeds(run_seed: int, proposal: int, family_size: int) -> list[int]:
    """Seeds of a family's members: distinct per proposal and member, stable across resumes."""
    return [(run_seed * 1_000_003 + proposal * 101 + j) % (2**31 - 1) for j in range(family_size)]


class _Timeout(Exception):
    pass


class Search:
    """One run of the search loop over a run directory (see the module docstring)."""

    def __init__(self, *, config: SearchConfig, target, dataset, teacher, teacher_logits, run_dir: Path,
                 store: TrialStore, progress: Callable[[str, dict], None] | None = None) -> None:
        from compressor.spaces import get_space

        self.config = config
        self.target = target
        self.dataset = dataset
        self.teacher = teacher
        self.teacher_logits = teacher_logits
        self.run_dir = run_dir
        self.store = store
        self.space = get_space(config.space)
        self.progress = progress or (lambda event, info: None)
        self.records: list[TrialRecord] = store.records()
        self._hp_space = {"arch": self.space.hyperopt_space(), **kd_hyperopt_space()}
        self._trials = self._restore_trials()

    # -- hyperopt ask/tell -------------------------------------------------
    def _algo(self):
        from hyperopt import rand, tpe

        if self.config.strategy == "random":
            return rand.suggest
        # TPE's default of 20 random start-up proposals would be the whole of a short search.
        return functools.partial(tpe.suggest, n_startup_jobs=max(4, min(10, self.config.trials // 4)))

    def _restore_trials(self):
        from hyperopt import JOB_STATE_DONE, Trials

        trials = Trials()
        first = self.config.fidelities[0]
        docs = []
        for rec in self.records:
            if rec.fidelity != first or rec.misc is None:
                continue
            tid = rec.proposal
            misc = {"tid": tid, "cmd": ("domain_attachment", "FMinIter_Domain"), "workdir": None,
                    "idxs": {k: ([tid] if v else []) for k, v in rec.misc["vals"].items()},
                    "vals": rec.misc["vals"]}
            docs.append({"state": JOB_STATE_DONE, "tid": tid, "spec": None, "result": self._hp_result(rec),
                         "misc": misc, "exp_key": None, "owner": None, "version": 0,
                         "book_time": None, "refresh_time": None})
        if docs:
            trials.insert_trial_docs(docs)
        trials.refresh()
        return trials

    @staticmethod
    def _hp_result(rec: TrialRecord) -> dict[str, Any]:
        from hyperopt import STATUS_FAIL, STATUS_OK

        if rec.status == "failed":
            return {"status": STATUS_FAIL}
        return {"status": STATUS_OK, "loss": rec.loss}

    def _ask(self, proposal: int) -> tuple[dict[str, Any], dict[str, Any]]:
        from hyperopt import space_eval
        from hyperopt.base import Domain

        domain = Domain(lambda _: 0.0, self._hp_space)
        seed = (self.config.seed * 7919 + proposal) % (2**31 - 1)
        doc = self._algo()([proposal], domain, self._trials, seed)[0]
        vals = {k: [_plain(x) for x in v] for k, v in doc["misc"]["vals"].items()}
        point = {k: v[0] for k, v in vals.items() if v}
        params = space_eval(self._hp_space, point)
        return _plain(params), {"vals": vals}

    def _tell(self, rec: TrialRecord) -> None:
        from hyperopt import JOB_STATE_DONE

        tid = rec.proposal
        misc = {"tid": tid, "cmd": ("domain_attachment", "FMinIter_Domain"), "workdir": None,
                "idxs": {k: ([tid] if v else []) for k, v in rec.misc["vals"].items()}, "vals": rec.misc["vals"]}
        self._trials.insert_trial_docs([{"state": JOB_STATE_DONE, "tid": tid, "spec": None,
                                         "result": self._hp_result(rec), "misc": misc, "exp_key": None,
                                         "owner": None, "version": 0, "book_time": None, "refresh_time": None}])
        self._trials.refresh()

    # -- the schedule ------------------------------------------------------
    def _done(self, proposal: int, fidelity: int) -> TrialRecord | None:
        for rec in self.records:
            if rec.proposal == proposal and rec.fidelity == fidelity:
                return rec
        return None

    def run(self) -> list[TrialRecord]:
        """Propose, screen and train until `trials` families have been trained (see `screen_factor`)."""
        cfg = self.config
        first = cfg.fidelities[0]
        round_size = cfg.eta ** (len(cfg.fidelities) - 1)
        proposal, trained, members = 0, 0, []
        while trained < cfg.trials and proposal < cfg.trials * cfg.screen_factor:
            rec = self._done(proposal, first)
            if rec is None:
                params, misc = self._ask(proposal)
                rec = self._evaluate(proposal, params, misc, first, previous=None)
                self._tell(rec)
            proposal += 1
            if rec.status == "infeasible":
                continue
            trained += 1
            members.append(proposal - 1)
            if len(members) == round_size or trained == cfg.trials:
                self._promote(members)
                members = []
        if members:
            self._promote(members)
        return self.records

    def _promote(self, members: list[int]) -> None:
        """Successive halving within one round: the best 1/η go on to the next fidelity."""
        cfg = self.config
        for level in range(1, len(cfg.fidelities)):
            previous = [self._done(p, cfg.fidelities[level - 1]) for p in members]
            ranked = sorted((r for r in previous if r is not None and r.status == "ok"),
                            key=lambda r: (-r.val_accuracy, r.proposal))
            keep = max(1, len(members) // cfg.eta ** level)
            for rec in ranked[:keep]:
                if self._done(rec.proposal, cfg.fidelities[level]) is None:
                    self._evaluate(rec.proposal, rec.params, rec.misc, cfg.fidelities[level], previous=rec)

    # -- one evaluation ----------------------------------------------------
    def _evaluate(self, proposal: int, params: dict, misc: dict | None, fidelity: int,
                  previous: TrialRecord | None) -> TrialRecord:
        cfg = self.config
        seeds = member_seeds(cfg.seed, proposal, cfg.family_size)
        rec = TrialRecord(proposal=proposal, fidelity=fidelity, status="ok", params=params, seeds=seeds, misc=misc)
        self.progress("start", {"proposal": proposal, "fidelity": fidelity})
        started = time.perf_counter()
        try:
            specs = [self.space.sample(params["arch"], s) for s in seeds]
            rec.archs = [s.to_json() for s in specs]
            if previous is None:
                self._screen(rec, specs)
            else:
                rec.profiles = previous.profiles
                for key in ("latency_ms", "memory_mb", "size_mb", "n_params", "macs"):
                    setattr(rec, key, getattr(previous, key))
            rec.screen_s = time.perf_counter() - started
            if rec.status == "ok":
                self._train(rec, specs, fidelity, started)
        except _Timeout as exc:
            rec.status, rec.reason = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - any candidate failure is a failed trial, never a crashed search
            rec.status = "failed"
            rec.reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            rec.reason += "" if not _debug() else "\n" + traceback.format_exc()
        rec.total_s = time.perf_counter() - started
        if rec.status == "failed":
            rec.loss = None
        self.store.add(rec)
        self.records.append(rec)
        self.progress("end", {"record": rec})
        return rec

    def _screen(self, rec: TrialRecord, specs) -> None:
        from compressor.models.on_target import check_on_target

        for spec in specs:
            model = self.space.build(spec, self.dataset.input_shape, self.dataset.num_classes)
            checked = check_on_target(model, self.target, self.dataset.input_shape,
                                      max_seconds=self.config.profile_seconds)
            profile = checked.profile
            rec.profiles.append(profile)
            rec.latency_ms = max(rec.latency_ms or 0.0, profile["latency_ms"][self.target.budgets.latency_percentile])
            if profile.get("peak_memory_mb") is not None:
                rec.memory_mb = max(rec.memory_mb or 0.0, profile["peak_memory_mb"])
            rec.size_mb = max(rec.size_mb or 0.0, profile["model_size_mb"])
            rec.n_params = max(rec.n_params or 0, int(profile["params"]))
            rec.macs = max(rec.macs or 0, int(profile["macs"]))
            if not checked.fits:
                rec.status = "infeasible"
                rec.reason = "; ".join(checked.reasons)
                rec.loss = 1.0 + min(10.0, checked.overshoot)
                return

    def _train(self, rec: TrialRecord, specs, fidelity: int, started: float) -> None:
        import torch

        from compressor.train.distill import TrainConfig, train_student

        cfg = self.config
        accuracies = []
        train_started = time.perf_counter()
        for spec in specs:
            remaining = None
            if cfg.trial_timeout_s is not None:
                remaining = cfg.trial_timeout_s - (time.perf_counter() - started)
                if remaining <= 0:
                    raise _Timeout(f"trial timeout: over {cfg.trial_timeout_s:g} s")
            torch.manual_seed(spec.seed)
            model = self.space.build(spec, self.dataset.input_shape, self.dataset.num_classes)
            result = train_student(
                model, self.dataset,
                TrainConfig(epochs=fidelity, lr=rec.params["lr"], alpha=rec.params["kd_alpha"],
                            tau=rec.params["kd_tau"], seed=cfg.seed, batch_size=cfg.batch_size,
                            time_budget_s=remaining, threads=1),
                teacher_logits=self.teacher_logits, evaluate_test=False,
            )
            if result.status != "ok":
                raise RuntimeError(result.reason or "training failed")
            if result.epochs_run < fidelity:
                raise _Timeout(f"trial timeout: over {cfg.trial_timeout_s:g} s after {result.epochs_run}/{fidelity} epochs")
            accuracies.append(float(result.val_accuracy))
        rec.train_s = time.perf_counter() - train_started
        rec.member_accuracies = accuracies
        rec.val_accuracy = float(np.mean(accuracies))
        rec.val_std = float(np.std(accuracies))
        rec.loss = -rec.val_accuracy


def _plain(value: Any) -> Any:
    """numpy scalars and tuples -> JSON-able Python values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _debug() -> bool:
    import os

    return bool(os.environ.get("COMPRESSOR_DEBUG"))


def best_record(records: list[TrialRecord], fidelities: tuple[int, ...]) -> TrialRecord | None:
    """The feasible evaluation with the best mean validation accuracy at the highest fidelity reached."""
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        return None
    top = max(r.fidelity for r in ok)
    return max((r for r in ok if r.fidelity == top), key=lambda r: (r.val_accuracy, -r.proposal))


def failure_summary(records: list[TrialRecord]) -> str:
    """'28 over budget (latency p50 # ms > budget # ms), 2 failed (...)': the most common reasons, for a person."""
    import re

    reasons = Counter()
    for rec in records:
        if rec.status == "ok":
            continue
        # Group numeric variations of one reason ("... 0.31 ms > ..." and "... 0.42 ms > ...").
        key = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "#", rec.reason.split(";")[0].splitlines()[0])[:80]
        reasons[("over budget" if rec.status == "infeasible" else "failed", key)] += 1
    return ", ".join(f"{n} {status} ({key})" for (status, key), n in reasons.most_common(3))


def pareto_front(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """Feasible families not dominated in (higher accuracy, lower latency), at each one's highest fidelity."""
    latest: dict[int, TrialRecord] = {}
    for rec in records:
        if rec.status == "ok" and (rec.proposal not in latest or rec.fidelity > latest[rec.proposal].fidelity):
            latest[rec.proposal] = rec
    points = sorted(latest.values(), key=lambda r: (r.latency_ms, -r.val_accuracy))
    front, best = [], -1.0
    for rec in points:
        if rec.val_accuracy > best:
            front.append({"proposal": rec.proposal, "fidelity": rec.fidelity, "latency_ms": rec.latency_ms,
                          "val_accuracy": rec.val_accuracy, "params": rec.n_params, "macs": rec.macs})
            best = rec.val_accuracy
    return front


def json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
