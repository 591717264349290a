"""The bridge to hyperopt: ask for a proposal, tell it the outcome, restore its history.

hyperopt is driven ask/tell style instead of through `fmin`: the algorithm's
`suggest` proposes one point from the `Trials` history, the schedule
evaluates it, and the outcome is inserted back as one trial document (built by
`Trials.new_trial_docs`, so its shape is hyperopt's own). A resumed run
inserts the stored outcomes the same way before asking anything, so TPE sees
the history it had when the run stopped and proposes the same points.

**Warm start.** The first proposals are the known-good points of
`config.warm_start_points` (each group's defaults with the default KD knobs),
in their declared order, as hyperopt's `fmin(points_to_evaluate=...)` would
evaluate them: `ask(n)` for n below their count returns point n, with the
`misc` vals hyperopt's own `generate_trial` gives a given point (the labels
the point sets; the others, conditional labels of other families, empty). They
are told like any proposal, so TPE learns from them, and count towards its
random start-up proposals. Their `misc` carries `WARM_START`, so successive
halving promotes them whatever their score (`is_warm_start`), as it does
trade's. `ask` is a function of the proposal number and the
told history, so a resumed run asks them again first, in the same order.

What hyperopt is told, per outcome of an evaluation at the smallest fidelity
(the only one every proposal has, so the losses are comparable):

* feasible: status ok, loss = -score (`TrialRecord.score`: exp(-the members'
  mean validation cross-entropy), in (0, 1] like the accuracy it replaced).
* infeasible (over budget): status ok with `penalty_loss` = 1 + the worst
  relative overshoot (capped at 10), above every feasible loss, and the
  measured figures (latency, memory, size) in the result. A graded penalty
  rather than a failure: hyperopt 0.3's `tpe.suggest` counts a trial without
  a loss (any failed one) as loss = +inf, so every over-budget family would
  look equally bad, whereas the penalty tells TPE that a family 5% over the
  budget is nearer the feasible region than one 300% over. The penalty is
  the architecture's, not the distillation knobs' (they were never used: the
  family was not trained), so the trial is told with the KD labels (`kd_knobs`)
  *unobserved*: their idxs and vals are left empty, as for a conditional
  label of a family the trial did not choose. `tpe.suggest` gathers each
  label's observations with `miscs_to_idxs_vals` over the trials' `misc`, and
  `build_posterior` splits each label's observations into below/above by the
  loss of the trial (tid) they belong to (`ap_split_trials`); a trial with no
  idxs for a label adds nothing to either density of that label. So TPE's KD
  densities are built from trained families only, while its architecture
  labels learn where the budget lies. What remains shared: the below/above
  split size, ceil(gamma * sqrt(N)), counts every trial (N includes the
  infeasible ones), and so do the start-up proposals.
* repeat (a proposal fitted to a network the run had trained, so not trained
  again: `schedule`'s docstring, "Repeats"): status ok with the loss of the
  network, kept level with it: the loss of its evaluation at the smallest
  fidelity, lowered with the network's own when that is promoted (below).
  So the point TPE asked for is told what it led to. Its KD labels are left
  unobserved, as an infeasible family's are: the network was not trained
  with the knobs of this proposal.
* failed (an exception, a NaN loss): status fail, no loss. TPE files it with
  the worst trials (loss +inf) and steers away from its point, which is
  right for a network that cannot be built or trained.
* failed for a transient cause (`TrialRecord.retryable`: the device
  unreachable, a timeout): left out of the history altogether. It says
  nothing about the point, and as a failed trial TPE would steer away from
  it (and count it towards its random start-up proposals). A resumed run
  evaluates it again and tells the new outcome.

**Promotions** (`tell_promoted`: a trained family's evaluation at a higher
fidelity of successive halving). The family's loss becomes -(level + score
there), level being the fidelity's index in `config.fidelities`, so hyperopt
orders the trained families by the highest fidelity each reached, then by
its score at that fidelity, and every promoted family before every family
trained once. TPE reads losses only through that order: its good set is the
first ceil(0.25 sqrt(N)) trials (`ap_split_trials`), 2 in a search of 40
proposals. Told the smallest fidelity's score alone (until round 3), the good
set was the best after one epoch, where on digits-cluttered with 10% of the
labels the trained families scored 10-37% validation accuracy, chance being
10%, and a one-epoch ranking is mostly the draw; a promoted family has been
ranked twice, the second time after three times the training. A family whose
promotion failed keeps the rank of the last fidelity it was trained at.

**The point told is the point asked.** Fit-to-budget resizes a proposal
before it is screened, but hyperopt's `misc["vals"]` keep what TPE asked
for (`record_fitted` says why); trade is told the fitted point.

`make_strategy` picks the strategy of `SearchConfig.strategy`: this bridge for
"tpe" and "random", `trust_region.TrustRegionStrategy` for "trade" (which
reads the space's knob declarations instead of the hyperopt space and keeps
the same outcome rules).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from compressor.search.config import SearchConfig, WarmStart, kd_knobs
from compressor.search.store import UNTRAINED, TrialRecord


# The `misc` key that marks a warm start's proposal (`is_warm_start`), whatever the strategy.
WARM_START = "warm"
# The `misc` key of a repeat (`schedule.mark_repeat`): the proposal that trained its network.
REPEAT_OF = "repeat_of"


def is_warm_start(record: TrialRecord) -> bool:
    """Whether `record` is a warm start's proposal: successive halving promotes it whatever its score.

    A warm start is a known-good point (`config.warm_start_points`) that the
    search carries so as not to end below it; dropped after one epoch it
    could not do that. On digits-cluttered with 10% of the labels the
    first round (the nago default and the two budget-filling plain CNNs)
    was at 2.089-2.094 validation cross-entropy after one epoch, chance being
    2.303, and the one of the three promoted there was decided by that draw;
    after 15 epochs the deeper plain CNN was the best of every family the
    search trained, in each of 3 split seeds (BENCHMARKS.md, "A graded score
    for short trainings").
    """
    return bool((record.misc or {}).get(WARM_START))


def penalty_loss(overshoot: float) -> float:
    """hyperopt's loss for an over-budget family: above every feasible loss (which is >= -1), graded by overshoot."""
    return 1.0 + min(10.0, overshoot)


class Strategy(Protocol):
    """What the schedule asks and tells (`HyperoptStrategy`, `trust_region.TrustRegionStrategy`)."""

    def ask(self, proposal: int) -> tuple[dict[str, Any], dict[str, Any]]: ...

    def tell(self, records: list[TrialRecord]) -> None: ...

    def tell_promoted(self, records: list[TrialRecord]) -> None: ...


def make_strategy(config: SearchConfig, space: dict[str, Any], warm_starts: Sequence[WarmStart],
                  novel: Callable[[int, dict[str, Any]], bool] | None = None) -> Strategy:
    """The strategy of `config.strategy`, evaluating `warm_starts` first.

    `space` is the hyperopt space; trade reads `config.space`'s knob declarations
    instead, and so do the warm starts' hyperopt labels (`Space.hyperopt_point`).
    `novel`: trade's test of a Thompson candidate (`trust_region`'s docstring, "Novel networks");
    hyperopt's algorithms propose one point per ask and are told its repeats instead.
    """
    if not warm_starts and config.strategy != "trade":
        return HyperoptStrategy(config, space)
    from compressor.spaces import get_space

    student_space = get_space(config.space)
    if config.strategy == "trade":
        from compressor.search.trust_region import TrustRegionStrategy

        return TrustRegionStrategy(config, student_space, novel=novel, warm_starts=warm_starts)
    return HyperoptStrategy(config, space, [w.hyperopt_point(student_space) for w in warm_starts])


class HyperoptStrategy:
    """One hyperopt algorithm (TPE or random) over `space`, with its `Trials` history.

    hyperopt is imported when the strategy is created, not with this module:
    the CLI imports the search package to build its parser.
    """

    def __init__(self, config: SearchConfig, space: dict[str, Any], points: Sequence[dict[str, Any]] = ()) -> None:
        """`points`: evaluated first, in order ({label: value as hyperopt's vals hold it}, fmin's points_to_evaluate)."""
        from hyperopt import Trials
        from hyperopt.base import Domain

        self.config = config
        self.space = space
        self.trials = Trials()
        self._domain = Domain(lambda _: 0.0, space)
        self.points = [dict(p) for p in points]
        for point in self.points:
            unknown = sorted(set(point) - set(self._domain.params))
            if unknown:
                raise ValueError(f"warm-start point sets {unknown[0]!r}, not a label of this hyperopt space")

    def _algo(self):
        from hyperopt import rand, tpe

        if self.config.strategy == "random":
            return rand.suggest
        # TPE's default of 20 random start-up proposals would be the whole of a short search.
        return functools.partial(tpe.suggest, n_startup_jobs=max(4, min(10, self.config.trials // 4)))

    def ask(self, proposal: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The decoded parameters of proposal number `proposal` and its hyperopt `misc` (kept in the store)."""
        from hyperopt import space_eval

        warm = proposal < len(self.points)
        if warm:
            from hyperopt.fmin import generate_trial

            given = generate_trial(proposal, self.points[proposal])["misc"]["vals"]
            vals = {label: [_plain(x) for x in given.get(label, [])] for label in self._domain.params}
        else:
            seed = (self.config.seed * 7919 + proposal) % (2**31 - 1)
            doc = self._algo()([proposal], self._domain, self.trials, seed)[0]
            vals = {k: [_plain(x) for x in v] for k, v in doc["misc"]["vals"].items()}
        point = {k: v[0] for k, v in vals.items() if v}
        misc = {"vals": vals, WARM_START: True} if warm else {"vals": vals}
        return _plain(space_eval(self.space, point)), misc

    def tell(self, records: list[TrialRecord]) -> None:
        """Add the outcomes of evaluations at the smallest fidelity to the history (see the module docstring)."""
        docs = [self._trial_doc(rec) for rec in records if rec.misc is not None and not rec.retryable]
        results = {doc["tid"]: doc["result"] for doc in [*self.trials.trials, *docs]}
        for doc in docs:
            network = results.get(doc["result"].get(REPEAT_OF), {}).get("loss")
            if network is not None:
                doc["result"]["loss"] = min(doc["result"]["loss"], network)
        if docs:
            self.trials.insert_trial_docs(docs)
            self.trials.refresh()

    def tell_promoted(self, records: list[TrialRecord]) -> None:
        """Rank each trained family by the highest fidelity it reached, then its score there (module docstring)."""
        results = {doc["tid"]: doc["result"] for doc in self.trials.trials}
        for rec in records:
            result = results.get(rec.proposal, {})
            if rec.status != "ok" or rec.retryable or result.get("loss") is None:
                continue
            level = self.config.fidelities.index(rec.fidelity)
            # The network's repeats rank with it.
            for told in [result, *(r for r in results.values() if r.get(REPEAT_OF) == rec.proposal)]:
                told["loss"] = min(told["loss"], -(level + rec.score))
        self.trials.refresh()

    def _trial_doc(self, rec: TrialRecord) -> dict[str, Any]:
        from hyperopt import JOB_STATE_DONE

        tid = rec.proposal
        vals = rec.misc["vals"]
        if rec.status in UNTRAINED:
            # Not trained with these knobs: its outcome says nothing about them (see the module docstring).
            vals = {k: ([] if k in _kd_labels() else v) for k, v in vals.items()}
        misc = {"tid": tid, "cmd": self._domain.cmd, "workdir": self._domain.workdir,
                "idxs": {k: ([tid] if v else []) for k, v in vals.items()}, "vals": vals}
        [doc] = self.trials.new_trial_docs([tid], [None], [_result(rec)], [misc])
        doc["state"] = JOB_STATE_DONE
        return doc


@functools.cache
def _kd_labels() -> frozenset[str]:
    """The hyperopt labels of the distillation knobs (`kd_hyperopt_space` labels them with their bare names)."""
    return frozenset(k.name for k in kd_knobs())


def _result(rec: TrialRecord) -> dict[str, Any]:
    from hyperopt import STATUS_FAIL, STATUS_OK

    if rec.status == "failed":
        return {"status": STATUS_FAIL}
    result = {"status": STATUS_OK, "loss": rec.loss}
    if rec.status == "repeat":
        result[REPEAT_OF] = rec.misc[REPEAT_OF]
    if rec.status == "infeasible":
        result.update(infeasible=True, latency_ms=rec.latency_ms, memory_mb=rec.memory_mb, size_mb=rec.size_mb)
    return result


def _plain(value: Any) -> Any:
    """numpy scalars and tuples -> JSON-able Python values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- Fit to budget (compressor.search.fit): what the strategies are told ---------------------------------------


def record_fitted(misc: dict[str, Any], space, arch: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `misc` whose trade point (`misc["x"]`) has the knobs fit-to-budget changed set to `values`.

    Fit-to-budget resizes a proposal before it is screened. trade is told the
    fitted point: its trust region is centred on the best network evaluated,
    and a proposal's `x` is set to the fitted values' bin centres
    (`trust_region.to_unit`), as a snapped proposal has. hyperopt's
    `misc["vals"]` keep the point TPE asked for, so TPE models the map from
    its proposals to their outcome (the fit is a function of the proposal and
    the run's latency model). Told the fitted values instead (until round 3),
    TPE never saw the sizes and depths it had asked for, and its expected
    improvement, l(x) / g(x) with both densities near their prior there, is
    highest where neither has observations, so it kept asking for them: on
    digits-cluttered with 10% of the labels (a 5-minute search, split seed 2)
    13 of its 14 plain proposals after the start-up ones asked for 3 convs in
    stage 1 and 32-64 channels there, and the fit shrank 13 of the 14 back to
    one conv. Told what it asked, 8 of 14 asked for 3 convs, at 8-64 channels.
    """
    import copy

    fitted = copy.deepcopy(misc)
    if "x" in fitted:
        from compressor.search.trust_region import to_unit

        knobs = {k.name: k for k in space.search_groups()[space.group_of(arch)]}
        order = list(knobs)
        for name, value in values.items():
            fitted["x"][order.index(name)] = to_unit(knobs[name], value)
    return fitted
