"""The search as `compressor compress` runs it: the schedule wired to the real evaluator.

`Search` is a `Schedule` (compressor.search.schedule) whose evaluator is
`FamilyEvaluator` (compressor.search.evaluate) and whose hyperopt space is the
student space's architecture knobs plus the distillation knobs. The
evaluator fits proposals to the budget with the run's `BudgetFit`
(compressor.search.fit), whose latency model starts from the samples this
machine has stored for the target under `cache_dir`, and the schedule calls
that fit first; a proposal fitted to a network the run has trained is a
repeat (`fit.network_key` says which network params name).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from compressor.search.config import SearchConfig, WarmStart, kd_hyperopt_space, warm_start_points
from compressor.search.evaluate import FamilyEvaluator
from compressor.search.fit import BudgetFit, network_key
from compressor.search.schedule import Schedule
from compressor.search.store import TrialStore

__all__ = ["Search"]


class Search(Schedule):
    """The search over `config.space` on `target`, distilling from `teacher_logits` (see the package docstring)."""

    def __init__(self, *, config: SearchConfig, target, dataset, teacher_logits: dict[str, Any], store: TrialStore,
                 progress: Callable[[str, dict], None] | None = None, reference=None, cache_dir=None,
                 warm_starts: Sequence[WarmStart] | None = None) -> None:
        """`warm_starts`: the first points (default: the space's, `config.warm_start_points`)."""
        from compressor.spaces import get_space

        space = get_space(config.space)
        warm_starts = warm_start_points(space) if warm_starts is None else warm_starts
        evaluate = FamilyEvaluator(config=config, space=space, target=target, dataset=dataset,
                                   teacher_logits=teacher_logits, reference=reference,
                                   budget=BudgetFit.open(config, space, target, dataset, cache_dir, warm_starts,
                                                         reference))
        super().__init__(config=config, store=store, evaluate=evaluate,
                         space={"arch": space.hyperopt_space(), **kd_hyperopt_space()}, progress=progress,
                         warm_starts=warm_starts, fit=evaluate.fit,
                         network=lambda params: network_key(space, params["arch"]))
