"""The parallel schedule: several evaluations in flight, results committed as they arrive.

`ParallelSchedule` is the `Schedule` (compressor.search.schedule) for
`--workers N` / `--ray-address`: the same trial store, strategy, member seeds,
outcome rules and resume, but up to `pool.slots` evaluations run at once in an
injected `Pool` (Ray's, compressor.search.ray_backend, from the CLI; a thread
pool in the tests). The driver alone asks, promotes and writes `trials.sqlite`.

* **Asking several proposals at once: constant liar.** A proposal asked while
  others are still in flight is asked from a *copy* of the strategy that has
  been told every pending proposal with a lie: status ok, loss = the worst
  feasible loss so far at the smallest fidelity (0.0, an accuracy of zero,
  before any), the "CL-max" rule of Ginsbourger et al. (2010). TPE then sees
  the pending points as poor and looks elsewhere; TRADE's initial design moves
  on to its next point, and its GP treats the pending points as known and bad.
  The copy is thrown away: the real strategy is told real outcomes only, in
  the order they are committed, which is the order a resumed run replays them
  in (`Schedule.__init__`). With nothing pending the real strategy is asked
  directly, as the in-process schedule does.
* **Successive halving as results arrive: ASHA** (Li et al. 2020). Rung r is
  the evaluations at `fidelities[r]`; its *results* are its trained ones (ok
  or failed, not a retryable failure, which will be redone). Whenever a slot
  is free the driver looks from the highest rung down for a family that is in
  the top ``n_r // eta`` (by score, then proposal) of the n_r
  results at its rung so far, or is a warm start (`schedule.promoted`), and
  has not been evaluated (nor is in flight) at the next fidelity, and
  promotes it; only when no promotion is due does it
  ask a new proposal. Unlike the in-process rounds, no slot waits for a round
  to fill: a family may be promoted on a partial ranking (that is the price of
  never idling). When no proposal is left to ask and nothing is in flight,
  ``max(1, n_r // eta)`` is used, so the best family of every rung goes up, as
  in a round of the synchronous schedule.
* **Counting trials.** New proposals are asked while the trained families
  plus the proposals in flight at the smallest fidelity are fewer than
  `trials` (a proposal in flight may still turn out infeasible, and then
  another is asked); at most `trials * screen_factor` are asked, and none
  once `search_minutes` is spent (the ones in flight finish and promote). Proposals are
  numbered in order, so a resumed run skips the stored ones and evaluates the
  retryable ones again at their stored points.
* **Fit to budget in the driver.** With a `BudgetFit` (compressor.search.fit;
  from the CLI, the run's one latency model, persisted per target as in
  process), the driver fits each new proposal before it submits it, exactly
  where the in-process evaluator would: the fitted record is what the worker
  screens and trains and what the liars and the store see. A proposal
  predicted far over budget is committed infeasible at once, unmeasured, and
  never submitted. A pool returns, with each record, a sample (features,
  judged latency) of every member it measured (`Outcome.samples`); the
  driver's model learns them when it commits the outcome, so it sees every
  measured member, whichever worker or machine measured it. A stored record
  replays as it is; a retryable one is fitted again at its stored point, as in
  process. A fitted proposal whose network a committed evaluation has trained
  is committed as a repeat, as in process (`schedule`'s docstring); one
  whose network is still in flight is trained, since nothing is known of it
  yet.
* **Nothing lost.** An outcome is committed the moment it arrives; a pool
  reports a failure with whether it is transient (a killed worker, an
  unreachable device: failed and `retryable`). A driver killed with `kill -9`
  loses the evaluations in flight and nothing else; `--resume` replays the
  store like any run.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from compressor.search.config import SearchConfig, WarmStart
from compressor.search.fit import BudgetFit, Sample
from compressor.search.schedule import Schedule, promoted, record_failure
from compressor.search.store import UNTRAINED, TrialRecord, TrialStore
from compressor.search.strategies import Strategy

Key = tuple[int, int]  # (proposal, fidelity)


@dataclass
class Outcome:
    """An evaluation that ended in a pool: the filled record, or the driver's record and what went wrong.

    `samples`: the (features, judged latency) of each member the evaluation measured, for the driver's model.
    """

    record: TrialRecord
    error: BaseException | None = None
    transient: bool = False
    samples: list[Sample] = field(default_factory=list)


class Pool(Protocol):
    """Where evaluations run: `slots` at once; results come back in the order they end."""

    slots: int

    def submit(self, record: TrialRecord, previous: TrialRecord | None) -> None: ...

    def next_result(self) -> Outcome: ...


def liar_loss(records: list[TrialRecord], fidelity: int) -> float:
    """The lie told for a pending proposal: the worst feasible loss at `fidelity` so far, 0.0 before any."""
    return max((r.loss for r in records if r.fidelity == fidelity and r.status == "ok" and r.loss is not None),
               default=0.0)


def ask_batch(strategy: Strategy, proposals: list[int], pending: list[TrialRecord],
              liar: float) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(params, misc) of each of `proposals`, asked with `pending` and the earlier ones told `liar` (a copy)."""
    if not pending and len(proposals) == 1:
        return [strategy.ask(proposals[0])]
    shadow = copy.deepcopy(strategy)
    shadow.tell([_lie(rec, liar) for rec in pending])
    asked = []
    for proposal in proposals:
        params, misc = shadow.ask(proposal)
        asked.append((params, misc))
        shadow.tell([_lie(TrialRecord(proposal=proposal, fidelity=0, status="ok", params=params, seeds=[],
                                      misc=misc), liar)])
    return asked


def _lie(rec: TrialRecord, liar: float) -> TrialRecord:
    # No cross-entropy: the lie's score is its accuracy, -liar.
    return dataclasses.replace(rec, status="ok", loss=liar, val_accuracy=-liar, val_loss=None, retryable=False)


def asha_promotion(latest: Mapping[Key, TrialRecord], in_flight: set[Key], config: SearchConfig, *,
                   draining: bool = False) -> TrialRecord | None:
    """The next family to promote (its record at the rung below), highest rung first; None when none is due."""
    fidelities = config.fidelities
    for rung in range(len(fidelities) - 2, -1, -1):
        results = [rec for (_, fidelity), rec in latest.items()
                   if fidelity == fidelities[rung] and rec.status not in UNTRAINED and not rec.retryable]
        keep = len(results) // config.eta
        if draining and results:
            keep = max(1, keep)
        ranked = sorted((r for r in results if r.status == "ok"), key=lambda r: (-r.score, r.proposal))
        for rec in promoted(ranked, keep):
            above = (rec.proposal, fidelities[rung + 1])
            done = latest.get(above)
            if above not in in_flight and (done is None or done.retryable):
                return rec
    return None


class ParallelSchedule(Schedule):
    """The schedule with up to `pool.slots` evaluations in flight (see the module docstring)."""

    def __init__(self, *, config: SearchConfig, store: TrialStore, pool: Pool, space: dict[str, Any],
                 progress: Callable[[str, dict], None] | None = None,
                 warm_starts: Sequence[WarmStart] | None = None, budget: BudgetFit | None = None,
                 network: Callable[[dict[str, Any]], str] | None = None) -> None:
        super().__init__(config=config, store=store, evaluate=None, space=space, progress=progress,
                         warm_starts=warm_starts, fit=None if budget is None else budget.fit, network=network)
        self.pool = pool
        self.budget = budget  # fits new proposals before they are submitted and learns the returned samples
        self._flights: dict[Key, TrialRecord] = {}
        self._next = 0  # the next proposal number to look at

    def _pending_networks(self) -> set[str]:
        """The networks of the new proposals in flight: trade's Thompson sampling passes over them too."""
        first = self.config.fidelities[0]
        return {self.network(rec.params) for (_, fidelity), rec in self._flights.items() if fidelity == first}

    def _counted(self) -> dict[Key, TrialRecord]:
        """The evaluations that count and are not waiting to be redone (a retryable one of an earlier run)."""
        return {key: rec for key, rec in self._latest.items() if key not in self._retry}

    def run(self) -> list[TrialRecord]:
        while True:
            while len(self._flights) < self.pool.slots and self._submit_next(draining=False):
                pass
            if not self._flights and not self._submit_next(draining=True):
                return self.records
            outcome = self.pool.next_result()
            rec = outcome.record
            if outcome.error is not None:
                record_failure(rec, outcome.error, transient=outcome.transient)
            del self._flights[(rec.proposal, rec.fidelity)]
            if self.budget is not None:
                self.budget.learn(outcome.samples)
            self._commit(rec)

    def _submit_next(self, *, draining: bool) -> bool:
        """Submit the next evaluation (a promotion first, else a new proposal); False when none is due."""
        cfg = self.config
        latest = self._counted()
        promoted = asha_promotion(latest, set(self._flights), cfg, draining=draining)
        if promoted is not None:
            level = cfg.fidelities.index(promoted.fidelity) + 1
            self._submit(self._new_record(promoted.proposal, promoted.params, promoted.misc, cfg.fidelities[level]),
                         previous=promoted)
            return True
        if draining:
            return False
        first = cfg.fidelities[0]
        while self._next < cfg.trials * cfg.screen_factor:
            trained = sum(1 for (p, f), r in latest.items() if f == first and p < self._next and r.status not in UNTRAINED)
            in_flight = sum(1 for (_, f) in self._flights if f == first)
            if trained + in_flight >= cfg.trials:
                return False
            proposal = self._next
            self._next += 1
            if (proposal, first) in latest:
                continue
            if self.out_of_time():
                self._next -= 1
                return False
            # A transient failure of an earlier run is evaluated again at the point it was given.
            retried = self._latest.get((proposal, first))
            if retried is not None:
                params, misc = retried.params, retried.misc
            else:
                pending = [r for (_, f), r in self._flights.items() if f == first]
                [(params, misc)] = ask_batch(self.strategy, [proposal], pending, liar_loss(self.records, first))
            self._submit(self._new_record(proposal, params, misc, first), previous=None)
            return True
        return False

    def _submit(self, rec: TrialRecord, previous: TrialRecord | None) -> None:
        """Fit a new proposal, then submit it, or commit it at once when it is predicted far over budget or is a
        repeat of a network trained already (`Schedule._settled`)."""
        self.progress("start", {"proposal": rec.proposal, "fidelity": rec.fidelity})
        if previous is None:
            settled = self._settled(rec)
            # The fit's seconds are the evaluation's, as in process; the worker adds its own.
            rec.total_s = rec.screen_s
            if settled:
                self._commit(rec)
                return
        self._flights[(rec.proposal, rec.fidelity)] = rec
        self.pool.submit(rec, previous)
