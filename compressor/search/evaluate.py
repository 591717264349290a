"""The real evaluator: screen a family on the target, then train it with KD.

A proposal names a *family*: its `family_size` members are
`space.sample(params["arch"], seed_j)` for the record's member seeds.

* **Screen before training.** Each member is built, exported to ONNX and
  measured on the target beside the run's drift reference
  (`compressor.models.on_target.check_on_target`), which gives its verdict:
  within, over or borderline (measured again longer, then decided by the
  point estimate). It is a first look (`FIRST_LOOK`: a quarter of
  `profile_seconds`), measured in full only when borderline there (on
  digits a family's screening fell from 1.6-1.8 s to 0.75-1.1 s and the
  search's time training rose from 63-66% to 74-78%: BENCHMARKS.md, "A
  first look for each screening"). A family is feasible only if *every*
  member fits every budget (latency at the target's percentile, peak
  memory, file size): any member a user might deploy must fit. The first
  member that does not ends the screen: the family is `infeasible`, with
  the measured figures, the reason and the penalty loss, and no training is
  spent on it. The record's
  `latency_ms` is the figure judged (drift-corrected to the run's start);
  its `profiles` keep the raw measurements.
* **Fit to budget first** (`FamilyEvaluator.fit`, which the schedule calls
  before the evaluation, so that a proposal fitted to a network the run has
  trained is not evaluated: `schedule.Schedule`, "Repeats"; with the
  `compressor.search.fit.BudgetFit` given to the evaluator in process; when
  the run has a latency budget,
  `config.fill_fraction` is set and the run's latency model
  (`compressor.search.latency_model`) has `MIN_SAMPLES` measured members; a
  cold model first measures sizes of the proposal's first member until it has,
  `_calibrate`): the proposal's width knobs (and its depth knobs when the
  smallest width is over) are sized so its family's predicted latency (worst
  member) fills `fill_fraction` of the budget. The fitted params are what is
  screened, trained and stored; `misc["fit"]` says what was proposed and what
  was fitted, and `strategies.record_fitted` points trade's `misc` at the
  fitted values (TPE keeps the point it asked for). A family predicted over
  the model's skip factor (`LatencyModel.skip_factor`) x the budget even at
  its smallest size is recorded infeasible ("predicted over budget", penalty
  from the predicted overshoot) without being measured. Every screening made
  with a calibrated model keeps its prediction in `misc["predicted"]` (the
  report's accuracy figures).
* **One verdict per network per run.** A warm start already screened within
  the budget in this run (the plain CNN at the baseline's width, judged in
  the width session: `WarmStart.measured`) arrives with `misc["screened"]`
  and is not measured again: its figures and profile are that session's.
  Measured again, noise near the line could judge the baseline's own network
  over budget for the search while the baseline ships it (a benchmark run:
  0.97x the budget in the width session, 1.05x in the screening), and the
  search would lose the point that keeps it level with the baseline.
* **Every measured member is a sample** (its `network_features` and judged
  latency): the evaluator's `BudgetFit` learns it as it is measured, and the
  caller's `measured` list receives it. In a Ray worker the evaluator has no
  `BudgetFit` (the driver owns the run's one model and has already fitted the
  record, `compressor.search.parallel`); the task returns the list with the
  record and the driver's model learns it.
* **Train.** Each member is distilled from the teacher's cached logits for
  `fidelity` epochs (`compressor.train.distill.train_student`); the family
  records its members' mean validation accuracy (std kept) and their mean
  validation cross-entropy, from which its score comes (`TrialRecord.score`:
  what the search ranks by). A family evaluated again at a higher fidelity
  reuses its screening.

This is the only part of the search that imports torch and the profilers'
backends, and it does so when it runs, not when it is imported.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from compressor.search.config import SearchConfig
from compressor.search.fit import BudgetFit, Sample, calibration_points, sample_family
from compressor.search.latency_model import network_features
from compressor.search.schedule import TrialTimeout
from compressor.search.store import TrialRecord
from compressor.search.strategies import penalty_loss

# A family's figures are its worst member's.
_SCREEN_FIGURES = ("latency_ms", "memory_mb", "size_mb", "n_params", "macs")
# A screening first measures this share of `profile_seconds` and measures in full only a borderline member
# (compressor.models.on_target, "A first look"): the full measurement was most of a screening's time.
FIRST_LOOK = 0.25


class FamilyEvaluator:
    """`Evaluator` (compressor.search.schedule) of families of `space` on `target`, trained on `dataset`."""

    def __init__(self, *, config: SearchConfig, space, target, dataset, teacher_logits: dict[str, Any],
                 reference=None, budget: BudgetFit | None = None, checker=None) -> None:
        from compressor.models.on_target import check_on_target

        self.config = config
        self.budget = budget  # the run's latency model at work (fit before screening, learn each member), or None
        # How a member is measured and judged: `check_on_target` in process, or the run's measuring actor
        # (compressor.search.ray_backend) when trainings run in parallel; same signature, same `Checked`.
        self.checker = checker or check_on_target
        self.reference = reference  # the run's DriftReference (compressor.models.on_target), or None
        self.space = space
        self.target = target
        self.dataset = dataset
        self.teacher_logits = teacher_logits

    def __call__(self, record: TrialRecord, previous: TrialRecord | None,
                 measured: list[Sample] | None = None) -> None:
        """Evaluate `record` (the `Evaluator` protocol); `measured` receives a sample of each member screened."""
        started = time.perf_counter()
        measured = [] if measured is None else measured
        specs = sample_family(self.space, record)
        if previous is not None:
            record.profiles = previous.profiles
            for key in _SCREEN_FIGURES:
                setattr(record, key, getattr(previous, key))
        elif record.status != "infeasible":  # a family predicted far over budget is not measured
            self._screen(record, specs, measured)
        # `+=`: a record fitted by the parallel driver arrives with the fit's seconds.
        record.screen_s += time.perf_counter() - started
        if record.status == "ok":
            self._train(record, specs, started)

    def fit(self, record: TrialRecord, measured: list[Sample] | None = None) -> None:
        """Fit a new proposal with the run's `BudgetFit`, calibrating a cold model on it first (the schedule's `fit`,
        before the evaluation); nothing without one."""
        if self.budget is None:
            return
        if self.budget.needs_calibration(record):
            self._calibrate(record, [] if measured is None else measured)
        self.budget.fit(record)

    def _calibrate(self, record: TrialRecord, measured: list[Sample]) -> None:
        """Measure sizes of the proposal's first member, and of the other warm starts' families, until the model
        has `MIN_SAMPLES` (`fit.calibration_points`).

        A cold model used to let the first proposals be screened as asked, and
        under a tight budget most were over. Measuring a spread of sizes
        instead costs about what those screenings did, once per target and
        machine, and the proposal is then fitted; the measurements are not
        screenings and the record counts them in `misc["calibration"]`.
        """
        points = calibration_points(self.space, record.params["arch"], self.budget.missing_samples(),
                                    others=self.budget.families)
        for arch in points:
            self._measure(self.space.sample(arch, record.seeds[0]), measured)
        record.misc = {**record.misc, "calibration": len(points)}

    def _measure(self, spec, measured: list[Sample], *, screening: bool = False):
        """Build `spec`, measure and judge it on the target (its `Checked`); its sample goes to the model and `measured`.

        A screening takes a first look (`FIRST_LOOK`); a calibration is measured in full, for the model's sake.
        """
        model = self.space.build(spec, self.dataset.input_shape, self.dataset.num_classes)
        features = network_features(model, self.dataset.input_shape)
        seconds = self.config.profile_seconds
        checked = self.checker(model, self.target, self.dataset.input_shape, max_seconds=seconds,
                               first_look=FIRST_LOOK * seconds if screening else None, reference=self.reference)
        measured.append((features, checked.latency_ms))
        if self.budget is not None:
            self.budget.learn([(features, checked.latency_ms)])
        return checked

    def _screen(self, record: TrialRecord, specs, measured: list[Sample]) -> None:
        screened = (record.misc or {}).get("screened")
        if screened is not None:
            self._reuse(record, screened)
            return
        for spec in specs:
            checked = self._measure(spec, measured, screening=True)
            if checked.remeasured:  # its first look was borderline (`screening_summary`'s "measured_in_full")
                misc = record.misc or {}
                record.misc = {**misc, "measured_in_full": misc.get("measured_in_full", 0) + 1}
            profile = checked.profile
            record.profiles.append(profile)
            record.latency_ms = max(record.latency_ms or 0.0, checked.latency_ms)
            if profile.get("peak_memory_mb") is not None:
                record.memory_mb = max(record.memory_mb or 0.0, profile["peak_memory_mb"])
            record.size_mb = max(record.size_mb or 0.0, profile["model_size_mb"])
            record.n_params = max(record.n_params or 0, int(profile["params"]))
            record.macs = max(record.macs or 0, int(profile["macs"]))
            if not checked.fits:
                record.status = "infeasible"
                record.reason = "; ".join(checked.reasons)
                record.loss = penalty_loss(checked.overshoot)
                return

    @staticmethod
    def _reuse(record: TrialRecord, screened: dict[str, Any]) -> None:
        """The screening this network had in this run (`WarmStart.measured`), within the budget: its figures."""
        profile = screened["profile"]
        record.profiles = [profile]
        record.latency_ms = screened["latency_ms"]
        record.memory_mb = profile.get("peak_memory_mb")
        record.size_mb = profile["model_size_mb"]
        record.n_params = int(profile["params"])
        record.macs = int(profile["macs"])

    def _train(self, record: TrialRecord, specs, started: float) -> None:
        import torch

        from compressor.search.recipe import train_config
        from compressor.train.distill import train_student

        cfg = self.config
        fidelity = record.fidelity
        accuracies, losses = [], []
        train_started = time.perf_counter()
        for spec in specs:
            remaining = None
            if cfg.trial_timeout_s is not None:
                remaining = cfg.trial_timeout_s - (time.perf_counter() - started)
                if remaining <= 0:
                    raise TrialTimeout(f"trial timeout: over {cfg.trial_timeout_s:g} s")
            torch.manual_seed(spec.seed)
            model = self.space.build(spec, self.dataset.input_shape, self.dataset.num_classes)
            result = train_student(model, self.dataset,
                                   train_config(cfg, record.params, epochs=fidelity, time_budget_s=remaining),
                                   teacher_logits=self.teacher_logits, evaluate_test=False)
            if result.status != "ok":
                raise RuntimeError(result.reason or "training failed")
            if result.epochs_run < fidelity:
                raise TrialTimeout(f"trial timeout: over {cfg.trial_timeout_s:g} s "
                                   f"after {result.epochs_run}/{fidelity} epochs")
            accuracies.append(float(result.val_accuracy))
            losses.append(float(result.val_loss))
        record.train_s = time.perf_counter() - train_started
        record.member_accuracies = accuracies
        record.val_accuracy = float(np.mean(accuracies))
        record.val_std = float(np.std(accuracies))
        record.val_loss = float(np.mean(losses))
