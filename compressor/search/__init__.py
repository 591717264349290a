"""The constrained search for a student family under a target's budgets.

How the parts fit:

* `config`: `SearchConfig` (every knob of `compressor compress`), the
  distillation knobs searched beside the architecture, and the member seeds.
* A *proposal* is a point θ of the space's hyperopt space plus the
  distillation knobs (`kd_alpha`, `kd_tau`, `lr`). It names a *family*: its
  `family_size` members are `space.sample(θ, seed_j)` for seeds derived from
  the run seed and the proposal number (`config.member_seeds`), so a resumed
  run rebuilds them.
* `schedule.Schedule` decides what is evaluated: it asks the strategy for
  proposals (the space's known-good points first, `config.warm_start_points`,
  whatever the strategy), screens at most `trials * screen_factor` of them, trains
  `trials` families in successive-halving rounds (BOHB-style: rounds of
  η^(L-1) families at the smallest fidelity, in epochs; the best 1/η of a
  round go on to the next fidelity, and so on) and commits every evaluation
  to the store. It calls an injected evaluator, so the whole schedule runs
  in tests without torch. It fits each new proposal to the budget first
  (`fit.BudgetFit`), and a proposal fitted to a network the run has
  already trained is committed as a *repeat*, not trained again.
* `evaluate.FamilyEvaluator` is the real evaluator. **Screen before
  training**: every member is built, exported to ONNX and measured on the
  target; a family is feasible only if every member meets every budget, and
  an over-budget family is recorded `infeasible` with its measured figures
  and costs no training (nor a trial). Feasible families are distilled for
  the fidelity's epochs; a family's score (`store.TrialRecord.score`, what
  promotions, the strategy's loss and the finalists rank by) comes from its
  members' mean validation cross-entropy, with their accuracy kept beside
  it. It is the only part that imports torch.
* `strategies.HyperoptStrategy` is the bridge to hyperopt (TPE by default, or
  random), driven ask/tell style. TPE learns from the smallest-fidelity
  outcomes, the only ones every proposal has. An infeasible family is given
  a penalty loss above every feasible one, a failed one hyperopt's
  STATUS_FAIL, and a transient failure (device unreachable, timeout) is kept
  out of the history (`strategies`' docstring says why, from what
  hyperopt's TPE does with each). An infeasible family leaves the KD labels
  unobserved: it was never trained, so its penalty is not held against them.
* `trust_region.TrustRegionStrategy` (`--strategy trade`): TRADE's
  trust-region Bayesian optimisation, one TuRBO region per architecture
  family of the space (its GP, Thompson sampling, length rules), the region
  to propose from chosen by Thompson sampling across families. Same ask/tell
  interface and outcome rules; `strategies.make_strategy` picks the strategy.
* `store.TrialStore`: **nothing lost**. Every evaluation is committed to
  `trials.sqlite` when it ends. A new `Schedule` over the same store (what
  `--resume` does) restores hyperopt's history and replays the same
  schedule, skipping finished evaluations and evaluating transient failures
  again; at most the evaluation in flight is redone.
* `parallel.ParallelSchedule` and `ray_backend` (`--workers N`,
  `--ray-address`): the same schedule with several trainings in flight on
  Ray, asynchronous successive halving (ASHA) and constant-liar asks; every
  screening still goes, one at a time, through one measuring actor on the
  target's reserved core, and the driver alone writes the store and owns the
  latency model: it fits each proposal to the budget before submitting it
  (`fit.BudgetFit`, the evaluator's own in process) and learns the samples
  the tasks return.
* `analysis`: the best family (a tie within one validation image goes to
  the faster), the Pareto front of each fidelity and a summary of why
  families failed, from the records.
* `loop.Search` wires the schedule to the real evaluator for
  `compressor.pipeline.compress`, which, **after the search**, trains the
  best family's best member at the highest fidelity for `final_epochs`,
  evaluates it on the test split, saves it as `best.pt`, profiles, exports
  (compressor.export) and reports it (compressor.pipeline.report).
"""
