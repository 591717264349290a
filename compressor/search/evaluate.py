"""The real evaluator: screen a family on the target, then train it with KD.

A proposal names a *family*: its `family_size` members are
`space.sample(params["arch"], seed_j)` for the record's member seeds.

* **Screen before training.** Each member is built, exported to ONNX and
  measured on the target beside the run's drift reference
  (`compressor.models.on_target.check_on_target`), which gives its verdict:
  within, over or borderline (measured again longer, then decided by the
  point estimate). A family is feasible only if *every* member fits every
  budget (latency at the target's percentile, peak memory, file size): any
  member a user might deploy must fit. The first member that does not ends
  the screen: the family is `infeasible`, with the measured figures, the
  reason and the penalty loss, and no training is spent on it. The record's
  `latency_ms` is the figure judged (drift-corrected to the run's start);
  its `profiles` keep the raw measurements.
* **Train.** Each member is distilled from the teacher's cached logits for
  `fidelity` epochs (`compressor.train.distill.train_student`); the family's
  score is its members' mean validation accuracy (std kept). A family
  evaluated again at a higher fidelity reuses its screening.

This is the only part of the search that imports torch and the profilers'
backends, and it does so when it runs, not when it is imported.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from compressor.search.config import SearchConfig
from compressor.search.schedule import TrialTimeout
from compressor.search.store import TrialRecord
from compressor.search.strategies import penalty_loss

# A family's figures are its worst member's.
_SCREEN_FIGURES = ("latency_ms", "memory_mb", "size_mb", "n_params", "macs")


class FamilyEvaluator:
    """`Evaluator` (compressor.search.schedule) of families of `space` on `target`, trained on `dataset`."""

    def __init__(self, *, config: SearchConfig, space, target, dataset, teacher_logits: dict[str, Any],
                 reference=None, checker=None) -> None:
        from compressor.models.on_target import check_on_target

        self.config = config
        # How a member is measured and judged: `check_on_target` in process, or the run's measuring actor
        # (compressor.search.ray_backend) when trainings run in parallel; same signature, same `Checked`.
        self.checker = checker or check_on_target
        self.reference = reference  # the run's DriftReference (compressor.models.on_target), or None
        self.space = space
        self.target = target
        self.dataset = dataset
        self.teacher_logits = teacher_logits

    def __call__(self, record: TrialRecord, previous: TrialRecord | None) -> None:
        started = time.perf_counter()
        specs = [self.space.sample(record.params["arch"], s) for s in record.seeds]
        record.archs = [s.to_json() for s in specs]
        if previous is None:
            self._screen(record, specs)
        else:
            record.profiles = previous.profiles
            for key in _SCREEN_FIGURES:
                setattr(record, key, getattr(previous, key))
        record.screen_s = time.perf_counter() - started
        if record.status == "ok":
            self._train(record, specs, started)

    def _screen(self, record: TrialRecord, specs) -> None:
        for spec in specs:
            model = self.space.build(spec, self.dataset.input_shape, self.dataset.num_classes)
            checked = self.checker(model, self.target, self.dataset.input_shape,
                                      max_seconds=self.config.profile_seconds, reference=self.reference)
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

    def _train(self, record: TrialRecord, specs, started: float) -> None:
        import torch

        from compressor.train.distill import TrainConfig, train_student

        cfg = self.config
        fidelity = record.fidelity
        accuracies = []
        train_started = time.perf_counter()
        for spec in specs:
            remaining = None
            if cfg.trial_timeout_s is not None:
                remaining = cfg.trial_timeout_s - (time.perf_counter() - started)
                if remaining <= 0:
                    raise TrialTimeout(f"trial timeout: over {cfg.trial_timeout_s:g} s")
            torch.manual_seed(spec.seed)
            model = self.space.build(spec, self.dataset.input_shape, self.dataset.num_classes)
            result = train_student(
                model, self.dataset,
                TrainConfig(epochs=fidelity, lr=record.params["lr"], alpha=record.params["kd_alpha"],
                            tau=record.params["kd_tau"], seed=cfg.seed, batch_size=cfg.batch_size,
                            time_budget_s=remaining, threads=1),
                teacher_logits=self.teacher_logits, evaluate_test=False,
            )
            if result.status != "ok":
                raise RuntimeError(result.reason or "training failed")
            if result.epochs_run < fidelity:
                raise TrialTimeout(f"trial timeout: over {cfg.trial_timeout_s:g} s "
                                   f"after {result.epochs_run}/{fidelity} epochs")
            accuracies.append(float(result.val_accuracy))
        record.train_s = time.perf_counter() - train_started
        record.member_accuracies = accuracies
        record.val_accuracy = float(np.mean(accuracies))
        record.val_std = float(np.std(accuracies))
