"""The winner finished on the baseline's terms: its width filled by measurement, its lr/KD tuned.

The hand-designed baseline (compressor.pipeline.baselines) gets two things a
searched family does not: a width chosen in one side-by-side session as the
widest within the budget, and its own lr/KD tuning. A searched family was
sized by the latency model to `fill_fraction` (0.8) of the budget, because a
prediction is not a measurement, and its KD knobs were judged once, beside
its architecture. Measured on digits-cluttered under a tight budget, that
left the search's winners at 0.65-0.82 of the budget while the baseline sat
at 0.98, and the baseline's best one-epoch validation accuracy 8 points above
the best family's (BENCHMARKS.md, "Does the search earn its place?"). So
before its final training the winner gets what the baseline gets:

1. **Fill** (`fill_winner`). Its family's size ladder (`search.fit.size_ladder`:
   every width knob scaled by one factor), from its own size up to the rungs
   the run's latency model predicts at no more than `FILL_REACH` x the budget
   (the next rungs when the model is cold), at most `FILL_CANDIDATES` of them
   evenly spread, are measured in ONE side-by-side session with the drift
   reference, and the widest whose verdict is "within" is kept
   (`baselines.widest_within`, the baseline's rule). Its own size is a
   candidate, so it never shrinks; when its own size is not "within" in
   this session either, it is kept as the search measured it. **While the
   widest size measured is within**, under `CLIMB_BELOW` (0.9) x the budget,
   and the ladder goes on, its next rungs are measured in another session
   (`climb`, at most `FILL_SESSIONS`): the model's prediction decides what
   the first session measures, a measurement where the fill stops. Why:
   the model charges widths off the 16-channel SIMD lanes a premium that
   was too large on a Zen 4 VM, so it put every rung above some finalists
   over `FILL_REACH` x the budget: in
   nine all-label runs on digits-cluttered, 11 of 31 fills ended at
   0.61-0.88x the budget with every size they measured within (TPE's plain
   16-16-64, convs 1-1-1, measured 16-16-64, 72 and 80 at 0.64-0.70x and
   was trained at 0.69x; BENCHMARKS.md, "A fill that climbs").
2. **Tune** (`tune_winner`). The baseline's tuning (`baselines.tune`: TPE
   over lr and KD on/off, α, τ at the first fidelity, as many evaluations as
   the baseline gets), started as the baseline's is, from the defaults, and
   with the weights of every training drawn from the run's seed, as the
   baseline's are (`baselines.FINISHING`). So the finishing is a function of
   the network: the same network finishes the same whichever proposal
   brought it, with whatever knobs and member seed. Why not from the
   proposal's own knobs and seed, as before: on digits-cluttered with 10%
   of the labels, every strategy's decisive finalist in nine 5-minute runs
   was one network (the deeper plain warm start), and it was finished nine
   ways, 0.9-3.1 test points apart within a split; where its tuning started
   from a proposal's τ 5.4-6.0 it ended there, where from the defaults, at
   τ 1.09, and that decided between strategies more than the networks they
   found (BENCHMARKS.md, "TRADE at five minutes, and what one network's
   finishing is worth"). The one-epoch evaluations cannot tell τ apart, so
   a proposal's knobs, judged once beside its architecture, are no better a
   start than the defaults. Finished on these terms, the three strategies
   shipped the same student wherever they shipped the same network
   (BENCHMARKS.md, "One network, one finishing").

The final training (`compress._final_training`) then trains the filled
network as the baseline is trained (`baselines.train_final`): once with each
of the tuning's `FINAL_KNOB_SETS` knob sets (`baselines.top_knobs`: its best,
and the best with a KD temperature 2x from it), a later one kept only when
clearly ahead on validation. Every finalist of compressor.pipeline.finalists
is finished this way. The fill lives in `RUN_DIR/finalists/pP-fF.sqlite`
and the tuning in `pP-fF-tuning.sqlite`, tied to the finalist (its proposal,
fidelity and member) and the tuning to the finishing terms too: a resume
redoes at most the evaluation in flight, a new finalist (a resume with more
trials) starts afresh, and one finished on other terms is tuned and trained
again on its measured fill.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from compressor.search.config import SearchConfig

# Rungs predicted up to this multiple of the budget are measured: the latency model's errors near the budget
# were within about +-20% (BENCHMARKS.md), so a rung predicted 1.2x over may still be measured within.
FILL_REACH = 1.2
# Sizes measured in the fill session, the winner's own included (the baseline measures 15 widths).
FILL_CANDIDATES = 8
# Fill sessions at most: one more (the next rungs) while the widest rung measured is within, under CLIMB_BELOW x
# the budget (`climb`).
FILL_SESSIONS = 3
CLIMB_BELOW = 0.9


def fill_candidates(ladder: list[dict[str, Any]], start: int, predict: Callable[[dict[str, Any]], float] | None,
                    budget_ms: float) -> list[int]:
    """Ladder indices to measure: `start` and, above it, up to `FILL_CANDIDATES - 1` rungs evenly spread.

    With a predictor, the rungs above `start` predicted at no more than `FILL_REACH` x the budget, wherever
    they are on the ladder: latency grows along it, but not always its prediction, which charges channels
    that are not a multiple of 16 a premium (`search.latency_model`), so a plain 16-16-48 can be predicted
    under a 16-16-40 below it. Without one, the next rungs.
    """
    above = list(range(start + 1, len(ladder)))
    if predict is not None:
        above = [i for i in above if predict(ladder[i]) <= FILL_REACH * budget_ms]
    else:
        above = above[:FILL_CANDIDATES - 1]
    room = FILL_CANDIDATES - 1
    if len(above) > room:
        step = len(above) / room
        above = sorted({above[min(len(above) - 1, round((k + 1) * step) - 1)] for k in range(room)})
    return [start, *above]


def climb(rungs: int, first: list[int],
          measure: Callable[[list[int]], Mapping[int, tuple[str, float | None]]]) -> dict[int, str]:
    """Verdicts of the ladder indices measured to fill: `first`, then, while the highest index measured is
    "within" under `CLIMB_BELOW` x the budget and the ladder goes on above it, its next `FILL_CANDIDATES - 1`
    rungs, in at most `FILL_SESSIONS` calls of `measure` (indices -> (verdict, budget ratio), one side-by-side
    session). At 0.9x or more a size leaves no room for the next: in six 10%-label runs on digits-cluttered that
    climbed from any size within, the 8 climbs from 0.95-1.00x measured every rung over (the rung above plain
    16-16-32, convs 1-2-2, at 0.96-0.98x: 1.22-1.24x), and the one climb that grew a fill started at 0.72x."""
    measured = dict(measure(first))
    for _ in range(FILL_SESSIONS - 1):
        top = max(measured)
        verdict, ratio = measured[top]
        if verdict != "within" or (ratio is not None and ratio >= CLIMB_BELOW) or top + 1 >= rungs:
            break
        measured.update(measure(list(range(top + 1, min(rungs, top + FILL_CANDIDATES)))))
    return {i: verdict for i, (verdict, _) in measured.items()}


def fill_winner(space, arch: dict[str, Any], seed: int, target, dataset, *, budget=None, seconds_each: float,
                reference=None) -> dict[str, Any]:
    """The winner's widest size within the budget, measured (see the module docstring).

    Args:
        space: the search's space; `arch` the winner's flat arch params; `seed` its member seed.
        budget: the run's `search.fit.BudgetFit` (its latency model picks the candidates), or None.

    Returns:
        {"arch": the chosen params, "grew": bool, "within", "verdict", "session", "candidates": [...]}.
    """
    from compressor.models.on_target import check_side_by_side
    from compressor.pipeline.baselines import widest_within
    from compressor.search.fit import size_ladder

    budget_ms = target.budgets.latency_ms
    ladder = size_ladder(space, arch)
    params = space.validate_params(arch)
    if budget_ms is None or not ladder:
        return {"arch": params, "grew": False, "within": None, "candidates": []}
    start = next((i for i, rung in enumerate(ladder) if rung == params), None)
    if start is None:  # the searched size is between rungs: start from the largest rung not above it
        start = max((i for i, rung in enumerate(ladder)
                     if all(rung[k.name] <= params[k.name] for k in space.size_knobs(params))), default=0)
        ladder[start] = params
    calibrated = budget is not None and budget.model.calibrated
    predict = (lambda a: budget.predict(a, [seed])) if calibrated else None
    checked, sessions = {}, {}

    def measure(indices: list[int]) -> dict[int, tuple[str, float | None]]:
        models = {str(i): space.build(space.sample(ladder[i], seed), dataset.input_shape, dataset.num_classes)
                  for i in indices}
        session = check_side_by_side(models, target, dataset.input_shape, reference=reference,
                                     seconds=seconds_each * len(models), name="winner-fill")
        for i in indices:
            checked[i], sessions[i] = session.checked[str(i)], session.id
        return {i: (checked[i].verdict, checked[i].budget_ratio) for i in indices}

    index, within = widest_within(climb(len(ladder), fill_candidates(ladder, start, predict, budget_ms), measure))
    if not within:
        index = start
    sizes = [k.name for k in space.size_knobs(params)]
    return {"arch": ladder[index], "grew": index != start, "within": within, "verdict": checked[index].verdict,
            "session": sessions[index],
            "candidates": [{"sizes": {k: ladder[i][k] for k in sizes}, "verdict": c.verdict,
                            "latency_ms": c.latency_ms, "budget_ratio": c.budget_ratio, "session": sessions[i]}
                           for i, c in checked.items()]}


def tune_winner(config: SearchConfig, spec, knobs: Mapping[str, float], dataset, teacher_logits: dict, *, store,
                evaluations: int, say: Callable[[str], None] = lambda text: None,
                label: str = "winner") -> dict[str, Any]:
    """The baseline's lr/KD tuning for the winner's `spec`, on the baseline's terms (step 2 above); the best knobs.

    Returns:
        {"evaluations", "fidelity", "strategy", "failed", "best": {lr, kd_alpha, kd_tau, kd}, "val_accuracy",
        "top": the knob sets to train for the final length (`baselines.top_knobs`), "best" first}; "best" is
        the winner's searched `knobs` when every evaluation failed.
    """
    from compressor.pipeline.baselines import knobs_of, knobs_text, real_trainer, top_knobs, tune
    from compressor.search.analysis import best_record

    def heard(event: str, info: dict) -> None:
        if event == "end":
            rec = info["record"]
            outcome = f"val {100 * rec.val_accuracy:.2f}%" if rec.status == "ok" else f"{rec.status}: {rec.reason}"
            say(f"{label} tuning {rec.proposal + 1}/{evaluations} at {rec.fidelity} ep: "
                f"{knobs_text(knobs_of(rec.params))}: {outcome}")

    searched = {"lr": knobs["lr"], "kd_alpha": knobs["kd_alpha"], "kd_tau": knobs["kd_tau"]}
    records = tune(config, store, real_trainer(config, spec, dataset, teacher_logits), heard, evaluations=evaluations)
    best = best_record(records)
    fallback = {**searched, "kd": searched["kd_alpha"] > 0}
    return {"evaluations": len(records), "fidelity": config.fidelities[0], "strategy": "tpe",
            "failed": sum(r.status == "failed" for r in records),
            "best": fallback if best is None else knobs_of(best.params),
            "val_accuracy": None if best is None else best.val_accuracy,
            "top": top_knobs(records) or [fallback]}
