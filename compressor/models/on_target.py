"""The one measure-and-check step: a network -> ONNX -> `profilers.measure` on the target -> budget verdict.

Every place that asks "does this network fit the target?" goes through
`check_on_target`: the search's screening of each family member, the
reachability check before a search, the final student, the teacher's
description, the hand-designed baseline and the demo's budget. One function
means one export path, one memory policy and one budget rule, so a student
and its baseline can never be judged by different code.

Memory policy: peak memory costs a fresh measuring process (about half a
second), so by default it is measured only when the target has a memory
budget to judge; callers that report the figure (the final student, the
teacher) ask for it explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Checked", "check_on_target"]


@dataclass
class Checked:
    """A model measured on a target and judged against its budgets.

    Attributes:
        profile: the Profile dict of `profilers.measure`.
        violations: [(reason, relative overshoot)] of the budgets missed; empty when all are met.
    """

    profile: dict[str, Any]
    violations: list[tuple[str, float]] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.violations

    @property
    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.violations]

    @property
    def overshoot(self) -> float:
        """The largest relative overshoot (0.0 when every budget is met)."""
        return max((over for _, over in self.violations), default=0.0)


def check_on_target(model, target, input_shape: tuple[int, ...], *, max_seconds: float | None = None,
                    memory: bool | None = None, label: str | None = None) -> Checked:
    """Measure `model` on `target` and check it against the target's budgets.

    Args:
        model: a torch.nn.Module (exported to ONNX here), ONNX bytes or an .onnx path.
        target: a `targets.Target` whose budgets decide the verdict.
        input_shape: one sample's (C, H, W); the batch is the target's batch size.
        max_seconds: cap on the latency measurement (None: the target's own).
        memory: measure peak memory; None measures it only when the target has a memory budget.
        label: the model's name in the Profile.

    Returns:
        A `Checked` with the profile and the budgets it misses.
    """
    import profilers

    shape = (target.batch_size, *input_shape)
    if hasattr(model, "state_dict"):
        from compressor.models.onnx_export import export_onnx

        model = export_onnx(model, shape)
    if memory is None:
        memory = target.budgets.memory_mb is not None
    profile = profilers.measure(model, target, input_shape=shape, max_seconds=max_seconds, memory=memory,
                                label=label)
    return Checked(profile=profile, violations=profilers.budget_violations(profile, target.budgets))
