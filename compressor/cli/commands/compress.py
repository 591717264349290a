"""`compressor compress`: search a student family under the target's budgets, train, export, report."""

from __future__ import annotations

import argparse

from compressor.cli.common import add_target_args, positive_float, positive_int
from compressor.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from compressor.search.config import STRATEGIES, SearchConfig

    defaults = SearchConfig()
    parser = sub.add_parser(
        "compress",
        help="search the most accurate distilled student that meets a target's budgets",
        description="Constrained Bayesian search (hyperopt TPE, random, or TRADE's trust-region BO) over student "
        "families of a space, "
        "each candidate screened on the target before training, trained with knowledge distillation "
        "from the teacher under successive halving; the best family's best member is trained for "
        "--final-epochs, exported and reported in RUN_DIR (report.json, report.md, pareto.png, "
        "trials.sqlite, best.pt, artifacts/).",
    )
    from compressor.models.teachers import add_teacher_args

    add_teacher_args(parser)
    _add_data(parser)
    add_target_args(parser)
    parser.add_argument("--latency-x-ref", type=positive_float, metavar="K",
                        help="latency budget as K times the run's drift reference (a fixed tiny CNN, "
                        "zoo:plain:widths=8-16-32, measured at the run's start and beside every candidate), instead "
                        "of --latency-ms: the same budget on a fast or a slow machine, and at any moment of a "
                        "drifting one (onnxruntime targets)")
    parser.add_argument("--trials", type=positive_int, default=defaults.trials, help=f"proposals (families) to evaluate (default {defaults.trials})")
    parser.add_argument("--search-minutes", type=positive_float, metavar="M",
                        help="stop proposing after M minutes of search (summed over --resume runs); the families in "
                        "flight finish and the best are promoted; --trials still caps the families trained")
    parser.add_argument("--strategy", choices=STRATEGIES, default=defaults.strategy, help="tpe (hyperopt TPE), random, or trade (TRADE/TuRBO trust-region "
                        "BO, one trust region per zoo family and one for nago; best with --space zoo or all) (default tpe); every "
                        "strategy evaluates the space's defaults first (each zoo family's, nago's)")
    parser.add_argument("--space", default=defaults.space, help="student space: nago, zoo, or all (their union: nago or a zoo family, chosen by the search, "
                        f"with the budget-filling plain CNNs as warm starts) (default {defaults.space})")
    parser.add_argument("--family-size", type=positive_int, default=defaults.family_size, help=f"members sampled per proposal (default {defaults.family_size})")
    parser.add_argument("--fidelities", default=",".join(map(str, defaults.fidelities)), help="successive-halving epochs, e.g. 1,3,9 (default %(default)s)")
    parser.add_argument("--eta", type=positive_int, default=defaults.eta, help="successive-halving rate η (default 3)")
    parser.add_argument("--final-epochs", type=positive_int, default=defaults.final_epochs, help=f"epochs for the winner (default {defaults.final_epochs})")
    parser.add_argument("--tuning-trials", type=positive_int, metavar="N",
                        help="lr/KD evaluations (at the first fidelity) of the winner's tuning before its final "
                        "training, and of the baseline's (default: as many as the search trained families)")
    parser.add_argument("--finalists", type=positive_int, default=defaults.finalists, metavar="K",
                        help="the search's best K families, and each budget-filling plain CNN it started from, are "
                        "finished and trained for --final-epochs, and the best on validation is the student; with "
                        "--baseline the baseline competes too, so the student is never below it on validation "
                        f"(default {defaults.finalists})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="search seed (default 0)")
    parser.add_argument("--trial-timeout", type=positive_float, metavar="S", help="seconds after which a trial fails")
    parser.add_argument("--profile-seconds", type=positive_float, default=defaults.profile_seconds,
                        help="seconds of each screening measurement (default %(default)s); a first look of a quarter "
                        "of it decides unless the verdict is borderline")
    parser.add_argument("--fill-fraction", type=_fill_fraction, default=defaults.fill_fraction, metavar="F|off",
                        help="before screening, size each proposal's width so its family is predicted at this share of "
                        "the latency budget (a latency model calibrated on this machine's screenings); off screens "
                        "proposals as asked (default %(default)s)")
    parser.add_argument("--formats", help="export formats, e.g. onnx,ort,int8 (default: by target)")
    parser.add_argument("--no-export", action="store_true", help="skip the export bundle")
    parser.add_argument("--baseline", action="store_true", help="also train a hand-designed student on equal terms: the widest plain CNN within the budget, lr/KD tuned "
                        "as the winner is (--tuning-trials), trained with the student's recipe, judged side by side "
                        "with the student; it is a finalist, so when no searched family beats it on validation the "
                        "student is the baseline's network")
    parser.add_argument("--workers", type=positive_int, default=defaults.workers, metavar="N",
                        help="trainings run at once on Ray (a local instance; needs pip install 'compressor[ray]'); "
                        "every measurement still runs one at a time on the target's reserved core (default 1: in "
                        "process, no Ray)")
    parser.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (e.g. 10.0.0.5:6379) instead "
                        "of starting a local instance; --workers trainings are kept in flight; sends this machine's Ray "
                        "token (~/.ray/auth_token or RAY_AUTH_TOKEN) when RAY_AUTH_MODE is unset")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR up to --trials "
                        "(and --search-minutes)")
    parser.add_argument("--cache-dir", help="teacher-logits cache (default $COMPRESSOR_CACHE or ~/.cache/compressor)")
    parser.add_argument("--quiet", action="store_true", help="no live progress display")
    parser.add_argument("--json", action="store_true", help="print report.json on stdout")
    parser.set_defaults(func=run)


def _add_data(parser: argparse.ArgumentParser) -> None:
    from compressor.data.datasets import add_data_args

    add_data_args(parser)


def _fill_fraction(text: str) -> float | None:
    if text == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share of the budget like 0.8, or off; got {text!r}") from None


def parse_fidelities(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--fidelities must be comma-separated epochs like 1,3,9, got {text!r}") from None


def data_options_from_args(args: argparse.Namespace):
    from compressor.pipeline.compress import DataOptions

    return DataOptions(image_size=args.image_size, channels=args.channels, seed=args.split_seed,
                       data_root=args.data_root, download=args.download, label_fraction=args.label_fraction)


def run(args: argparse.Namespace) -> int:
    from compressor.models.teachers import min_accuracy_from_args
    from compressor.pipeline.compress import compress

    result = compress(
        args.teacher, out=args.out, data=args.data, target=args.target, teacher_weights=args.teacher_weights,
        teacher_preprocess=args.teacher_preprocess, teacher_image_size=args.teacher_image_size,
        teacher_min_accuracy=min_accuracy_from_args(args),
        latency_ms=args.latency_ms, latency_x_reference=args.latency_x_ref, memory_mb=args.memory_mb,
        size_mb=args.size_mb, data_options=data_options_from_args(args), resume=args.resume, quiet=args.quiet or args.json,
        cache_dir=args.cache_dir, baseline=args.baseline, trials=args.trials,
        search_minutes=args.search_minutes, strategy=args.strategy, space=args.space,
        family_size=args.family_size, fidelities=parse_fidelities(args.fidelities), eta=args.eta,
        final_epochs=args.final_epochs, tuning_trials=args.tuning_trials, finalists=args.finalists, seed=args.seed, trial_timeout_s=args.trial_timeout,
        profile_seconds=args.profile_seconds, fill_fraction=args.fill_fraction, export=not args.no_export,
        workers=args.workers, ray_address=args.ray_address,
        export_formats=tuple(args.formats.split(",")) if args.formats else None,
    )
    if args.json:
        from compressor.cli.console import print_json

        print_json(result.report)
    else:
        print_summary(result.report, result.run_dir)
    return 0


def print_summary(report: dict, run_dir) -> None:
    """Teacher vs student (and baselines) side by side with their budget verdicts, then where the files are."""
    from compressor.cli.console import console, print_table
    from compressor.pipeline.report import (TEACHER_MEETS_BUDGET, baseline_terms, failed_baselines, finalists_text,
                                            model_rows, search_counts, trained_baselines, verdict_text)

    if report.get("teacher_meets_budget"):
        console.print(f"[bold]{TEACHER_MEETS_BUDGET}[/]")

    percentile = report["budgets"].get("latency_percentile", "p50")
    rows = model_rows(report)
    teacher_p50 = report["teacher"]["profile"]["latency_ms"]["p50"]
    recommended = next((a for a in report.get("artifacts", []) if a.get("recommended")), None)
    budgets = report["budgets"]
    relative = (f" ({budgets['latency_x_reference']:g}x the drift reference)"
                if budgets.get("latency_x_reference") else "")
    described = [f"latency {budgets['latency_ms']:.3g} ms {percentile}{relative}" if budgets.get("latency_ms") else "",
                 f"peak memory {budgets['memory_mb']:.3g} MiB" if budgets.get("memory_mb") else "",
                 f"size {budgets['size_mb']:.3g} MiB" if budgets.get("size_mb") else ""]
    print_table(
        f"{report['target']['name']}: budgets " + (", ".join(d for d in described if d) or "none"),
        ["model", "test acc %", "params", "MACs", "p50 ms", "p90 ms", "peak mem MiB", "size MiB", "speed-up",
         "within budget"],
        [
            (
                name,
                None if e.get("test_accuracy") is None else round(100 * e["test_accuracy"], 2),
                e.get("params"),
                e.get("macs"),
                e["profile"]["latency_ms"]["p50"],
                e["profile"]["latency_ms"]["p90"],
                e["profile"].get("peak_memory_mb"),
                e["profile"]["model_size_mb"],
                round(teacher_p50 / e["profile"]["latency_ms"]["p50"], 1),
                verdict_text(e),
            )
            for name, e in rows
        ],
    )
    choice = finalists_text(report)
    if choice:
        console.print(choice, markup=False)
    for baseline in report.get("baselines", []):
        if baseline.get("tuning"):
            console.print(baseline_terms(baseline), markup=False)
    for failed in failed_baselines(report):
        console.print(f"hand-designed baseline {failed['name']} failed: {failed['reason']}")
    for over in trained_baselines(report):
        if over.get("at_same_budget") is False:
            console.print(f"hand-designed baseline {over['name']} is not within the budget ({verdict_text(over)}): "
                          "it is not a baseline at the same budget")
    session = report.get("final_session")
    if session:
        interval = report.get("speedup_p50_interval") or [0, 0]
        drift = f", drift-corrected by {session['drift']:.3f}" if session.get("drift") else ""
        console.print(f"verdicts from one side-by-side session ({session['mode']}, {session['rounds']} rounds, "
                      f"{session['confidence']:.0%} intervals{drift}); speed-up over the teacher "
                      f"{report['speedup_p50']:.1f}x ({interval[0]:.1f}-{interval[1]:.1f}x)")
    meaning = report["teacher"]["profile"].get("peak_memory_meaning")
    if meaning:
        console.print(f"peak memory: {meaning}")
    search = report["search"]
    console.print(
        f"search: {search['strategy']} over {search['space']}, {search['trials']} proposals "
        f"({search_counts(search)}) in {search['seconds']:.0f} s"
    )
    if recommended:
        console.print(f"recommended artifact: {run_dir}/artifacts/{recommended['file']}")
    console.print(f"report: {run_dir}/report.md   plot: {run_dir}/pareto.png   checkpoint: {run_dir}/best.pt")
