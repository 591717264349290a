"""A run's report: `report.json` (the `Report` contract below), `report.md` for a person, `pareto.png`.

The JSON is written atomically (temporary name, then rename) so a crash never
leaves a half-written report next to a complete-looking run. Accuracies are
fractions in [0, 1]; latencies are milliseconds per batch on the target.
Every profile in it is a `profilers.Profile`.

Verdicts (`Verdict`, from `compressor.models.on_target.Checked.verdict_fields`):
the teacher, the student and each trained baseline carry the verdict of ONE
side-by-side session measured at the end of the run (`final_session`), and
`speedup_p50` is the teacher/student ratio of medians from that same session,
with its bootstrap interval. `within_budget` is true, false or "borderline"
(the interval straddled the budget even after a longer measurement; then
`fits` follows the point estimate and `decided_by` says "point estimate").
`budget_ratio` is the judged latency over the latency budget (drift-corrected
to the run's start), with `budget_ratio_interval`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypedDict

from profilers.profile import Profile

from compressor.search.store import TrialRecord


class Verdict(TypedDict, total=False):
    """A model's budget verdict from the final session (see the module docstring)."""

    within_budget: bool | str  # True, False or "borderline"
    verdict: str  # "within" | "over" | "borderline"
    decided_by: str  # "interval" | "point estimate"
    fits: bool
    reasons: list[str]
    latency_ms: float | None  # judged: the budget percentile, drift-corrected
    latency_interval: list[float] | None
    raw_latency_ms: float | None
    drift: float | None  # reference latency at the run's start / in the session
    budget_ratio: float | None
    budget_ratio_interval: list[float] | None
    remeasured: bool
    session: str  # the id of `final_session`


class FinalSession(TypedDict):
    """The side-by-side session every final verdict and the speed-up come from."""

    id: str
    mode: str  # "interleaved" | "sequential"
    models: list[str]
    rounds: int
    seconds: float
    percentile: str
    confidence: float
    reference: dict[str, Any] | None  # the drift reference: arch, percentile, start_ms, now_ms
    drift: float | None
    remeasured: bool
    warnings: list[str]


class LatencyFloor(TypedDict):
    """The runtime's floor on this machine: a one-op model, and the space's smallest network."""

    one_op_ms: float | None  # None without a latency budget
    smallest_network: dict[str, Any] | None
    drift_reference: dict[str, Any] | None


class _TeacherRequired(TypedDict):
    """The teacher as the run saw it: accuracies from its cached logits, its profile on the target,
    the input shape it was fed and its preprocessing (`Preprocessing.to_dict()`) with where that came from, and
    its accuracy on up to 512 validation images with each other named preprocessing."""

    ref: str
    arch: str
    val_accuracy: float
    test_accuracy: float
    params: int
    macs: int
    profile: Profile  # from the final session once there is a student
    input_shape: list[int]
    preprocessing: dict[str, Any]
    preprocessing_source: str
    preprocessing_alternatives: dict[str, float]


class TeacherReport(_TeacherRequired, Verdict, total=False):
    """The teacher as the run saw it: accuracies from its cached logits, its profile on the target."""

    profile_at_start: Profile


class _StudentRequired(TypedDict):
    """The final student: the finalist chosen on validation after `epochs` (compressor.pipeline.finalists.choose)."""

    val_accuracy: float
    test_accuracy: float
    epochs: int
    kd_alpha: float
    kd_tau: float
    lr: float
    source: str  # "search", or "baseline" when no searched finalist beat the baseline on validation beyond the noise
    name: str
    proposal: int | None  # the search's proposal, fidelity and member; None for the baseline's network
    fidelity: int | None
    member: int | None
    seconds: float
    params: int
    macs: int
    profile: Profile
    arch: dict[str, Any]
    loss_curve: list[float]
    preprocessing: dict[str, Any]
    identity: list[Any]
    # every finalist: source, name, val/test accuracy, latency, chosen, `paired` (validation images only the
    # student / only this finalist got right; None for the student)
    finalists: list[dict[str, Any]]


class StudentReport(_StudentRequired, Verdict, total=False):
    """The final student; profile and verdict from the final session."""

    weights_sha256: str  # of its trained weights: a resume that trained it again exports again
    # a searched student: its fill, its lr/KD tuning and the tuning's knob sets trained in full
    fill: dict[str, Any]
    tuning: dict[str, Any]
    finishing: dict[str, Any]  # the terms it was finished on (baselines.FINISHING), the same as the baseline's
    final_trainings: list[dict[str, Any]]


class _BaselineRequired(TypedDict):
    name: str
    arch: str
    status: str
    meets_budget: bool
    epochs: int


class BaselineTuning(TypedDict):
    """The baseline's own lr/KD tuning: `evaluations` short trainings (TPE) at `fidelity` epochs."""

    evaluations: int
    fidelity: int
    strategy: str
    failed: int
    best: dict[str, Any] | None  # lr, kd_alpha, kd_tau, kd (on/off); None when every evaluation failed
    val_accuracy: float | None  # the best knobs' validation accuracy at `fidelity` epochs


class BaselineReport(_BaselineRequired, Verdict, total=False):
    """A hand-designed baseline: status "ok" with its figures and final verdict, or "failed" with the reason.

    `meets_budget` is the verdict that chose its width (`width`: every candidate's verdict in one
    session); `at_same_budget` is true only when the final session found it within the budget (a
    baseline over budget is not "at the same budget"). `recipe` is the final student's TrainConfig
    without the knobs; `tuning` what chose `lr`, `kd_alpha` and `kd_tau` (compressor.pipeline.baselines)."""

    at_same_budget: bool
    reason: str
    recipe: dict[str, Any]
    tuning: BaselineTuning
    finishing: dict[str, Any]  # the terms it was finished on (baselines.FINISHING), the same as each finalist's
    final_trainings: list[dict[str, Any]]  # each tried in full: knobs, status, accuracies, seconds, "kept"
    width: dict[str, Any]
    kd: bool
    kd_alpha: float
    kd_tau: float
    lr: float
    seconds: float
    val_accuracy: float
    test_accuracy: float
    params: int
    macs: int
    profile: Profile


class SearchSummary(TypedDict):
    strategy: str
    space: str
    trials: int
    search_minutes: float | None  # the time budget asked for (None: --trials alone)
    trained: int
    evaluations: int
    feasible: int
    infeasible: int
    failed: int
    repeats: int  # proposals fitted to a network trained already, not trained again (search.schedule); 0 before
    family_size: int
    fidelities: list[int]
    eta: int
    seconds: float  # the evaluations' (screening, training) seconds, summed over workers
    wall_seconds: float | None  # the search's wall-clock over every run of it, proposing included (None before)
    screen_seconds_median: float | None
    train_fraction: float  # training over wall_seconds x workers (compress._train_fraction)
    pareto: list[dict[str, Any]]  # one front per fidelity, each point with its "fidelity" (search.analysis.pareto_front)
    fill_fraction: float | None
    latency_model: dict[str, Any]


class _ReportRequired(TypedDict):
    target: dict[str, Any]
    budgets: dict[str, Any]
    teacher: TeacherReport
    student: StudentReport | None
    search: SearchSummary
    artifacts: list[dict[str, Any]]
    warnings: list[str]


class Report(_ReportRequired, total=False):
    """report.json. `student` is None when no family was feasible (then `failure` says why);
    `artifacts` are the export bundle's entries (see compressor.export)."""

    failure: str
    speedup_p50: float  # teacher p50 / student p50, both from `final_session`
    speedup_p50_interval: list[float]
    speedup_session: str
    final_session: FinalSession
    latency_floor: LatencyFloor
    param_reduction: float
    baselines: list[BaselineReport]
    artifacts_error: str
    goals: list[dict[str, Any]]
    demo: dict[str, Any]
    teacher_meets_budget: bool  # the final session found the teacher itself within the (non-empty) budgets


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def plot_pareto(records: list[TrialRecord], report: Report, path: Path) -> None:
    """Every screened family: accuracy vs latency on the target, feasible vs infeasible, budget line, teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = report["budgets"]
    percentile = budgets.get("latency_percentile", "p50")
    fig, ax = plt.subplots(figsize=(10, 5))
    latest: dict[int, TrialRecord] = {}
    for rec in records:
        if rec.status == "ok" and (rec.proposal not in latest or rec.fidelity > latest[rec.proposal].fidelity):
            latest[rec.proposal] = rec
    ok = list(latest.values())
    if ok:
        ax.scatter([r.latency_ms for r in ok], [100 * r.val_accuracy for r in ok], s=28, c="tab:blue",
                   label="feasible family (val. acc., mean of members)", zorder=3)
    infeasible = [r for r in records if r.status == "infeasible" and r.latency_ms is not None]
    floor = min([100 * r.val_accuracy for r in ok] + [100 * (report["teacher"].get("test_accuracy") or 1)]) - 5
    if infeasible:
        ax.scatter([r.latency_ms for r in infeasible], [floor] * len(infeasible), marker="x", c="tab:red",
                   label="over budget (screened, not trained)", zorder=3)
    front = report["search"].get("pareto", [])
    fidelities = sorted({p["fidelity"] for p in front})
    for i, fidelity in enumerate(fidelities):
        # One front per fidelity (compressor.search.analysis.pareto_front): the highest drawn darkest.
        points = [p for p in front if p["fidelity"] == fidelity]
        ax.plot([p["latency_ms"] for p in points], [100 * p["val_accuracy"] for p in points], ".-", c="tab:blue",
                alpha=0.3 + 0.5 * (i + 1) / len(fidelities), label=f"Pareto front after {fidelity} epoch{'' if fidelity == 1 else 's'}")
    if budgets.get("latency_ms"):
        ax.axvline(budgets["latency_ms"], ls="--", c="k", label=f"latency budget ({budgets['latency_ms']:.3g} ms)")
    teacher = report["teacher"]
    if teacher.get("profile") and teacher.get("test_accuracy") is not None:
        ax.scatter([teacher["profile"]["latency_ms"][percentile]], [100 * teacher["test_accuracy"]], marker="*",
                   s=220, c="tab:orange", label="teacher (test acc.)", zorder=4)
    student = report.get("student")
    if student and student.get("profile"):
        ax.scatter([student["profile"]["latency_ms"][percentile]], [100 * student["test_accuracy"]], marker="D",
                   s=70, c="tab:green", label="final student (test acc.)", zorder=4)
    for baseline in trained_baselines(report):
        ax.scatter([baseline["profile"]["latency_ms"][percentile]], [100 * baseline["test_accuracy"]], marker="s",
                   s=60, c="tab:purple", label=f"hand-designed: {baseline['name']} (test acc.)", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel(f"latency {percentile} on {report['target']['name']} (ms, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{report['search']['strategy'].upper()} search: {report['search']['trials']} proposals")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _ms(profile: dict | None, key: str) -> str:
    return "-" if not profile else f"{profile['latency_ms'][key]:.3f}"


TEACHER_MEETS_BUDGET = ("The teacher itself meets the budgets (final session): it may be deployed as it is; "
                        "compare it with the student below.")


def markdown_report(report: Report) -> str:
    """A person's summary of report.json."""
    teacher, student, search = report["teacher"], report.get("student"), report["search"]
    budgets = report["budgets"]
    lines = [
        f"# Compression report: {report['target']['name']}",
        "",
        *([TEACHER_MEETS_BUDGET, ""] if report.get("teacher_meets_budget") else []),
        f"Target `{report['target']['name']}` ({report['target']['runtime']}); budgets: "
        + ", ".join(f"{k} {v}" for k, v in budgets.items() if v is not None),
        "",
        f"Search: {search['strategy']} over {search['space']}, {search['trials']} proposals ({search_counts(search)}), "
        f"{search['seconds']:.0f} s.",
        "",
        "| | test accuracy | params | MACs | p50 ms | p90 ms | peak memory MiB | size MiB | within budget |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in model_rows(report):
        prof = entry.get("profile")
        lines.append(
            f"| {name} | {_pct(entry.get('test_accuracy'))} | {entry.get('params', 0):,} | {entry.get('macs', 0):,} | "
            f"{_ms(prof, 'p50')} | {_ms(prof, 'p90')} | "
            f"{'-' if not prof or prof.get('peak_memory_mb') is None else format(prof['peak_memory_mb'], '.1f')} | "
            f"{'-' if not prof else format(prof['model_size_mb'], '.3f')} | {verdict_text(entry)} |"
        )
    lines += [f"Baseline {b['name']} failed: {b['reason']}" for b in failed_baselines(report)]
    lines += [text[0].upper() + text[1:] + "." for text in [finalists_text(report)] if text]
    lines += [baseline_terms(b) for b in report.get("baselines", []) if b.get("tuning")]
    lines += [f"Baseline {b['name']} is not within the budget ({verdict_text(b)}): it is not a baseline at the "
              "same budget." for b in trained_baselines(report) if b.get("at_same_budget") is False]
    memory = (teacher.get("profile") or {}).get("peak_memory_meaning")
    if memory:
        lines += ["", f"Peak memory: {memory}."]
    session = report.get("final_session")
    if session:
        lines += ["", f"Verdicts, profiles and speed-up come from one side-by-side session (`{session['id']}`, "
                      f"{session['mode']}, {session['rounds']} rounds, {session['percentile']} with "
                      f"{session['confidence']:.0%} intervals)"
                  + (f"; latencies judged are corrected for drift by {session['drift']:.3f} (the reference "
                     f"{session['reference']['arch']} ran {session['reference']['start_ms']:.4f} ms at the run's "
                     f"start, {session['reference']['now_ms']:.4f} ms in the session)" if session.get("drift") else "")
                  + "."]
    if student:
        interval = report.get("speedup_p50_interval")
        lines += ["", f"Speed-up over the teacher (p50): {report.get('speedup_p50', 0):.1f}x"
                      + (f" ({interval[0]:.1f}-{interval[1]:.1f}x)" if interval else "")
                      + f"; {report.get('param_reduction', 0):.0f}x fewer parameters.", ""]
        lines += ["Student architecture: `best.pt` (state dict + ArchSpec); "
                  f"space `{student['arch']['space']}`, seed {student['arch']['seed']}.", ""]
    else:
        lines += ["", f"No feasible student: {report.get('failure', '')}", ""]
    if report.get("artifacts"):
        lines += ["## Artifacts", "", "| file | format | parity | p50 ms | recommended |", "|---|---|---|---|---|"]
        for art in report["artifacts"]:
            prof = art.get("profile")
            lines.append(f"| {art.get('file')} | {art.get('format')} | "
                         f"{'pass' if art.get('parity', {}).get('passed') else art.get('status', 'fail')} | "
                         f"{_ms(prof, 'p50')} | {'yes' if art.get('recommended') else ''} |")
        lines.append("")
    if report.get("artifacts_error"):
        lines += [f"Export failed: {report['artifacts_error']}", ""]
    lines += ["![Pareto plot](pareto.png)", ""]
    return "\n".join(lines)


def search_counts(search: dict[str, Any]) -> str:
    """What became of the proposals: trained, over the budget as measured, predicted over and never measured, repeats
    of a network trained already, failed.

    The latency model's skips are infeasible proposals too, but they cost no measurement: counted apart so that
    "over budget" means what a screening found.
    """
    skipped = (search.get("latency_model") or {}).get("skipped", 0)
    parts = [f"{search['feasible']} feasible and trained", f"{search['infeasible'] - skipped} over budget as measured"]
    if skipped:
        parts.append(f"{skipped} predicted over it and not measured")
    if search.get("repeats"):
        parts.append(f"{search['repeats']} fitted to a network trained already and not trained again")
    return ", ".join([*parts, f"{search['failed']} failed"])


def baseline_terms(baseline: BaselineReport) -> str:
    """One sentence on what the baseline was given: width choice, recipe, tuning and the knobs it chose."""
    width, recipe, tuning = baseline["width"], baseline["recipe"], baseline["tuning"]
    chosen = ("the widest" if width["within"] else "none within the budget; the narrowest") + \
        f" of {len(width['candidates'])} plain CNN widths measured side by side"
    best = tuning["best"]
    knobs = "no evaluation succeeded" if best is None else (
        f"lr {best['lr']:.3g}, " + (f"KD α {best['kd_alpha']:.2f} τ {best['kd_tau']:.1f}" if best["kd"] else "no KD")
        + f" (val {100 * tuning['val_accuracy']:.2f}%)")
    trainings = baseline.get("final_trainings") or []
    kept = next((i for i, t in enumerate(trainings) if t["kept"]), None)
    vals = ", ".join(f"{100 * t['val_accuracy']:.2f}%" for t in trainings if t["status"] == "ok")
    final = "" if len(trainings) < 2 or kept is None else (
        f"; {len(trainings)} of its knob sets trained for {recipe['epochs']} epochs, set {kept + 1} kept (val {vals})")
    return (f"Baseline {baseline['name']}: {chosen}; trained like the student (batch {recipe['batch_size']}, "
            f"{recipe['epochs']} epochs, seed {recipe['seed']}); lr and KD tuned by {tuning['strategy'].upper()} in "
            f"{tuning['evaluations']} evaluations at {tuning['fidelity']} epoch(s): {knobs}{final}.")


def verdict_text(entry: dict[str, Any]) -> str:
    """A verdict for a table cell: "yes 0.82 (0.80-0.84) of budget", "no ...", "borderline ...", or "-"."""
    within = entry.get("within_budget")
    if within is None:
        return "-"
    word = {True: "yes", False: "no"}.get(within, "borderline")
    ratio, interval = entry.get("budget_ratio"), entry.get("budget_ratio_interval")
    if ratio is None:
        return word
    text = f"{word}, {ratio:.2f}x budget" + (f" ({interval[0]:.2f}-{interval[1]:.2f})" if interval else "")
    return text + (" by point estimate" if entry.get("decided_by") == "point estimate" else "")


def model_rows(report: Report) -> list[tuple[str, dict[str, Any]]]:
    """(name, entry) for the teacher, the student and each trained baseline, as tables show them."""
    rows: list[tuple[str, dict[str, Any]]] = [("teacher", report["teacher"])]
    if report.get("student"):
        rows.append((student_label(report["student"]), report["student"]))
    for b in trained_baselines(report):
        budget = "" if b.get("at_same_budget", True) else " (over budget: not at the same budget)"
        rows.append((f"hand-designed: {b['name']}{budget}", b))
    return rows


def student_label(student: StudentReport) -> str:
    """The student's row name: searched, or the baseline's network when no searched finalist beat it."""
    return "student (the baseline's network)" if student.get("source") == "baseline" else "student (searched)"


def finalists_text(report: Report) -> str | None:
    """The final choice in one line (compressor.pipeline.finalists.choice_text), or None for older reports."""
    from compressor.pipeline.finalists import choice_text

    student = report.get("student") or {}
    return choice_text(student["finalists"], student["epochs"]) if student.get("finalists") else None


def trained_baselines(report: Report) -> list[BaselineReport]:
    """The hand-designed baselines that trained (runs written before baselines had a status all did)."""
    return [b for b in report.get("baselines", []) if b.get("status", "ok") == "ok"]


def failed_baselines(report: Report) -> list[BaselineReport]:
    return [b for b in report.get("baselines", []) if b.get("status", "ok") != "ok"]


def write_report(run_dir: Path, report: Report, records: list[TrialRecord]) -> None:
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", markdown_report(report))
    plot_pareto(records, report, run_dir / "pareto.png")
