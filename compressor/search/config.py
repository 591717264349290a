"""The search's configuration and the pieces of a proposal that are fixed by it.

`SearchConfig` holds every knob of `compressor compress`; `kd_knobs` the
distillation knobs searched beside the architecture (declared like a space's
knobs; `kd_hyperopt_space` is derived from them); `warm_start_points` the
known-good points every strategy evaluates first; `member_seeds` the
seeds that turn one proposal into its family's members. Nothing here imports
torch or hyperopt at import time: the CLI imports this module to build its
parser.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from compressor.errors import UserError

STRATEGIES = ("tpe", "random", "trade")


@dataclass(frozen=True)
class SearchConfig:
    """Every knob of `compressor compress` (the CLI maps one flag to one field)."""

    trials: int = 24
    # Wall-clock minutes of search (screening and training, summed over resumes) after which no new proposal is
    # asked; the families in flight finish and successive halving promotes as usual. None: `trials` alone.
    search_minutes: float | None = None
    strategy: str = "tpe"
    # The union of nago and the zoo: it holds the budget-filling plain CNNs (the baseline's network and a deeper
    # one, the search's first proposals) and, on digits-cluttered, its searches were ahead of nago's
    # (docs/design.md, "`--space all`").
    space: str = "all"
    family_size: int = 2
    fidelities: tuple[int, ...] = (1, 3)
    eta: int = 3
    final_epochs: int = 15
    # lr/KD evaluations of the winner's tuning and of the baseline's (compressor.pipeline.finish, .baselines);
    # None: as many as the search trained families.
    tuning_trials: int | None = None
    # Families trained for final_epochs before the student is chosen on validation (compressor.pipeline.finalists);
    # with --baseline the baseline is one more.
    finalists: int = 2
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
    # Trainings run at once: 1 is the in-process schedule; more run on Ray (compressor.search.ray_backend),
    # a local instance or the cluster at `ray_address`.
    workers: int = 1
    ray_address: str | None = None

    @property
    def parallel(self) -> bool:
        """Whether the search runs on Ray (compressor.search.parallel) rather than in process."""
        return self.workers > 1 or self.ray_address is not None

    # Fit to budget (compressor.search.fit): before screening, a proposal's width is sized so its family is
    # predicted at this share of the latency budget; None screens proposals as asked.
    fill_fraction: float | None = 0.8

    def validate(self) -> "SearchConfig":
        if self.trials <= 0:
            raise UserError(f"--trials must be >= 1, got {self.trials}")
        if self.search_minutes is not None and self.search_minutes <= 0:
            raise UserError(f"--search-minutes must be > 0, got {self.search_minutes}")
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
        if self.workers < 1:
            raise UserError(f"--workers must be >= 1, got {self.workers}")
        if self.fill_fraction is not None and not 0.0 < self.fill_fraction <= 1.0:
            raise UserError(f"--fill-fraction must be in (0, 1] (a share of the latency budget), got {self.fill_fraction}")
        if self.tuning_trials is not None and self.tuning_trials <= 0:
            raise UserError(f"--tuning-trials must be >= 1, got {self.tuning_trials}")
        if self.finalists <= 0:
            raise UserError(f"--finalists must be >= 1, got {self.finalists}")
        if self.final_epochs <= 0:
            raise UserError(f"--final-epochs must be >= 1, got {self.final_epochs}")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the original: every knob that shapes the result.

        Only `trials` and `search_minutes` (grow, to search longer) and where the trainings run
        (`workers`, `ray_address`: a run killed on a cluster may resume on one
        machine) may change; the final epochs, the screening time, the export
        formats and the rest are part of the result.
        """
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if k not in ("trials", "search_minutes", "workers", "ray_address")}


def kd_knobs() -> tuple:
    """The distillation knobs searched beside the architecture, declared like a space's knobs.

    α starts at 0 so that the search can turn KD off where it hurts a small
    student. τ stops at 6 rather than the 10 common in the KD literature: with a confident
    teacher (logit std ~13 on digits) the τ²-weighted KL term at τ≈10 drowned
    the cross-entropy and a 19k-parameter student stalled at 47% after 20
    epochs, while τ=4 trained normally. The defaults are `TrainConfig`'s (what
    `--strategy trade` evaluates first). A function, not a constant: the
    spaces package imports networkx, and the CLI imports this module to build
    its parser.
    """
    from compressor.spaces.base import FloatKnob

    return (
        FloatKnob("kd_alpha", 0.5, 0.0, 0.9, help="weight of the distillation term"),
        FloatKnob("kd_tau", 4.0, 1.0, 6.0, help="distillation temperature"),
        FloatKnob("lr", 0.1, 0.01, 0.2, log=True, help="SGD learning rate"),
    )


def kd_hyperopt_space() -> dict[str, Any]:
    """The distillation knobs (`kd_knobs`) as hyperopt expressions, labelled with their bare names."""
    return {k.name: k.hyperopt(k.name) for k in kd_knobs()}


@dataclass(frozen=True)
class WarmStart:
    """A known-good point: one group of the space (`Space.search_groups`) at given knob values, with KD knobs.

    `arch` holds the group's searchable knobs, `kd` the distillation knobs
    (`kd_knobs`); `params` is the proposal the evaluator reads.
    """

    group: str
    arch: dict[str, Any]
    kd: dict[str, Any]
    # The screening this point already had in this run, within the budget (the plain CNN at the baseline's
    # width, from the width session): {"session", "latency_ms" (judged), "profile"}. Fit-to-budget keeps its
    # size and the search's screening reuses the verdict (`fit.BudgetFit.fit`, `evaluate.FamilyEvaluator`).
    measured: dict[str, Any] | None = None

    def params(self, space) -> dict[str, Any]:
        return {"arch": space.group_params(self.group, dict(self.arch)), **self.kd}

    def hyperopt_point(self, space) -> dict[str, Any]:
        """The point as hyperopt labels it in the search's space (`{"arch": space's, **kd_hyperopt_space()}`)."""
        kd = {k.name: k for k in kd_knobs()}
        return {**space.hyperopt_point(self.params(space)["arch"]),
                **{name: kd[name].hyperopt_value(value) for name, value in self.kd.items()}}


def warm_start_points(space) -> list[WarmStart]:
    """The points every search evaluates first, in this order: each group's declared defaults, default KD.

    One per group of `space.search_groups()`: nago's default generator; the zoo's
    plain CNN (the hand-designed baseline's family) and each family's default;
    both for the `all` space. The defaults are the spaces' known-good settings,
    so the search starts from them instead of hoping to find them: a search
    that ends below one of them has not earned its place. The hyperopt bridge
    asks them first (`strategies.HyperoptStrategy`, fmin's points_to_evaluate)
    and `--strategy trade` starts each trust region's design with its group's
    (`trust_region`); a caller may pass others (scaled to a budget, say) to
    `Schedule`, several per group if it likes (`compress` gives the plain group two).
    Every warm start that trains goes on to the highest fidelity
    (`strategies.is_warm_start`): one epoch is too short to drop a known-good point.
    """
    kd = {k.name: k.default for k in kd_knobs()}
    return [WarmStart(group, {k.name: k.default for k in knobs}, dict(kd))
            for group, knobs in space.search_groups().items()]


def member_seeds(run_seed: int, proposal: int, family_size: int) -> list[int]:
    """Seeds of a family's members: distinct per proposal and member, stable across resumes."""
    return [(run_seed * 1_000_003 + proposal * 101 + j) % (2**31 - 1) for j in range(family_size)]
