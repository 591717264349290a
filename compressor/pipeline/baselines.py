"""The hand-designed baseline every claim about a searched student is measured against, on equal terms.

What an expert would write for a small image task under a latency budget: a
plain conv-BN-ReLU stack (the zoo's `plain` family). "The best hand-designed
student at the same budget" is only a fair yardstick when it gets what the
searched student got, so the baseline is built in three steps:

1. **Width that fills the budget.** Candidate widths are the base pattern
   8-16-32 scaled by 1, 1.5, 2, ..., 8, each width rounded up to the
   family's step of 8 (`ladder_widths`: 8-16-32, 16-24-48, 16-32-64, ...,
   64-128-256, the family's widest knobs). Whole scales alone left a gap
   that the budget can fall into: 16-32-64 costs about twice 8-16-32, and
   on an AMD EPYC (Zen 4) it measured 0.996-1.008x one benchmark cell's
   budget, so two of three baselines there were 8-16-32 at 0.52x the
   budget, 7.6 test points below 16-32-64 (BENCHMARKS.md, "Repeats, and a
   baseline ladder in half steps"); with half steps one that misses falls
   to 16-24-48 (0.95x there). All are measured in ONE side-by-side session
   beside the run's drift reference
   (`compressor.models.on_target.check_side_by_side`, each given the search's
   screening time `profile_seconds`), so they are judged by the rule that
   judges a searched candidate. Half steps still left gaps: 8-16-32 sat at
   0.50-0.54x the all-label digits-cluttered budgets and 16-24-48 at
   0.94-1.03x, so where 16-24-48 was judged over, the baseline had half the
   budget. So a second session measures the *stage steps* between the
   widest within and the next width (`search.fit.stage_steps`: one stage at
   a time, the last first, as the search's size ladder moves: 8-16-48,
   8-24-48 between 8-16-32 and 16-24-48). The widest whose verdict is
   "within" (its latency's upper confidence bound under the budget, every
   other budget met) in ladder order is taken (`widest_within`); when none
   is, the narrowest is trained and reported as not within the budget
   (`meets_budget: false`; the final session in `compress` decides
   `at_same_budget`).
2. **Its own tuning, as much as the search spent on KD knobs.** The search
   trains `trials` families at the first fidelity, each with its own lr and
   KD α/τ. The baseline gets the same: `trials` evaluations of the fixed
   architecture at `fidelities[0]` epochs, proposed by hyperopt TPE over the
   search's own KD knob declarations (`compressor.search.config.kd_knobs`)
   plus an explicit KD on/off choice (off is α = 0: plain cross-entropy),
   starting, as the search does, from the default lr and KD knobs. It
   runs through the search's `Schedule` with an injected evaluator, so it has
   the search's failure rules (a failed training is a failed trial, a trial
   timeout is retried on resume) and its resume: the evaluations live in
   their own trial store (`RUN_DIR/baseline.sqlite`, with the width choice in
   its meta), so an interrupted run redoes at most the evaluation in flight.
3. **The student's recipe.** `FINAL_KNOB_SETS` (2) knob sets of the
   tuning, its best and the best whose KD temperature is `TAU_APART` (2x)
   from it (`top_knobs`: one epoch cannot tell τ apart, the full length
   can), are each trained for `final_epochs` with the recipe of the final
   student (`compressor.search.recipe`: batch size, epochs, schedule,
   threads, seeds: the same TrainConfig but for lr/α/τ), and the second
   replaces the first only when ahead of it on validation beyond the noise
   of the paired comparison (`train_final`). Each finalist of the search is
   finished on the same terms (`FINISHING`), so no network's place is
   decided by where one one-epoch ranking of its knobs ended.

The result states what the baseline was given: `recipe`, `tuning`
(evaluations, fidelity, best knobs and their validation accuracy),
`final_trainings` (each knob set trained in full, the kept one marked) and
`width` (the candidates' verdicts and the session).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from compressor.search.config import SearchConfig

PLAIN_BASE = (8, 16, 32)
# The plain family's width knobs move in steps of 8 (compressor.spaces.zoo).
WIDTH_STEP = 8
# 8-16-32 ... 64-128-256 in half steps (module docstring, step 1): stage 3 goes up to 256, the widest knob.
PLAIN_SCALES = tuple(half / 2 for half in range(2, 17))
# The deeper plain CNN the search also starts from (`compressor.pipeline.compress._warm_starts`), never the
# baseline: one more conv in stages 2 and 3 at the widths 8-8-16 scaled. On digits-cluttered, plain 16-16-32
# with more convs in stage 2 (and 3) was what the search shipped in 5 of the 6 runs that beat the baseline,
# and within the baseline's budget 16-16-32:1-2-2 was 1.1-2.1 test points ahead of its 16-32-64 with 10% of
# the labels (docs/design.md, "The deeper plain warm start").
DEEPER_BASE, DEEPER_CONVS = (8, 8, 16), (1, 2, 2)

# Knob sets of a tuning trained for the final length (`top_knobs`); a later one is kept only when clearly
# ahead on validation after the final length (`train_final`). One epoch does not resolve KD's temperature: on
# digits-cluttered with 10% of the labels, τ 1.1 and τ 6.0 at the same lr and α scored within about a point
# after one epoch and 1.1-1.8 validation points apart after 15, several times the seeds' spread (BENCHMARKS.md,
# "The tuning's best two knob sets trained in full"). So the second set is the best whose τ is at least
# `TAU_APART` x from the first's, when the tuning has one: two final trainings at τ 1.1 and 1.2 would ask the
# full length a question the one-epoch ranking had already answered as well as it could.
FINAL_KNOB_SETS = 2
TAU_APART = 2.0

# The terms of a network's lr/KD tuning besides the network, the run's configuration and its data: it starts
# from the defaults and every training's weights from the run's seed (why: compressor.pipeline.finish, step 2).
TUNING = {"tuning_start": "defaults", "init_seed": "run"}
# ... and of its whole finishing (tuning, then final trainings): the same terms for the baseline and every
# finalist, so one network is finished the same way whichever proposal brought it among the finalists. One
# finished on other terms is trained again on resume (and tuned again when its `TUNING` differs).
FINISHING = {**TUNING, "knob_sets": FINAL_KNOB_SETS, "tau_apart": TAU_APART}

# A short training of the baseline: (knobs {lr, kd_alpha, kd_tau}, epochs) -> validation accuracy; raises on failure.
Trainer = Callable[[Mapping[str, float], int], float]


def ladder_widths(scale: float, base: Sequence[int] = PLAIN_BASE) -> list[int]:
    """The `base` widths times `scale`, each rounded up to the family's `WIDTH_STEP`."""
    return [WIDTH_STEP * math.ceil(scale * w / WIDTH_STEP) for w in base]


def plain_arch(scale: float, base: Sequence[int] = PLAIN_BASE, convs: Sequence[int] | None = None) -> str:
    """The plain CNN reference at `scale` times the `base` widths (`ladder_widths`), `convs` convs per stage
    (default one)."""
    return plain_ref(ladder_widths(scale, base), convs)


def plain_ref(widths: Sequence[int], convs: Sequence[int] | None = None) -> str:
    """The plain CNN reference with these stage widths and `convs` convs per stage (default one)."""
    return "zoo:plain:widths=" + "-".join(map(str, widths)) + (",convs=" + "-".join(map(str, convs)) if convs else "")


def widest_within(verdicts: Mapping[Any, str]) -> tuple[Any, bool]:
    """(key, within): the widest key (keys order the widths: a scale, a place on a ladder) whose verdict is
    "within"; else the narrowest, not within."""
    within = [key for key, verdict in verdicts.items() if verdict == "within"]
    return (max(within), True) if within else (min(verdicts), False)


def choose_width(target, dataset, *, seed: int, seconds_each: float, reference=None,
                 deeper: bool = False) -> dict[str, Any]:
    """Measure the ladder's widths side by side, then its stage steps above the widest within, and pick the widest
    within the budget (`widest_within`; module docstring, step 1).

    With `deeper`, the deeper plain CNN's ladder (`DEEPER_BASE` scaled, `DEEPER_CONVS`) is measured in the
    same sessions and its widest within is under key "deeper" (the search's second plain warm start).
    """
    from compressor.models.on_target import check_side_by_side
    from compressor.search.fit import stage_steps
    from compressor.spaces import build_model, spec_from_ref

    convs = {"plain": None} | ({"deeper": list(DEEPER_CONVS)} if deeper else {})
    bases = {"plain": PLAIN_BASE, "deeper": DEEPER_BASE}

    def measure(widths: dict[str, list[list[int]]], name: str) -> dict[str, list[dict[str, Any]]]:
        """Every ladder's `widths` in one session: per ladder, its candidates in order."""
        refs = {ladder: [plain_ref(w, convs[ladder]) for w in ws] for ladder, ws in widths.items()}
        models = {ref: build_model(spec_from_ref(ref, seed=seed), dataset.input_shape, dataset.num_classes)
                  for rs in refs.values() for ref in rs}
        session = check_side_by_side(models, target, dataset.input_shape, reference=reference,
                                     seconds=seconds_each * len(models), name=name)
        return {ladder: [{"arch": ref, "widths": w, "checked": session.checked[ref], "session": session.id}
                         for ref, w in zip(rs, widths[ladder])] for ladder, rs in refs.items()}

    def widest(candidates: list[dict[str, Any]]) -> tuple[int, bool]:
        return widest_within({i: c["checked"].verdict for i, c in enumerate(candidates)})

    ladders = measure({ladder: [ladder_widths(scale, bases[ladder]) for scale in PLAIN_SCALES] for ladder in convs},
                      "baseline-widths")
    steps = {}
    for ladder, candidates in ladders.items():
        i, within = widest(candidates)
        if within and i + 1 < len(candidates):
            lower, upper = (dict(enumerate(candidates[j]["widths"])) for j in (i, i + 1))
            steps[ladder] = [list(w.values()) for w in stage_steps(lower, upper, range(3))[:-1]]
    if any(steps.values()):
        for ladder, found in measure({k: v for k, v in steps.items() if v}, "baseline-steps").items():
            i, _ = widest(ladders[ladder])
            ladders[ladder][i + 1:i + 1] = found

    def chosen(ladder: str) -> dict[str, Any]:
        candidates = ladders[ladder]
        i, within = widest(candidates)
        pick, checked = candidates[i], candidates[i]["checked"]
        return {"arch": pick["arch"], "widths": "-".join(map(str, pick["widths"])), "within": within,
                "verdict": checked.verdict, "session": pick["session"],
                "params": int(checked.profile["params"]), "macs": int(checked.profile["macs"]),
                "profile": checked.profile, "latency_ms": checked.latency_ms,
                "candidates": [{"arch": c["arch"], "verdict": c["checked"].verdict, "latency_ms": c["checked"].latency_ms,
                                "budget_ratio": c["checked"].budget_ratio, "reasons": c["checked"].reasons,
                                "session": c["session"]} for c in candidates]}

    width = chosen("plain")
    if deeper:
        width["deeper"] = {**chosen("deeper"), "convs": list(DEEPER_CONVS)}
    return width


def tuning_config(config: SearchConfig, evaluations: int | None = None) -> SearchConfig:
    """The search's configuration as a tuning runs it: `evaluations` (default `trials`) TPE evaluations at `fidelities[0]`."""
    return dataclasses.replace(config, trials=evaluations or config.trials, strategy="tpe",
                               fidelities=config.fidelities[:1], family_size=1, screen_factor=1, search_minutes=None)


def tuning_space() -> dict[str, Any]:
    """lr and KD (off, or on with α and τ) over the search's declarations of those knobs."""
    from hyperopt import hp

    from compressor.search.config import kd_hyperopt_space, kd_knobs

    knobs = kd_hyperopt_space()
    tau = next(k.default for k in kd_knobs() if k.name == "kd_tau")
    return {"lr": knobs["lr"], "kd": hp.choice("kd", [{"kd_alpha": 0.0, "kd_tau": tau},
                                                      {"kd_alpha": knobs["kd_alpha"], "kd_tau": knobs["kd_tau"]}])}


def default_point() -> dict[str, Any]:
    """The trainer's default lr, kd_alpha, kd_tau (KD on) as a point of `tuning_space`, hyperopt's encoding.

    Every tuning evaluates it first, as the search evaluates the default KD knobs first
    (`compressor.search.config.warm_start_points`), so the baseline does not begin less informed than
    the search.
    """
    from compressor.search.config import kd_knobs

    return {"kd": 1, **{knob.name: knob.hyperopt_value(knob.default) for knob in kd_knobs()}}


def knobs_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """A tuning proposal as training knobs: {lr, kd_alpha, kd_tau, kd (on/off)}."""
    return {"lr": params["lr"], **params["kd"], "kd": params["kd"]["kd_alpha"] > 0}


class _TuningEvaluator:
    """The `Evaluator` of the baseline's tuning: one fixed architecture, trained by `train` at the record's fidelity.

    It records accuracy alone, so the tuning ranks knobs by accuracy (`TrialRecord.score`'s fallback): the
    cross-entropy was measured to rank architectures after short trainings, not lr/KD settings of one.
    """

    def __init__(self, train: Trainer) -> None:
        self.train = train

    def __call__(self, record, previous) -> None:
        started = time.perf_counter()
        accuracy = float(self.train(knobs_of(record.params), record.fidelity))
        record.train_s = time.perf_counter() - started
        record.val_accuracy, record.val_std, record.member_accuracies = accuracy, 0.0, [accuracy]


def tune(config: SearchConfig, store, train: Trainer, progress: Callable[[str, dict], None] | None = None, *,
         evaluations: int | None = None):
    """Run (or resume) a tuning in `store`: `evaluations` (default `config.trials`), the default point first;
    returns its records."""
    from compressor.search.schedule import Schedule
    from compressor.search.strategies import HyperoptStrategy

    tuning = tuning_config(config, evaluations)
    strategy = HyperoptStrategy(tuning, tuning_space(), [default_point()])
    return Schedule(config=tuning, store=store, evaluate=_TuningEvaluator(train), space=tuning_space(),
                    progress=progress, strategy=strategy).run()


def open_tuning_store(path: Path, identity: Any):
    """The baseline's trial store at `path`, emptied first when it belongs to another run (`identity` differs)."""
    from compressor.search.store import TrialStore

    store = TrialStore(path)
    if store.get_meta("identity") not in (None, identity):
        store.close()
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        store = TrialStore(path)
    store.set_meta("identity", identity)
    return store


def real_trainer(config: SearchConfig, spec, dataset, teacher_logits: dict) -> Trainer:
    """Train `spec` for a tuning evaluation with the student's recipe; the trial timeout as the search applies it.

    Its weights start from the run's seed, whatever member seed `spec` was drawn with (`FINISHING`)."""
    from compressor.search.recipe import train_config, train_spec
    from compressor.search.schedule import TrialTimeout

    def train(knobs: Mapping[str, float], epochs: int) -> float:
        recipe = train_config(config, knobs, epochs=epochs, time_budget_s=config.trial_timeout_s)
        _, result = train_spec(spec, dataset, recipe, teacher_logits, evaluate_test=False, init_seed=config.seed)
        if result.status != "ok":
            raise RuntimeError(result.reason or "training failed")
        if result.epochs_run < epochs:
            raise TrialTimeout(f"trial timeout: over {config.trial_timeout_s:g} s after {result.epochs_run}/{epochs} "
                               "epochs")
        return result.val_accuracy

    return train


def hand_designed_baseline(dataset, target, config: SearchConfig, teacher_logits: dict, *, store,
                           reference=None, say: Callable[[str], None] = lambda text: None,
                           evaluations: int | None = None, checkpoint: Path | None = None) -> dict[str, Any]:
    """Choose the width, tune lr/KD, train with the student's recipe: the fair baseline (module docstring).

    Args:
        dataset: the student's compressor.data.datasets.Dataset.
        target: a targets.Target with the run's budgets.
        config: the run's SearchConfig (trials, fidelities, final_epochs, batch size, seed, ...).
        teacher_logits: the logits cache's dict.
        store: the tuning's TrialStore (`open_tuning_store`); its meta keeps the width choice.
        evaluations: the tuning's evaluations (default `config.trials`).
        reference: the run's drift reference (compressor.models.on_target.DriftReference), or None.
        say: one line of progress for a person.
        checkpoint: where the trained baseline is saved (state dict + ArchSpec), or None.

    Returns:
        {"name", "arch", "status", "meets_budget", "epochs", "width", "recipe", "tuning", ...}: with status
        "ok" also "kd", "kd_alpha", "kd_tau", "lr", "val_accuracy", "test_accuracy", "params", "macs",
        "profile"; with status "failed" the "reason".
    """
    from compressor.search.analysis import best_record, failure_summary
    from compressor.search.recipe import recipe_fields
    from compressor.spaces import spec_from_ref

    width = store.get_meta("width")
    if width is None:
        width = choose_width(target, dataset, seed=config.seed, seconds_each=config.profile_seconds,
                             reference=reference)
        store.set_meta("width", width)
    say(f"baseline: plain CNN {width['widths']}, the widest of {len(width['candidates'])} widths "
        + ("within the budget" if width["within"] else "measured (none is within the budget)"))
    spec = spec_from_ref(width["arch"], seed=config.seed)

    def heard(event: str, info: dict) -> None:
        if event == "end":
            rec = info["record"]
            outcome = f"val {100 * rec.val_accuracy:.2f}%" if rec.status == "ok" else f"{rec.status}: {rec.reason}"
            say(f"baseline tuning {rec.proposal + 1}/{evaluations or config.trials} at {rec.fidelity} ep: "
                f"{knobs_text(knobs_of(rec.params))}: {outcome}")

    records = tune(config, store, real_trainer(config, spec, dataset, teacher_logits), heard, evaluations=evaluations)
    best = best_record(records)
    described = {"name": f"plain CNN {width['widths']}", "arch": width["arch"], "meets_budget": width["within"],
                 "epochs": config.final_epochs, "width": width,
                 "recipe": recipe_fields(config),
                 "tuning": {"evaluations": len(records), "fidelity": config.fidelities[0], "strategy": "tpe",
                            "failed": sum(r.status == "failed" for r in records),
                            "best": None if best is None else knobs_of(best.params),
                            "val_accuracy": None if best is None else best.val_accuracy}}
    if best is None:
        return {**described, "status": "failed", "reason": f"tuning: {failure_summary(records)}"}
    (model, result, knobs), trainings = train_final(spec, dataset, config, teacher_logits, top_knobs(records), say)
    described |= {"finishing": FINISHING, "final_trainings": trainings}
    if model is None:
        return {**described, "status": "failed", "reason": f"final training: {result.reason}"}
    trained = {**described, "status": "ok", "kd": knobs["kd"], "kd_alpha": knobs["kd_alpha"], "kd_tau": knobs["kd_tau"],
               "lr": knobs["lr"], "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
               "seconds": result.seconds, "params": width["params"], "macs": width["macs"], "profile": width["profile"],
               "loss_curve": result.loss_curve}
    if checkpoint is not None:
        from compressor.search.recipe import save_trained

        meta = {k: trained[k] for k in ("name", "val_accuracy", "test_accuracy", "epochs", "kd_alpha", "kd_tau", "lr")}
        save_trained(checkpoint, model, spec, dataset, {**meta, "baseline": True})
    return trained


def top_knobs(records, count: int = FINAL_KNOB_SETS) -> list[dict[str, Any]]:
    """A tuning's `count` knob sets (`knobs_of`) to train for the final length, each the best by the score of its
    evaluation among the distinct sets not yet taken whose τ is `TAU_APART` x from every one taken (KD on in
    both), or among all of them when none is (see `FINAL_KNOB_SETS`)."""
    ranked = sorted((r for r in records if r.status == "ok"), key=lambda r: (-r.score, r.proposal))
    distinct: list[dict[str, Any]] = []
    for rec in ranked:
        if knobs_of(rec.params) not in distinct:
            distinct.append(knobs_of(rec.params))
    taken: list[dict[str, Any]] = []
    while distinct and len(taken) < count:
        apart = [k for k in distinct if all(_tau_apart(k, t) for t in taken)]
        taken.append((apart or distinct)[0])
        distinct.remove(taken[-1])
    return taken


def _tau_apart(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a["kd"] and b["kd"] and max(a["kd_tau"], b["kd_tau"]) >= TAU_APART * min(a["kd_tau"], b["kd_tau"])


def train_final(spec, dataset, config: SearchConfig, teacher_logits: dict, knob_sets: Sequence[Mapping[str, Any]],
                say: Callable[[str], None] = lambda text: None, label: str = "baseline"):
    """`spec` trained for `final_epochs` with each knob set (`top_knobs`, the tuning's best first); one kept.

    A later set replaces the kept one only when it is ahead of it on validation by more than one standard
    error of the paired difference (`finalists.paired_tie`, the rule that chooses among finalists): two
    trainings of one network a few images apart differ by the draw, and the tuning's ranking is the better
    guide then. Weights start from the run's seed (`FINISHING`). Every network a run compares, the baseline
    and each finalist, is finished this way, so the choice between them is not decided by where one one-epoch
    ranking of its knobs ended.

    Returns:
        (model, TrainResult, knobs) of the kept training, or (None, the last failed result, None) when every
        training failed; and the list of trainings for the report ({lr, kd_alpha, kd_tau, kd, status,
        val_accuracy, test_accuracy, seconds, kept}).
    """
    from compressor.pipeline.finalists import paired_tie
    from compressor.search.recipe import train_config, train_spec
    from compressor.train.distill import predict

    kept, trainings, result = None, [], None
    for i, knobs in enumerate(knob_sets):
        say(f"{label}: {knobs_text(knobs)} for {config.final_epochs} epochs (knob set {i + 1}/{len(knob_sets)})")
        model, result = train_spec(spec, dataset, train_config(config, knobs), teacher_logits, evaluate_test=True,
                                   init_seed=config.seed)
        trainings.append({**knobs, "status": result.status, "val_accuracy": result.val_accuracy,
                          "test_accuracy": result.test_accuracy, "seconds": result.seconds, "kept": False})
        if result.status != "ok":
            continue
        # what `paired_tie` compares: the accuracy and the validation images this training gets wrong
        this = {"val_accuracy": result.val_accuracy, "set": i, "model": model, "result": result, "knobs": knobs,
                "val_wrong": (predict(model, dataset.val_x) != dataset.val_y).nonzero().flatten().tolist()}
        if kept is None or (this["val_accuracy"] > kept["val_accuracy"]
                            and not paired_tie(this, kept, len(dataset.val_y))):
            kept = this
    if kept is None:
        return (None, result, None), trainings
    trainings[kept["set"]]["kept"] = True
    if len(trainings) > 1:
        say(f"{label}: knob set {kept['set'] + 1} kept, val {100 * kept['val_accuracy']:.2f}%")
    return (kept["model"], kept["result"], kept["knobs"]), trainings


def knobs_text(knobs: Mapping[str, Any]) -> str:
    """lr and KD for a progress line: "lr 0.1, KD α 0.50 τ 4.0" or "lr 0.1, no KD"."""
    kd = f"KD α {knobs['kd_alpha']:.2f} τ {knobs['kd_tau']:.1f}" if knobs["kd"] else "no KD"
    return f"lr {knobs['lr']:.3g}, {kd}"
