"""The search's schedule: proposals, the screening budget, successive-halving rounds, resume.

The schedule decides *what* is evaluated and in which order; *how* a family
is evaluated is an injected `Evaluator` (the real one, screening and KD
training, is `compressor.search.evaluate.FamilyEvaluator`; tests pass a fake
one and run the whole schedule in milliseconds, without torch).

* Proposal n is asked from the strategy (`strategies.make_strategy`) and evaluated at
  the smallest fidelity. The first proposals are the warm starts
  (`config.warm_start_points`: the space's known-good points), whatever the
  strategy. An infeasible one (over budget) costs a screening
  and no training, so it does not count towards `trials`; at most
  `trials * screen_factor` proposals are asked.
* With `search_minutes`, no new proposal is asked once the search's
  wall-clock time (kept in the store's meta `search_seconds`, so it adds up
  over resumes) has reached it; the round in progress is still promoted, so
  the best family gets its higher fidelities. Equal time, not equal trials,
  is how strategies whose proposals cost differently are compared fairly.
* Trained families come in rounds of η^(L-1); when a round is full, the best
  1/η of its feasible families are evaluated at the next fidelity, the best
  1/η² at the one after, and so on (successive halving). "Best" is by the
  record's `score` (from its validation cross-entropy), as is the loss the
  strategy is told (-score). A warm start goes on whatever its score
  (`strategies.is_warm_start` says why).
* **Fit to budget, then repeats.** With `fit` (the run's
  `fit.BudgetFit`, compressor.search.fit), a new proposal is sized to the
  budget before anything else; one predicted far over it is committed
  infeasible, unmeasured. The fit often lands on a network the run has
  already trained: the widths of a plain CNN come in a few sizes that fill
  the budget, and successive proposals near one incumbent snap to the same
  one. In the 18 five-minute searches of BENCHMARKS.md ("Repeats"), 27-40%
  of TPE's trainings at the smallest fidelity trained a network already
  trained in the run, 11-33% of TRADE's and 7-18% of random's: the
  model-based strategies, which propose near what worked, spent the most
  time on networks they knew. With `network` (the space's
  `fit.network_key` of the fitted arch), a new proposal whose network was
  trained at the smallest fidelity (status ok) is committed at once as a
  *repeat* (status "repeat", `misc["repeat_of"]` = that proposal): not
  screened, not trained, not counted among the `trials` nor put in a round,
  with that evaluation's figures and loss. The strategy is told it
  (strategies' docstring says what each learns). What a second training
  would have measured is the network again at other distillation knobs and
  another draw of its weights; the finalists' knobs are tuned afresh from the
  defaults (compressor.pipeline.finish), so the search's knobs serve only to
  rank networks, and its time is better spent on a network it has not
  trained. A repeat still costs a proposal (at most `trials * screen_factor`
  are asked). trade asks `Schedule.novel` of its Thompson candidates (the
  fit of a copy, then this test, plus "predicted far over"), so it proposes
  few repeats (trust_region's docstring, "Novel networks"); TPE and random
  propose one point per ask and are told the repeats.
* Every evaluation is committed to the store when it ends. A new `Schedule`
  over the same store replays the same sequence: an evaluation found in the
  store is not run again and a proposal found there is not asked again, so
  the strategy proposes the points it would have proposed without the
  interruption. At most the evaluation in flight is redone.
* An evaluation that raises is a failed trial, never a crashed search. When
  the cause is transient (`TRANSIENT`: the remote device unreachable, a trial
  timeout) the record is marked `retryable`: the strategy does not learn
  from it, and a resumed run evaluates the same point again.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Protocol, Sequence

from profilers import RemoteError
from targets.errors import first_line

from compressor.search.config import SearchConfig, WarmStart, member_seeds, warm_start_points
from compressor.search.store import UNTRAINED, TrialRecord, TrialStore
from compressor.search.strategies import REPEAT_OF, Strategy, is_warm_start, make_strategy

_log = logging.getLogger(__name__)


class TrialTimeout(Exception):
    """A trial ran past `SearchConfig.trial_timeout_s`."""


# Causes that say nothing about the proposal itself: a busy or unreachable machine.
TRANSIENT = (RemoteError, TrialTimeout)


class Evaluator(Protocol):
    """Evaluates one family at one fidelity, filling in `record` (it may raise: the trial then fails).

    `record` arrives with status "ok" and its proposal, fidelity, params,
    misc and member seeds. `previous` is the same family's record at the
    previous fidelity (its screening is reused), or None at the smallest
    fidelity, where the family is screened first. The evaluator sets the
    measured figures and durations, and either `val_accuracy` and
    `val_loss` (status "ok", the schedule derives the loss from the
    record's `score`) or status "infeasible" with a reason and
    `loss = strategies.penalty_loss(overshoot)`.
    """

    def __call__(self, record: TrialRecord, previous: TrialRecord | None) -> None: ...


class Schedule:
    """One run of the search over a trial store (see the module docstring)."""

    def __init__(self, *, config: SearchConfig, store: TrialStore, evaluate: Evaluator, space: dict[str, Any],
                 progress: Callable[[str, dict], None] | None = None,
                 warm_starts: Sequence[WarmStart] | None = None, strategy: Strategy | None = None,
                 fit: Callable[[TrialRecord], None] | None = None,
                 network: Callable[[dict[str, Any]], str] | None = None) -> None:
        """`space`: the hyperopt space (trade reads `config.space`'s knobs); `progress(event, info)` hears each evaluation.

        `warm_starts`: the points proposed first (default: `warm_start_points` of `config.space`; `()`:
        none, for a hyperopt space that is not a registered space's). `strategy`: one built by the
        caller (a hyperopt space of its own with its own first points) instead of `make_strategy`'s.
        `fit`: sizes a new proposal's record before it is evaluated, and may make it infeasible (predicted
        over the budget). `network`: the network a proposal's params name once fitted, which says what is a
        repeat (module docstring); None: nothing is.
        """
        self.config = config
        self.store = store
        self.evaluate = evaluate
        self.fit = fit
        self.network = network
        self.progress = progress or (lambda event, info: None)
        # Rows are appended, never rewritten: a retried evaluation's row supersedes the earlier one.
        self._latest: dict[tuple[int, int], TrialRecord] = {}
        for rec in store.records():
            self._latest[(rec.proposal, rec.fidelity)] = rec
        self._retry = {key for key, rec in self._latest.items() if rec.retryable}
        # network -> the evaluation at the smallest fidelity that trained it (`_trained`)
        self._networks: dict[str, TrialRecord] = {}
        for rec in self.records:
            self._learn_network(rec)
        if strategy is None:
            if warm_starts is None:
                from compressor.spaces import get_space

                warm_starts = warm_start_points(get_space(config.space))
            strategy = make_strategy(config, space, warm_starts, novel=None if network is None else self.novel)
        self.strategy = strategy
        self._clock_base = float(store.get_meta("search_seconds") or 0.0)
        self._clock_start = time.perf_counter()
        self.strategy.tell([rec for rec in self.records if rec.fidelity == config.fidelities[0]])
        self.strategy.tell_promoted([rec for rec in self.records if rec.fidelity != config.fidelities[0]])

    @property
    def records(self) -> list[TrialRecord]:
        """The evaluations that count, in the order they ended: the latest of each (proposal, fidelity)."""
        return sorted(self._latest.values(), key=lambda rec: rec.id)

    def search_seconds(self) -> float:
        """Wall-clock seconds this search has run, over every run of it on this store."""
        return self._clock_base + time.perf_counter() - self._clock_start

    def out_of_time(self) -> bool:
        """Whether `search_minutes` is spent: no new proposal is asked."""
        minutes = self.config.search_minutes
        return minutes is not None and self.search_seconds() >= 60 * minutes

    def _done(self, proposal: int, fidelity: int) -> TrialRecord | None:
        key = (proposal, fidelity)
        return None if key in self._retry else self._latest.get(key)

    def run(self) -> list[TrialRecord]:
        """Propose, screen and train until `trials` families have been trained (see `screen_factor`) or time is up."""
        cfg = self.config
        first = cfg.fidelities[0]
        round_size = cfg.eta ** (len(cfg.fidelities) - 1)
        proposal, trained, members = 0, 0, []
        while trained < cfg.trials and proposal < cfg.trials * cfg.screen_factor:
            rec = self._done(proposal, first)
            if rec is None:
                if self.out_of_time():
                    break
                # A transient failure of an earlier run is evaluated again at the point it was given.
                retried = self._latest.get((proposal, first))
                params, misc = (retried.params, retried.misc) if retried else self.strategy.ask(proposal)
                rec = self._evaluate(proposal, params, misc, first, previous=None)
            proposal += 1
            if rec.status in UNTRAINED:
                continue
            trained += 1
            members.append(rec.proposal)
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
                            key=lambda r: (-r.score, r.proposal))
            keep = max(1, len(members) // cfg.eta ** level)
            for rec in promoted(ranked, keep):
                if self._done(rec.proposal, cfg.fidelities[level]) is None:
                    self._evaluate(rec.proposal, rec.params, rec.misc, cfg.fidelities[level], previous=rec)

    def _evaluate(self, proposal: int, params: dict[str, Any], misc: dict[str, Any] | None, fidelity: int,
                  previous: TrialRecord | None) -> TrialRecord:
        rec = self._new_record(proposal, params, misc, fidelity)
        self.progress("start", {"proposal": proposal, "fidelity": fidelity})
        started = time.perf_counter()
        try:
            if previous is not None or not self._settled(rec):
                self.evaluate(rec, previous)
        except Exception as exc:  # noqa: BLE001 - any candidate failure is a failed trial, never a crashed search
            record_failure(rec, exc, transient=isinstance(exc, TRANSIENT))
        rec.total_s = time.perf_counter() - started
        return self._commit(rec)

    def _settled(self, rec: TrialRecord) -> bool:
        """Fit a new proposal (`fit`); whether that settled it without an evaluation: infeasible as predicted, or a
        repeat (module docstring). The fit's seconds are the record's `screen_s`."""
        if self.fit is not None:
            started = time.perf_counter()
            self.fit(rec)
            rec.screen_s = time.perf_counter() - started
            if rec.status == "infeasible":
                return True
        earlier = self._trained(rec.params)
        if earlier is not None:
            mark_repeat(rec, earlier)
        return rec.status == "repeat"

    def _trained(self, params: dict[str, Any]) -> TrialRecord | None:
        """The evaluation at the smallest fidelity that trained the network `params` name, if one did (`network`)."""
        return None if self.network is None else self._networks.get(self.network(params))

    def _learn_network(self, rec: TrialRecord) -> None:
        if self.network is not None and rec.fidelity == self.config.fidelities[0] and rec.status == "ok":
            self._networks.setdefault(self.network(rec.params), rec)

    def _pending_networks(self) -> set[str]:
        """Networks being trained but not yet committed (none in process: one evaluation at a time)."""
        return set()

    def novel(self, proposal: int, params: dict[str, Any]) -> bool:
        """Whether proposal `proposal` at `params` would, once fitted, train a network: one neither trained in this
        run (nor in training) nor predicted far over the budget. trade asks it of its Thompson candidates
        (`trust_region`'s docstring, "Novel networks"); the fit of a copy, so nothing is recorded."""
        rec = self._new_record(proposal, params, {}, self.config.fidelities[0])
        if self.fit is not None:
            self.fit(rec)
        if rec.status == "infeasible":
            return False
        network = self.network(rec.params)
        return network not in self._networks and network not in self._pending_networks()

    def _new_record(self, proposal: int, params: dict[str, Any], misc: dict[str, Any] | None,
                    fidelity: int) -> TrialRecord:
        """The record an evaluator fills in: status "ok", the point and the family's member seeds."""
        cfg = self.config
        return TrialRecord(proposal=proposal, fidelity=fidelity, status="ok", params=params,
                           seeds=member_seeds(cfg.seed, proposal, cfg.family_size), misc=misc)

    def _commit(self, rec: TrialRecord) -> TrialRecord:
        """Store an ended evaluation, make it the one that counts, tell the strategy (`tell` or `tell_promoted`)."""
        if rec.status in ("ok", "repeat"):
            rec.loss = -rec.score
        elif rec.status == "failed":
            rec.loss = None
        self.store.add(rec)
        self.store.set_meta("search_seconds", self.search_seconds())
        key = (rec.proposal, rec.fidelity)
        self._latest[key] = rec
        self._retry.discard(key)
        self._learn_network(rec)
        if rec.fidelity == self.config.fidelities[0]:
            self.strategy.tell([rec])
        else:
            self.strategy.tell_promoted([rec])
        self.progress("end", {"record": rec})
        return rec


def promoted(ranked: list[TrialRecord], keep: int) -> list[TrialRecord]:
    """Who goes on from a rung ranked best first: the first `keep`, and every warm start (`is_warm_start`)."""
    return ranked[:keep] + [rec for rec in ranked[keep:] if is_warm_start(rec)]


def mark_repeat(rec: TrialRecord, earlier: TrialRecord) -> None:
    """Make `rec` a repeat of `earlier`, the evaluation that trained its network: that evaluation's figures, no
    screening and no training of its own (`profiles`, `archs` and the durations stay empty)."""
    rec.status = "repeat"
    rec.reason = f"the network of proposal {earlier.proposal}, trained already"
    rec.misc = {**(rec.misc or {}), REPEAT_OF: earlier.proposal}
    for figure in ("latency_ms", "memory_mb", "size_mb", "n_params", "macs", "val_accuracy", "val_std",
                   "member_accuracies", "val_loss"):
        setattr(rec, figure, getattr(earlier, figure))


def record_failure(rec: TrialRecord, exc: BaseException, *, transient: bool) -> None:
    """Mark `rec` failed by `exc`: retryable when the cause is transient, the reason its first line."""
    rec.status, rec.retryable = "failed", transient
    message = first_line(exc)
    rec.reason = message if isinstance(exc, TrialTimeout) else f"{type(exc).__name__}: {message}"
    _log.debug("proposal %d at %d epochs failed", rec.proposal, rec.fidelity, exc_info=exc)
