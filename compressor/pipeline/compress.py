"""`compress`: the whole loop behind `compressor compress` and the Python API.

Order of work, cheapest first: check the flags, the target and its budgets
-> load data (raw [0, 1] images) and teacher -> the teacher's inputs (its size,
its preprocessing: compressor.models.teachers.teacher_inputs) and the
student's (the training split's statistics, recorded in best.pt and folded
into every exported artifact) -> the runtime's latency floor (a latency budget
below it is refused before anything is written) -> teacher logits (cached on
disk) -> the run's drift reference, measured once (kept in the store with its
start latency; a budget given relative to it, `latency_x_reference`, is
resolved and floor-checked here, the directory left reusable) -> teacher
accuracy (one console line, with a hint to check --teacher-preprocess when it
is far too low) and profile (kept in the run's
store, so a resume does not measure again) -> screen the space's smallest
network against the budgets (an unreachable budget is reported in seconds,
not after an hour) -> the search (compressor.search.loop) -> the
finalists (compressor.pipeline.finalists): the search's best `finalists`
families, each one's best member finished on the baseline's terms
(compressor.pipeline.finish: its width filled to the widest within the budget
in one side-by-side session, its lr/KD tuned; resumable in
`RUN_DIR/finalists/`) and trained for `final_epochs` with the student's
recipe (compressor.search.recipe) -> optionally the hand-designed baseline
(compressor.pipeline.baselines: the widest plain CNN within the budget, lr/KD
tuned, then the same recipe; resumable in `RUN_DIR/baseline.sqlite`, kept in
the store, its weights in `RUN_DIR/baseline.pt`), which is a finalist too ->
the final session (teacher, every finalist and the baseline side by side)
-> the student: among the finalists within the budgets there, the one with
the best validation accuracy (ties judged by the paired rule of
compressor.pipeline.finalists), copied to `best.pt` -> export bundle
(compressor.export) -> report. Every tuning has the same number of
evaluations: `tuning_trials`, by default as many as the search trained
families.

Every budget verdict comes from `compressor.models.on_target` (drift-corrected,
with a confidence interval). The final verdicts of every finalist (the
student among them) and of each baseline, and the speed-up over the teacher,
come from ONE side-by-side session of teacher, finalists, baselines and the
drift reference at the end (`_final_session`, kept in the store as meta
`final_session`), and the student is chosen after it: report.json gives
each `within_budget` (true, false or "borderline"), its ratio to the
budget with the interval, and the session's id; a baseline that misses the
budget is reported as such, not as "at the same budget". When that session
finds the teacher itself within the budgets, `teacher_meets_budget` is true
and the summaries say so first.

The finalists are ranked as `search.analysis.best_record` ranks families
(highest fidelity, then score, from the cross-entropy; within one validation
image a tie, which goes to the faster); after their final training the
student is, among those within the budgets in the final session, the best
on validation, or the baseline when it is within one standard error of the
paired difference of that one, or one as accurate as either within one
validation image and faster (`finalists.choose`).

Every stage that has finished is on disk before the next begins; a resumed
run skips them. A finished run resumed again does nothing more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

from compressor.errors import UserError
from compressor.pipeline.finalists import choice_text, choose, finalist_records, summary
from compressor.search.analysis import failure_summary, json_safe, pareto_front
from compressor.search.config import SearchConfig
from compressor.search.loop import Search
from compressor.search.store import UNTRAINED, RunLock, TrialRecord, TrialStore
from compressor.pipeline.report import Report


@dataclasses.dataclass
class CompressResult:
    """What `compress` returns: the report (report.json's content) and where things are."""

    run_dir: Path
    report: Report
    checkpoint: Path | None
    records: list[TrialRecord] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """How the dataset is read (mirrors compressor.data.datasets.load_dataset's keywords)."""

    image_size: int | None = 32
    channels: int | None = 3
    seed: int = 0
    data_root: str | None = None
    download: bool = False
    label_fraction: float = 1.0


def compress(
    teacher: str,
    *,
    out: str | Path,
    data: str = "digits",
    target: Any = "cpu-1t",
    teacher_weights: str | None = None,
    teacher_preprocess: str | None = None,
    teacher_image_size: int | None = None,
    teacher_min_accuracy: float | None = None,
    latency_ms: float | None = None,
    latency_x_reference: float | None = None,
    memory_mb: float | None = None,
    size_mb: float | None = None,
    data_options: DataOptions = DataOptions(),
    resume: bool = False,
    quiet: bool = True,
    cache_dir: str | Path | None = None,
    baseline: bool = False,
    **search_knobs: Any,
) -> CompressResult:
    """Find the most accurate student family that meets the target's budgets, train and export its best member.

    Args:
        teacher: `torchvision:ARCH` (with `teacher_weights`), a compressor checkpoint, or an ONNX file.
        teacher_preprocess: the teacher's input normalisation: `none` (raw [0, 1]), `imagenet`, `dataset`
            or `mean=A,B,C,std=D,E,F`; None: what the teacher records, else its kind's default
            (compressor.models.teachers.teacher_inputs).
        teacher_image_size: the input size of a teacher that does not fix its own (default: the data's).
        teacher_min_accuracy: a validation accuracy (fraction) below which the teacher's inputs are
            reported as probably wrong (default: 2x chance, at most halfway from chance to 100%).
        out: the run directory (created; with `resume=True` an existing run is continued).
        data: `digits`, `imagefolder:PATH`, `npz:PATH` or a torchvision dataset name.
        target: a preset name, a TOML path or a `targets.Target`.
        latency_ms, memory_mb, size_mb: budgets overriding the target's.
        latency_x_reference: the latency budget as this multiple of the run's drift reference, measured at its
            start (`compressor.models.on_target.DriftReference`; instead of `latency_ms`): every verdict is
            then a ratio measured side by side with the reference, the same on a fast or a slow machine.
        data_options: image size, channels, split seed, label fraction...
        resume: continue the run in `out` up to the requested number of trials.
        quiet: no live progress display.
        cache_dir: the teacher-logits cache (default: $COMPRESSOR_CACHE or ~/.cache/compressor).
        baseline: also train the best hand-designed student at the same budget (report["baselines"]).
        **search_knobs: fields of `SearchConfig` (trials, search_minutes, strategy, space, family_size, fidelities,
            eta, final_epochs, seed, trial_timeout_s, profile_seconds, batch_size, export, export_formats,
            workers, ray_address: with several workers or an address the trainings run on Ray,
            compressor.search.ray_backend).

    Returns:
        A `CompressResult` with the report (report.json's content) and the checkpoint path.
    """
    import profilers
    from targets import Target, availability, load_target

    unknown = set(search_knobs) - {f.name for f in dataclasses.fields(SearchConfig)}
    if unknown:
        raise UserError(f"unknown search option(s): {', '.join(sorted(unknown))}")
    if "fidelities" in search_knobs:
        search_knobs["fidelities"] = tuple(search_knobs["fidelities"])
    config = SearchConfig(**search_knobs).validate()
    from compressor.spaces import get_space

    get_space(config.space)  # an unknown space fails here, before any data or teacher is loaded
    if not isinstance(target, Target):
        target = load_target(target)
    target = target.with_budgets(latency_ms=latency_ms, memory_mb=memory_mb, size_mb=size_mb)
    ok, why = availability(target)
    if not ok:
        raise UserError(f"target {target.name!r} cannot run here: {why}")
    if latency_x_reference is not None:
        if latency_ms is not None:
            raise UserError("give the latency budget once: in milliseconds (--latency-ms) or as a multiple of the "
                            "drift reference (--latency-x-ref)")
        if not latency_x_reference > 0:
            raise UserError(f"--latency-x-ref must be a positive multiple, got {latency_x_reference:g}")
        if not profilers.interleaves(target):
            raise UserError(f"--latency-x-ref needs a drift reference, measured side by side with every candidate, "
                            f"which the {target.runtime} runtime of target {target.name!r} cannot do; give "
                            "--latency-ms")
    if target.budgets.memory_mb is not None and profilers.memory_meaning(target) is None:
        raise UserError(f"target {target.name!r} has a memory budget, but its runtime ({target.runtime}) does not "
                        "measure peak memory there; drop the memory budget or use an onnxruntime target")
    if config.parallel:
        from compressor.search.ray_backend import require_ray

        require_ray(config)
    if config.export:
        from compressor.export import ExportConfig, plan_formats

        plan_formats(target, ExportConfig(formats=config.export_formats))  # bad --formats fail now, not after the search

    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} exists and is not a directory")
    from compressor.data.datasets import load_dataset
    from compressor.models.preprocessing import PreprocessChoice
    from compressor.models.teachers import load_teacher, teacher_inputs

    if teacher_preprocess is not None:
        PreprocessChoice.parse(teacher_preprocess)  # a typo fails before the data are read
    if teacher_min_accuracy is not None and not 0.0 <= teacher_min_accuracy <= 1.0:
        raise UserError(f"teacher_min_accuracy is a fraction in [0, 1], got {teacher_min_accuracy}")
    # Bad data or a bad teacher fail before anything is written.
    raw = load_dataset(data, **dataclasses.asdict(data_options))
    teacher_model = load_teacher(teacher, weights=teacher_weights, num_classes=raw.num_classes,
                                 input_shape=raw.input_shape, image_size=teacher_image_size)
    inputs = _Inputs(raw=raw, dataset=raw.normalised(raw.student_preprocessing()),
                     teacher=teacher_inputs(teacher_model, raw, teacher_preprocess),
                     teacher_min_accuracy=teacher_min_accuracy)
    floor = None
    if target.budgets.latency_ms is not None and latency_x_reference is None:
        from compressor.models.on_target import check_floor

        floor = check_floor(target, inputs.dataset.input_shape)  # a budget below the runtime's floor fails here
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        store = TrialStore(run_dir / "trials.sqlite")
        try:
            return _compress_locked(config, target, teacher_model, inputs, run_dir, store, resume, quiet,
                                    cache_dir, baseline, floor, latency_x_reference)
        finally:
            store.close()


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """The images as each consumer sees them: raw [0, 1], the student's tensors and the teacher's."""

    raw: Any
    dataset: Any
    teacher: Any
    teacher_min_accuracy: float | None


def _compress_locked(config, target, teacher, inputs: _Inputs, run_dir, store, resume, quiet, cache_dir,
                     baseline, floor, latency_x_reference) -> CompressResult:
    from compressor.cli.console import err_console
    from compressor.models.teachers import check_teacher_accuracy
    from compressor.train.distill import LogitsCache

    dataset = inputs.dataset
    fingerprint = _fingerprint(config, teacher, inputs, target, latency_x_reference)
    existing = store.get_meta("fingerprint")
    if existing is None or not store.records():
        # A run is its evaluations: a directory whose run stopped before the first one (budgets
        # unreachable, a bad flag, an interrupt) starts afresh with this configuration.
        store.clear_meta()
        store.set_meta("fingerprint", fingerprint)
        store.set_meta("started_at", time.time())
    elif not resume:
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    elif existing != fingerprint:
        differs = sorted(k for k in {*fingerprint, *existing} if fingerprint.get(k) != existing.get(k))
        detail = differs[0]
        if detail == "search":
            detail = "search option " + ", ".join(k for k in fingerprint["search"]
                                                   if fingerprint["search"][k] != existing["search"].get(k))
        elif detail == "space_knobs":
            detail = f"the {fingerprint['search']['space']} space's knobs (this version searches other choices)"
        raise UserError(f"--resume: {run_dir} was created with a different configuration ({detail} differs)")
    split_warning = _teacher_split_warning(teacher, dataset)
    if split_warning and not quiet:
        err_console.print(f"[yellow]warning[/]: {split_warning}")
    if not quiet:
        err_console.print(inputs.teacher.describe(), markup=False)

    logits = LogitsCache(cache_dir).get(teacher, inputs.teacher.dataset)
    reference = _drift_reference(store, target, dataset)
    if latency_x_reference is not None:
        from compressor.models.on_target import check_floor

        # The budget in this run's milliseconds: the reference's start figure is the yardstick every corrected
        # latency is expressed in, so a verdict is the candidate/reference ratio against the multiple.
        target = target.with_budgets(latency_ms=latency_x_reference * reference.start_ms)
        floor = check_floor(target, dataset.input_shape, reference_ms=reference.start_ms)
        if not quiet:
            err_console.print(f"latency budget: {latency_x_reference:g} x the drift reference "
                              f"({reference.label}, {reference.start_ms:.4g} ms at the run's start) = "
                              f"{target.budgets.latency_ms:.4g} ms {target.budgets.latency_percentile}", markup=False)
    teacher_info = store.get_meta("teacher")
    if teacher_info is None:
        teacher_info = _describe_teacher(teacher, inputs.teacher, logits, target, reference)
        store.set_meta("teacher", teacher_info)
    accuracy_line, accuracy_hint = check_teacher_accuracy(teacher_info["val_accuracy"], len(dataset.val_y),
                                                          dataset.num_classes, inputs.teacher_min_accuracy,
                                                          teacher_info.get("preprocessing_alternatives"))
    if not quiet:
        err_console.print(accuracy_line, markup=False)
        if accuracy_hint:
            err_console.print(f"[yellow]hint[/]: {accuracy_hint}")
    if not store.records():
        store.set_meta("smallest_network", _check_reachable(config, target, dataset, reference))

    warm_starts = _warm_starts(config, store, target, dataset, reference)
    display = _Progress(config, quiet)
    if config.parallel:
        from compressor.search.ray_backend import parallel_search

        searching = parallel_search(config=config, target=target, dataset=dataset, teacher_logits=logits,
                                    store=store, log_path=run_dir / "measurements.jsonl", progress=display.event,
                                    reference=reference, cache_dir=cache_dir, warm_starts=warm_starts)
    else:
        searching = contextlib.nullcontext(Search(config=config, target=target, dataset=dataset,
                                                  teacher_logits=logits, store=store, progress=display.event,
                                                  reference=reference, cache_dir=cache_dir, warm_starts=warm_starts))
    with searching as search, display:
        display.preload(search.records)
        records = search.run()
    seconds = sum(r.total_s for r in records)
    # Families within one validation image of the best are a tie, which goes to the faster.
    tolerance = 1.0 / len(dataset.val_y)
    finalists, merged = _distinct_finalists(config, records, tolerance, baseline, store, run_dir, dataset, target,
                                            reference, cache_dir, quiet)
    report = _base_report(config, target, teacher_info, records, seconds, store.get_meta("search_seconds"))
    report["budgets"]["latency_x_reference"] = latency_x_reference
    report["latency_floor"] = {"one_op_ms": floor, "smallest_network": store.get_meta("smallest_network"),
                               "drift_reference": None if reference is None else reference.to_dict()}
    report["warnings"] += [w for w in (split_warning, accuracy_hint) if w]
    report["finalists_merged"] = merged
    if not finalists:
        report["failure"] = failure_summary(records)
        from compressor.pipeline.report import write_report

        write_report(run_dir, report, records)
        raise UserError(f"no feasible student in {len(records)} evaluations: {report['failure']}; loosen the budgets, "
                        "raise --trials, or try another --space")

    evaluations = _tuning_evaluations(config, report)
    candidates = [_finalist(config, rank, rec, len(finalists), store, run_dir, dataset, logits, target, reference,
                            cache_dir, evaluations, quiet) for rank, rec in enumerate(finalists)]
    if baseline:
        report["baselines"] = [_baseline(config, store, run_dir, dataset, logits, target, quiet, reference,
                                         evaluations)]
        # A baseline of which no width fits is no student to ship: it competes only within the budget.
        if report["baselines"][0]["status"] == "ok" and report["baselines"][0]["meets_budget"] is not False:
            candidates.append(_baseline_candidate(report["baselines"][0], config, dataset))
    checkpoint = run_dir / "best.pt"
    models = _candidate_models(candidates, dataset, run_dir)
    found = _final_session(config, store, teacher, tuple(teacher_info["input_shape"]), dataset, target, candidates,
                           models, report.get("baselines", []), reference, quiet)
    for candidate, judged in zip(candidates, found["candidates"]):
        candidate.update(judged)
    index, final = _choose_student(candidates, dataset, store, run_dir, checkpoint, config, quiet)
    model = models[index]
    report["student"] = final
    report["param_reduction"] = teacher_info["params"] / max(1, final["params"])
    _apply_final_session(report, found, index)
    # Said first in the summaries: a user whose teacher already fits may not need a student at all.
    report["teacher_meets_budget"] = target.budgets.any() and report["teacher"].get("within_budget") is True
    if config.export:
        bundle = run_dir / "artifacts"
        artifacts = store.get_meta("artifacts")
        if artifacts is None or not (bundle / "artifacts.json").is_file():
            try:
                from compressor.export import ExportConfig, export_bundle

                artifacts = export_bundle(model, json_dumps_arch(final["arch"]), inputs.raw, target, bundle,
                                          ExportConfig(formats=config.export_formats),
                                          preprocessing=dataset.preprocessing, checkpoint=str(checkpoint))["artifacts"]
                store.set_meta("artifacts", artifacts)
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - the student is saved; a failed export is reported, not fatal
                report["artifacts_error"] = f"{type(exc).__name__}: {exc}"
                artifacts = []
        report["artifacts"] = artifacts
    from compressor.pipeline.report import write_report

    write_report(run_dir, report, records)
    return CompressResult(run_dir=run_dir, report=report, checkpoint=checkpoint, records=records)


def json_dumps_arch(arch: dict[str, Any]) -> str:
    import json

    return json.dumps(arch, sort_keys=True)


def _target_key(target) -> dict[str, Any]:
    data = target.to_dict()
    data.pop("source", None)
    return data


def _fingerprint(config: SearchConfig, teacher, inputs: _Inputs, target,
                 latency_x_reference: float | None = None) -> dict[str, Any]:
    """What a resumed run must share with the original (`SearchConfig.fingerprint`, the teacher and its
    inputs, the data, the target and a relative latency budget)."""
    from compressor.spaces import get_space

    # The space's knob table too: hyperopt stores a choice as its index, so a run made with other choices
    # (nago's retired operations, say) would be replayed as different networks.
    space_knobs = [list(row[:3]) for row in get_space(config.space).describe()]
    return json_safe({"search": config.fingerprint(), "space_knobs": space_knobs, "teacher": teacher.content_hash,
                      "teacher_inputs": inputs.teacher.dataset.identity, "dataset": inputs.dataset.identity,
                      "label_fraction": inputs.dataset.label_fraction, "target": _target_key(target),
                      **({} if latency_x_reference is None else {"latency_x_reference": latency_x_reference})})


def _teacher_split_warning(teacher, dataset) -> str | None:
    """A warning when a compressor-trained teacher saw another split of this data than the run uses."""
    trained_on = (teacher.meta or {}).get("data_split")
    if trained_on is None or trained_on == dataset.split_identity:
        return None
    return (f"teacher {teacher.ref} was trained on another split of the data than this run's (split seed or "
            "data differ): its test accuracy may include images it was trained on; train the teacher with the "
            "same --data and --split-seed")


def _drift_reference(store, target, dataset):
    """The run's DriftReference: measured at the run's start and stored; a resume keeps the start figure."""
    from compressor.models.on_target import DriftReference

    stored = store.get_meta("drift_reference")
    if stored is not None:
        return DriftReference.from_dict(stored, target, dataset.input_shape, dataset.num_classes)
    reference = DriftReference.start(target, dataset.input_shape, dataset.num_classes)
    if reference is not None:
        store.set_meta("drift_reference", reference.to_dict())
    return reference


def _describe_teacher(teacher, teacher_in, logits, target, reference) -> dict[str, Any]:
    """Accuracy from the cached logits, the profile at the teacher's own input shape, its preprocessing."""
    from compressor.models.on_target import check_on_target
    from compressor.models.teachers import alternative_accuracies
    from compressor.train.distill import logits_accuracy

    dataset = teacher_in.dataset
    shape = (target.batch_size, *dataset.input_shape)
    val_acc = logits_accuracy(logits["val"], dataset.val_y)
    test_acc = logits_accuracy(logits["test"], dataset.test_y)
    profile = check_on_target(teacher.onnx_bytes(shape), target, dataset.input_shape, memory=True,
                              label="teacher", reference=reference).profile
    return {"ref": teacher.ref, "arch": teacher.arch, "val_accuracy": val_acc, "test_accuracy": test_acc,
            "params": int(profile["params"]), "macs": int(profile["macs"]), "profile": profile,
            "input_shape": list(dataset.input_shape), "preprocessing": teacher_in.preprocessing.to_dict(),
            "preprocessing_source": teacher_in.source,
            "preprocessing_alternatives": alternative_accuracies(teacher_in)}


def _check_reachable(config, target, dataset, reference) -> dict[str, Any] | None:
    """Fail in seconds if even the space's smallest network is over budget; its figures otherwise."""
    from compressor.models.on_target import check_on_target
    from compressor.spaces import get_space

    if not target.budgets.any():
        return None
    space = get_space(config.space)
    spec = space.sample(space.smallest_params(), config.seed)
    model = space.build(spec, dataset.input_shape, dataset.num_classes)
    checked = check_on_target(model, target, dataset.input_shape, max_seconds=config.profile_seconds,
                              label=f"smallest {config.space}", reference=reference)
    if not checked.fits:
        raise UserError(
            f"budgets unreachable on {target.name}: even the smallest network of the {config.space!r} space "
            f"measures {checked.reasons[0]}; loosen the budget or choose another --space"
        )
    return {"space": config.space, "latency_ms": checked.latency_ms, "latency_interval": checked.latency_interval,
            "verdict": checked.verdict}


def _warm_starts(config: SearchConfig, store, target, dataset, reference) -> list:
    """The space's known-good points, its plain CNN at the widest width within the budget, measured.

    "The search starts from the budget-filling plain CNN": where the space holds the zoo's plain
    family (`--space all` or `zoo`) and there is a latency budget, its warm start gets the width the
    baseline gets (`baselines.choose_width`: one side-by-side session, kept in meta `plain_width` and
    given to the baseline too), and fit-to-budget keeps it and the search's screening reuses that
    session's verdict (`WarmStart.measured`: one network, one verdict per run). A searched student
    then starts from the baseline's network; with the same finishing (compressor.pipeline.finish) it
    can lose to the baseline only by the noise of training, not by never having met it. The same
    session measures the deeper plain CNN's ladder (`baselines.DEEPER_BASE` with `DEEPER_CONVS`), and
    its widest within the budget is a second plain warm start, right after the first: a known-good
    network the baseline's ladder does not hold (docs/design.md, "The deeper plain warm start").
    """
    from compressor.pipeline.baselines import choose_width
    from compressor.search.config import warm_start_points
    from compressor.spaces import get_space

    space = get_space(config.space)
    points = warm_start_points(space)
    if "plain" not in space.search_groups() or target.budgets.latency_ms is None:
        return points
    width = store.get_meta("plain_width")
    if width is None or "deeper" not in width:
        width = json_safe(choose_width(target, dataset, seed=config.seed, seconds_each=config.profile_seconds,
                                       reference=reference, deeper=True))
        store.set_meta("plain_width", width)

    def plain(point) -> list:
        found = [_plain_at_width(point, width), _plain_at_width(point, width["deeper"])]
        return [q for q in found if q is not None] or [point]

    return [q for p in points for q in (plain(p) if p.group == "plain" else [p])]


def _plain_at_width(point, chosen: dict[str, Any]):
    """The plain warm start `point` at a width session's `chosen` widths (and convs), measured; None when the
    session found none of that ladder within the budget."""
    if not chosen["within"]:
        return None
    knobs = {f"width_{i + 1}": int(w) for i, w in enumerate(chosen["widths"].split("-"))}
    knobs.update({f"convs_{i + 1}": c for i, c in enumerate(chosen.get("convs", ()))})
    measured = {"session": chosen["session"], "latency_ms": chosen["latency_ms"], "profile": chosen["profile"]}
    return dataclasses.replace(point, arch={**point.arch, **knobs}, measured=measured)


def _baseline_network(config: SearchConfig, store) -> str | None:
    """The baseline's network (`search.fit.network_key`): the plain CNN at the width the baseline was given (meta
    `plain_width`, `_warm_starts`); None where no width of its ladder was within the budget."""
    from compressor.search.config import warm_start_points
    from compressor.search.fit import network_key
    from compressor.spaces import get_space

    space = get_space(config.space)
    width = store.get_meta("plain_width")
    plain = [p for p in warm_start_points(space) if p.group == "plain"]
    baseline = _plain_at_width(plain[0], width) if plain and width is not None else None
    return None if baseline is None else network_key(space, baseline.params(space)["arch"])


def _distinct_finalists(config: SearchConfig, records, tolerance: float, baseline: bool, store, run_dir: Path, dataset,
                        target, reference, cache_dir, quiet: bool) -> tuple[list, list[dict[str, Any]]]:
    """The finalists (compressor.pipeline.finalists, step 1), each filled, no two of them the same network once filled,
    none the baseline's with `--baseline`; and the families passed over for it (`report["finalists_merged"]`).

    Why: the fill grows each finalist along its family's size ladder to the widest size within the budget, so two
    families that differ only in size become one network. In 5-minute searches on digits-cluttered, plain 8-8-16
    (convs 1-2-2) filled to 16-16-32, the deeper plain warm start, and the two were trained and tuned as two
    finalists, one network twice in place of a second one. The later of the two in the finalists' order is passed
    over and the next family takes its place; fills are stored (`RUN_DIR/finalists/`), so going round again
    measures only the new finalist's.
    """
    from compressor.search.fit import network_key
    from compressor.spaces import get_space

    space = get_space(config.space)
    ours = _baseline_network(config, store) if baseline else None
    merged: dict[int, dict[str, Any]] = {}

    def network(record) -> str:
        return network_key(space, record.params["arch"])

    while True:
        finalists = finalist_records(records, config.finalists, tolerance=tolerance, kept=_fills_the_budget,
                                     excluded=lambda r: network(r) == ours or r.proposal in merged, network=network)
        seen = {} if ours is None else {ours: "the baseline"}
        for record in finalists:
            filled = network_key(space, _fill_finalist(config, record, store, run_dir, dataset, target, reference,
                                                       cache_dir)["fill"]["arch"])
            if filled in seen:
                merged[record.proposal] = {"proposal": record.proposal, "fidelity": record.fidelity,
                                           "network_of": seen[filled]}
                if not quiet:
                    from compressor.cli.console import err_console

                    err_console.print(f"proposal {record.proposal}: filled, it is the network of {seen[filled]}; "
                                      "the next family takes its place among the finalists", markup=False)
                break
            seen[filled] = f"proposal {record.proposal}"
        else:
            return finalists, list(merged.values())


def _fills_the_budget(record) -> bool:
    """Whether a search record is a budget-filling plain warm start (its width measured within the budget in the
    baseline's width session, `_warm_starts`): a finalist whatever its rank (compressor.pipeline.finalists)."""
    from compressor.search.strategies import is_warm_start

    return is_warm_start(record) and (record.misc or {}).get("screened") is not None


def _tuning_evaluations(config: SearchConfig, report) -> int:
    """The lr/KD evaluations of the winner's and the baseline's tuning: `tuning_trials`, else the trained families."""
    return config.tuning_trials or max(1, min(config.trials, report["search"]["trained"]))


def _finalist(config, rank: int, best, count: int, store, run_dir: Path, dataset, logits, target, reference,
              cache_dir, evaluations: int, quiet: bool) -> dict[str, Any]:
    """Finalist `rank` of `count` (compressor.pipeline.finalists): finished, trained for `final_epochs`, once per run.

    Kept in meta `finalists` by (proposal, fidelity) with its checkpoint under `RUN_DIR/finalists/`, so a resume
    whose finalists changed trains only the new ones.
    """
    from compressor.pipeline.baselines import FINISHING

    path = _finalist_path(run_dir, best, ".pt")
    key = path.stem
    found = (store.get_meta("finalists") or {}).get(key)
    # A finalist finished on other terms (fewer knob sets, its tuning started from its searched knobs) is finished
    # again: the baseline it is compared with is finished on today's.
    if found is not None and path.is_file() and found.get("finishing") == FINISHING:
        return found
    finished = _finish_winner(config, best, store, run_dir, dataset, logits, target, reference, cache_dir,
                              evaluations, quiet)
    final = _final_training(config, best, finished, dataset, logits, target, path, quiet,
                            f"finalist {rank + 1}/{count}")
    found = json_safe({**final, "preprocessing": dataset.preprocessing.to_dict(), "source": "search",
                       "name": f"searched proposal {best.proposal}", "search_val_accuracy": best.val_accuracy,
                       "checkpoint": str(path.relative_to(run_dir)),
                       "identity": ["search", best.proposal, best.fidelity]})
    store.set_meta("finalists", {**(store.get_meta("finalists") or {}), key: found})
    return found


def _finalist_store(store, best, member: int, path: Path, **terms: Any):
    """A finalist's own store, tied to the run and to `terms`: `RUN_DIR/finalists/pP-fF.sqlite` keeps its fill,
    `pP-fF-tuning.sqlite` its tuning (on other finishing terms the tuning starts again, the fill stands)."""
    from compressor.pipeline.baselines import open_tuning_store

    path.parent.mkdir(parents=True, exist_ok=True)
    return open_tuning_store(path, {"fingerprint": store.get_meta("fingerprint"),
                                    "started_at": store.get_meta("started_at"),
                                    "winner": [best.proposal, best.fidelity, member], **terms})


def _fill_finalist(config, best, store, run_dir: Path, dataset, target, reference, cache_dir) -> dict[str, Any]:
    """A finalist's best member and its width filled (compressor.pipeline.finish.fill_winner), measured once per run."""
    from compressor.pipeline.finish import fill_winner
    from compressor.search.fit import BudgetFit
    from compressor.spaces import get_space

    member = max(range(len(best.member_accuracies)), key=lambda i: best.member_accuracies[i])
    seed, space = best.seeds[member], get_space(config.space)
    winner = _finalist_store(store, best, member, _finalist_path(run_dir, best, ".sqlite"))
    try:
        fill = winner.get_meta("fill")
        if fill is None:
            fill = json_safe(fill_winner(space, best.params["arch"], seed, target, dataset,
                                         budget=BudgetFit.open(config, space, target, dataset, cache_dir,
                                                               reference=reference),
                                         seconds_each=config.profile_seconds, reference=reference))
            winner.set_meta("fill", fill)
    finally:
        winner.close()
    return {"member": member, "seed": seed, "fill": fill}


def _finalist_path(run_dir: Path, best, suffix: str) -> Path:
    return run_dir / "finalists" / f"p{best.proposal}-f{best.fidelity}{suffix}"


def _finish_winner(config, best, store, run_dir: Path, dataset, logits, target, reference, cache_dir,
                   evaluations: int, quiet: bool) -> dict[str, Any]:
    """A finalist's best member, its width filled and its lr/KD tuned (compressor.pipeline.finish), resumable in
    `RUN_DIR/finalists/`."""
    from compressor.cli.console import err_console
    from compressor.pipeline.baselines import TUNING
    from compressor.pipeline.finish import tune_winner
    from compressor.spaces import get_space

    say = (lambda text: None) if quiet else (lambda text: err_console.print(text, markup=False))
    filled = _fill_finalist(config, best, store, run_dir, dataset, target, reference, cache_dir)
    member, fill = filled["member"], filled["fill"]
    if fill["grew"]:
        say(f"proposal {best.proposal}: grown to {_sizes(fill)}, the widest of "
            f"{len(fill['candidates'])} sizes within the budget")
    spec = get_space(config.space).sample(fill["arch"], filled["seed"])
    winner = _finalist_store(store, best, member, _finalist_path(run_dir, best, "-tuning.sqlite"), tuning=TUNING)
    try:
        tuning = tune_winner(config, spec, best.params, dataset, logits, store=winner, evaluations=evaluations,
                             say=say, label=f"proposal {best.proposal}")
    finally:
        winner.close()
    return {"member": member, "spec": spec, "fill": fill, "tuning": tuning}


def _chosen_rung(fill: dict[str, Any]) -> dict[str, Any] | None:
    """The fill session's candidate at the size the fill kept."""
    return next((c for c in fill["candidates"] if all(fill["arch"].get(k) == v for k, v in c["sizes"].items())), None)


def _sizes(fill: dict[str, Any]) -> str:
    """The chosen size of a fill, e.g. "base_width=24"."""
    return ", ".join(f"{k}={v:g}" for k, v in _chosen_rung(fill)["sizes"].items())


def _final_training(config, best, finished, dataset, logits, target, checkpoint: Path, quiet: bool,
                    label: str) -> dict[str, Any]:
    import json

    from compressor.cli.console import err_console
    from compressor.models.on_target import check_on_target
    from compressor.pipeline.baselines import FINISHING, train_final
    from compressor.search import recipe

    member, spec = finished["member"], finished["spec"]
    say = (lambda text: None) if quiet else (lambda text: err_console.print(text, markup=False))
    say(f"{label}: proposal {best.proposal} member {member} (val {100 * best.val_accuracy:.2f}% at "
        f"{best.fidelity} ep), final training for {config.final_epochs} epochs")
    (model, result, knobs), trainings = train_final(spec, dataset, config, logits, finished["tuning"]["top"], say,
                                                    f"proposal {best.proposal}")
    if model is None:
        raise UserError(f"final training of proposal {best.proposal} failed: {result.reason}")
    meta = {"val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
            "epochs": config.final_epochs, "kd_alpha": knobs["kd_alpha"], "kd_tau": knobs["kd_tau"],
            "lr": knobs["lr"], "proposal": best.proposal, "fidelity": best.fidelity, "member": member,
            "seconds": result.seconds, "fill": finished["fill"], "tuning": finished["tuning"],
            "finishing": FINISHING, "final_trainings": trainings}
    recipe.save_trained(checkpoint, model, spec, dataset, meta)
    profile = check_on_target(model, target, dataset.input_shape, memory=True).profile
    return {**meta, "params": int(profile["params"]), "macs": int(profile["macs"]), "profile": profile,
            "arch": json.loads(spec.to_json()), "loss_curve": result.loss_curve}


def _baseline_name(entry: dict[str, Any]) -> str:
    """A trained baseline's name among the finalists and in the final session."""
    return f"baseline {entry['name']}"


def _baseline_candidate(entry: dict[str, Any], config, dataset) -> dict[str, Any]:
    """The trained baseline as a finalist: the fields of a student and its checkpoint (relative to the run)."""
    import json

    from compressor.spaces import spec_from_ref

    return {**{k: entry[k] for k in ("val_accuracy", "test_accuracy", "epochs", "kd_alpha", "kd_tau", "lr", "seconds",
                                     "params", "macs", "profile")},
            "proposal": None, "fidelity": None, "member": None, "loss_curve": entry.get("loss_curve", []),
            "arch": json.loads(spec_from_ref(entry["arch"], seed=config.seed).to_json()),
            "preprocessing": dataset.preprocessing.to_dict(), "source": "baseline",
            "name": _baseline_name(entry), "search_val_accuracy": None,
            "checkpoint": "baseline.pt", "identity": ["baseline", entry["arch"]]}


def _candidate_models(candidates: list[dict[str, Any]], dataset, run_dir: Path) -> list:
    """Each finalist's trained network, read from its checkpoint, with its validation mistakes set ("val_wrong").

    The predictions are read again from the checkpoints, so the paired comparison holds for a resumed run whose
    finalists were trained before the predictions counted.
    """
    from compressor.models.build import model_from_checkpoint
    from compressor.models.checkpoint import load_checkpoint
    from compressor.train.distill import predict

    models = []
    for candidate in candidates:
        model = model_from_checkpoint(load_checkpoint(run_dir / candidate["checkpoint"]))
        wrong = predict(model, dataset.val_x) != dataset.val_y
        candidate["val_wrong"] = [int(i) for i in wrong.nonzero().flatten()]
        models.append(model)
    return models


def _choose_student(candidates: list[dict[str, Any]], dataset, store, run_dir: Path, checkpoint: Path, config,
                    quiet: bool) -> tuple[int, dict[str, Any]]:
    """The student among the finalists (compressor.pipeline.finalists.choose), copied to `checkpoint`: its index
    and its report entry."""
    import hashlib

    from compressor.cli.console import err_console
    from compressor.models.checkpoint import load_checkpoint, save_checkpoint

    index = choose(candidates, len(dataset.val_y))
    chosen = candidates[index]
    weights = hashlib.sha256((run_dir / chosen["checkpoint"]).read_bytes()).hexdigest()
    previous = store.get_meta("final")
    if previous is None or not checkpoint.is_file() or previous.get("identity") != chosen["identity"] \
            or previous.get("weights_sha256") != weights:
        # The student changed (a resume with more trials, another finalist ahead, the same finalist trained
        # again) or was never saved: what was exported for the previous one no longer describes it.
        store.set_meta("artifacts", None)
        save_checkpoint(checkpoint, load_checkpoint(run_dir / chosen["checkpoint"]))
    final = {**{k: v for k, v in chosen.items() if k not in ("checkpoint", "val_wrong")}, "weights_sha256": weights,
             "finalists": [summary(c, i == index, chosen) for i, c in enumerate(candidates)]}
    store.set_meta("final", final)
    if not quiet:
        err_console.print(choice_text(final["finalists"], config.final_epochs), markup=False)
    return index, final


def _baseline(config, store, run_dir: Path, dataset, logits, target, quiet: bool, reference,
              evaluations: int) -> dict[str, Any]:
    """The fair hand-designed baseline (compressor.pipeline.baselines), once per run.

    Its tuning is resumable in its own store (`RUN_DIR/baseline.sqlite`, tied to this run by the fingerprint
    and start time); the finished result is kept in meta `baseline` and its weights in `RUN_DIR/baseline.pt` (it
    is a finalist: it may become the student), so a resume reads them from there.
    """
    from compressor.cli.console import err_console
    from compressor.pipeline.baselines import FINISHING, hand_designed_baseline, open_tuning_store

    found = store.get_meta("baseline")
    weights = run_dir / "baseline.pt"
    if found is None or (found["status"] == "ok" and (not weights.is_file()
                                                      or found.get("finishing") != FINISHING)):
        if not quiet:
            err_console.print(f"baseline: the widest plain CNN within the budget, lr/KD tuned in {evaluations} "
                              f"evaluations at {config.fidelities[0]} epoch(s), then the student's recipe for "
                              f"{config.final_epochs} epochs")
        tuning = open_tuning_store(run_dir / "baseline.sqlite",
                                   {"fingerprint": store.get_meta("fingerprint"),
                                    "started_at": store.get_meta("started_at")})
        if tuning.get_meta("width") is None and store.get_meta("plain_width") is not None:
            # The search's plain warm start: one session (its deeper ladder is the search's, not the baseline's).
            tuning.set_meta("width", {k: v for k, v in store.get_meta("plain_width").items() if k != "deeper"})
        try:
            found = json_safe(hand_designed_baseline(
                dataset, target, config, logits, store=tuning, reference=reference,
                say=(lambda text: None) if quiet else (lambda text: err_console.print(text, markup=False)),
                evaluations=evaluations, checkpoint=weights))
        finally:
            tuning.close()
        store.set_meta("baseline", found)
    return found


def _final_session(config, store, teacher, teacher_shape: tuple[int, ...], dataset, target, candidates, models,
                   baselines, reference, quiet: bool) -> dict[str, Any]:
    """Teacher, every finalist and the trained baselines measured in ONE side-by-side session.

    Each finalist (`candidates`, built as `models`) gets its verdict and its speed-up over the teacher
    there; the student is then chosen among those within the budgets (compressor.pipeline.finalists,
    step 4). Kept in the store (meta `final_session`) by the finalists' and baselines' identities, so a
    finished run resumed again reports the same figures instead of measuring again.
    """
    from compressor.cli.console import err_console
    from compressor.models.on_target import check_side_by_side
    from compressor.pipeline.report import trained_baselines
    from compressor.spaces import build_model, spec_from_ref

    trained = trained_baselines({"baselines": baselines})
    identity = [[c["identity"] for c in candidates], [b["arch"] for b in trained]]
    found = store.get_meta("final_session")
    if found is not None and found.get("identity") == identity:
        return found
    if not quiet:
        err_console.print(f"final session: the teacher and {len(candidates)} finalists measured side by side")
    measured = {"teacher": teacher.onnx_bytes((target.batch_size, *teacher_shape)),
                **{c["name"]: m for c, m in zip(candidates, models)}}
    for entry in trained:
        # Latency depends on the architecture, not on the trained weights: a baseline that is no finalist (none
        # of its widths was within the budget) is rebuilt from its arch.
        measured.setdefault(_baseline_name(entry), build_model(spec_from_ref(entry["arch"], seed=config.seed),
                                                                dataset.input_shape, dataset.num_classes))
    session = check_side_by_side(measured, target, dataset.input_shape, input_shapes={"teacher": teacher_shape},
                                 reference=reference, memory=True, name="final")
    judged = {name: {**checked.verdict_fields(), "profile": checked.profile}
              for name, checked in session.checked.items()}
    speedups = [session.ratio("teacher", c["name"], "p50") for c in candidates]
    found = json_safe({
        "identity": identity,
        "session": session.checked["teacher"].session,
        "teacher": judged["teacher"],
        "candidates": [judged[c["name"]] for c in candidates],
        "speedups_p50": [{"value": value, "interval": list(interval)} for value, interval in speedups],
        "baselines": [judged[_baseline_name(b)] for b in trained],
    })
    store.set_meta("final_session", found)
    return found


def _apply_final_session(report: Report, found: dict[str, Any], index: int) -> None:
    """Put the final session's figures into the report: the teacher's and baselines' verdicts, the session and the
    speed-up of the student (finalist `index`, whose verdict came with its candidate)."""
    from compressor.pipeline.report import trained_baselines

    report["final_session"] = found["session"]
    report["teacher"] = {**report["teacher"], "profile_at_start": report["teacher"]["profile"],
                         **found["teacher"]}
    for entry, judged in zip(trained_baselines(report), found["baselines"]):
        entry.update(judged)
        entry["at_same_budget"] = judged["within_budget"] is True
    speedup = found["speedups_p50"][index]
    report["speedup_p50"] = speedup["value"]
    report["speedup_p50_interval"] = speedup["interval"]
    report["speedup_session"] = found["session"]["id"]


def _train_fraction(config: SearchConfig, records, seconds: float, wall_seconds: float | None) -> float:
    """The share of the search's time spent training: over its wall-clock times the workers, the strategy's own
    time included (TRADE's GP fit and Thompson sample before each proposal, about 0.5 s, took 37% of a 5-minute
    search that proposed 254 repeats: BENCHMARKS.md, "Repeats, and a baseline ladder in half steps"); over the
    evaluations' time where a run kept no wall-clock."""
    trained = sum(r.train_s for r in records)
    spent = wall_seconds * config.workers if wall_seconds else seconds
    return trained / spent if spent else 0.0


def _base_report(config, target, teacher_info, records, seconds, wall_seconds) -> Report:
    from dataclasses import asdict

    from compressor.search.latency_model import screening_summary

    proposals = {r.proposal for r in records}
    first = config.fidelities[0]
    at_first = [r for r in records if r.fidelity == first]
    return json_safe({
        "target": _target_key(target),
        "budgets": asdict(target.budgets),
        "teacher": teacher_info,
        "student": None,
        "search": {
            "strategy": config.strategy, "space": config.space, "trials": len(proposals),
            "search_minutes": config.search_minutes,
            "trained": sum(r.status not in UNTRAINED for r in at_first),
            "evaluations": len(records),
            "feasible": sum(r.status == "ok" for r in at_first),
            "infeasible": sum(r.status == "infeasible" for r in at_first),
            "failed": sum(r.status == "failed" for r in at_first),
            "repeats": sum(r.status == "repeat" for r in at_first),
            "family_size": config.family_size, "fidelities": list(config.fidelities), "eta": config.eta,
            "seconds": seconds,
            "screen_seconds_median": _median([r.screen_s for r in at_first]),
            "wall_seconds": wall_seconds,
            "train_fraction": _train_fraction(config, records, seconds, wall_seconds),
            "pareto": pareto_front(records),
            "fill_fraction": config.fill_fraction,
            "latency_model": screening_summary(at_first, target.budgets.latency_ms),
        },
        "artifacts": [],
        "warnings": [],
    })


def _median(values: list[float]) -> float | None:
    import statistics

    return statistics.median(values) if values else None


class _Progress:
    """Live display on stderr: trial n/N, feasible so far, best accuracy, the evaluations in flight, elapsed/ETA."""

    def __init__(self, config: SearchConfig, quiet: bool) -> None:
        self.config = config
        self.quiet = quiet
        self.done = 0
        self.screened = 0
        self.feasible = 0
        self.best: float | None = None
        self.in_flight: dict[tuple[int, int], None] = {}  # (proposal, fidelity) of the evaluations running now
        self._progress = None
        self._task = None

    def __enter__(self) -> "_Progress":
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            from compressor.cli.console import err_console

            self._progress = Progress(TextColumn("[bold]search[/]"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.description}"), TimeElapsedColumn(), TextColumn("ETA"),
                                      TimeRemainingColumn(), console=err_console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.config.trials)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def preload(self, records) -> None:
        for rec in records:
            self._count(rec)
        self._refresh("")

    def _count(self, rec) -> None:
        if rec.fidelity == self.config.fidelities[0] and rec.status != "repeat":
            self.screened += 1
            self.done += rec.status != "infeasible"
            self.feasible += rec.status == "ok"
        if rec.status == "ok" and (self.best is None or rec.val_accuracy > self.best):
            self.best = rec.val_accuracy

    def _refresh(self, doing: str) -> None:
        if self._progress is None:
            return
        best = "-" if self.best is None else f"{100 * self.best:.2f}%"
        self._progress.update(self._task, completed=self.done,
                              description=f"screened {self.screened} | feasible {self.feasible} | "
                                          f"best val {best} | {doing}")

    def _running(self) -> str:
        return ", ".join(f"proposal {p} @ {f} ep" for p, f in self.in_flight)

    def event(self, kind: str, info: dict) -> None:
        if kind == "start":
            self.in_flight[(info["proposal"], info["fidelity"])] = None
            self._refresh(self._running())
            return
        rec = info["record"]
        self.in_flight.pop((rec.proposal, rec.fidelity), None)
        self._count(rec)
        self._refresh(self._running())
        if not self.quiet and not self._progress.console.is_terminal:
            # Logs and pipes get one line per evaluation instead of a live bar.
            outcome = (f"val {100 * rec.val_accuracy:.2f}% (score {100 * rec.score:.2f}%)" if rec.status == "ok"
                       else f"{rec.status}: {rec.reason}")
            self._progress.console.print(
                f"proposal {rec.proposal} @ {rec.fidelity} ep: {outcome} "
                f"({rec.latency_ms or 0:.3f} ms, {rec.total_s:.1f} s) | {self.done}/{self.config.trials} trained, "
                f"{self.screened} screened, best {'-' if self.best is None else f'{100 * self.best:.2f}%'}")
