"""The search's configuration and the pieces of a proposal that are fixed by it.

`SearchConfig` holds every knob of `compressor compress`; `kd_knobs` the
distillation knobs searched beside the architecture (declared like a space's
knobs; `kd_hyperopt_space` is derived from them); `member_seeds` the
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
    # Fit to budget (compressor.search.fit): before screening, a proposal's width is sized so its family is
    # predicted at this share of the latency budget; None screens proposals as asked.
    fill_fraction: float | None = 0.8

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
        if self.fill_fraction is not None and not 0.0 < self.fill_fraction <= 1.0:
            raise UserError(f"--fill-fraction must be in (0, 1] (a share of the latency budget), got {self.fill_fraction}")
        if self.final_epochs <= 0:
            raise UserError(f"--final-epochs must be >= 1, got {self.final_epochs}")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the original: every knob that shapes the result.

        Only `trials` may change (grow, to search longer); the final epochs, the
        screening time, the export formats and the rest are part of the result.
        """
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if k != "trials"}


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


def member_seeds(run_seed: int, proposal: int, family_size: int) -> list[int]:
    """Seeds of a family's members: distinct per proposal and member, stable across resumes."""
    return [(run_seed * 1_000_003 + proposal * 101 + j) % (2**31 - 1) for j in range(family_size)]
