"""`compressor profile MODEL [MODEL ...]`: how fast and how big models are on one or more targets.

MODEL is an .onnx file (checked with onnx.checker before anything runs it)
or an architecture reference: `torchvision:ARCH`, `nago[:key=value,...]`,
`zoo[:FAMILY[:key=value,...]]` or an ArchSpec JSON file, built with random
weights by `compressor.models.build.build_from_arch` (the one place that maps
these strings) and exported on the fly with
`compressor.models.onnx_export.export_onnx` to a temporary file; a `torch`
target measures the module itself. Each `--target` is profiled in turn with
`profilers.measure`; one target prints a table of its figures, several print
one column per target. `--json` prints the Profile contract (a list of
Profiles with several targets).

Several MODELs are measured side by side on one target
(`profilers.compare`: interleaved rounds in one process where the runtime
allows it), one column per model, with each model's ratio to the reference
(`--reference`, the first model by default) and its bootstrap confidence
interval; `--json` prints the comparison (`Comparison.to_dict`). Peak memory
is shown with what it means on the runtime (`peak_memory_meaning`). Heavy
libraries are imported inside `run`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from compressor.cli.common import add_target_args, parse_shape, positive_float, positive_int, resolve_target
from compressor.cli.console import console, err_console, fmt, print_json, print_table
from compressor.errors import UserError

if TYPE_CHECKING:
    from profilers import Profile

DEFAULT_ARCH_SHAPE = (1, 3, 224, 224)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "profile",
        help="measure a model's latency, memory, size, parameters and MACs on targets",
        description="Profile MODEL (an .onnx file or an architecture: torchvision:ARCH, nago, zoo:FAMILY, an "
        "ArchSpec JSON file) with the runtime of each target: "
        "latency percentiles over adaptive timing, throughput, peak memory (what the model adds to a "
        "fresh process), file size, parameters and MACs.",
        epilog="examples:\n  compressor profile torchvision:resnet18 --target cpu-1t\n"
        "  compressor profile model.onnx --target cpu --target cpu-1t --json\n"
        "  compressor profile student.onnx teacher.onnx --target cpu-1t --reference 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", nargs="+", help="an .onnx file, or an architecture reference "
                        "(torchvision:resnet18, nago, zoo:FAMILY, an ArchSpec .json file); several are measured "
                        "side by side on one target")
    parser.add_argument("--reference", type=positive_int, default=1, metavar="N",
                        help="with several MODELs: the ratios divide by the Nth model's latency (default 1)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="with several MODELs: coverage of the intervals (default 0.95)")
    add_target_args(parser, multiple=True)
    parser.add_argument(
        "--input-shape",
        metavar="NxCxHxW",
        help="first input's shape, batch included (default: the model's, dynamic batch from the target; "
        "1x3x224x224 for an architecture)",
    )
    parser.add_argument("--max-seconds", type=positive_float, help="time cap of the timed phase (overrides the "
                        "target's); with several MODELs, the timed seconds of all of them together")
    parser.add_argument("--num-classes", type=positive_int, default=1000,
                        help="classes of an architecture's classifier (default 1000)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement (faster)")
    parser.add_argument("--json", action="store_true", help="print the Profile JSON (a list with several targets)")
    parser.set_defaults(func=run)


def _is_onnx_file(model: str) -> bool:
    # A missing .onnx file is still a file argument (its error says it does not exist); an ArchSpec .json is not.
    return model.endswith(".onnx") or (Path(model).is_file() and not model.endswith(".json"))


def run(args: argparse.Namespace) -> int:
    target_names = args.target or ["cpu-1t"]
    targets = [resolve_target(name, args) for name in target_names]
    input_shape = parse_shape(args.input_shape)
    if len(args.model) > 1:
        if len(targets) > 1:
            raise UserError("several MODELs are compared on one --target; give one target (or one MODEL)")
        if not 1 <= args.reference <= len(args.model):
            raise UserError(f"--reference {args.reference} is not one of the {len(args.model)} MODELs (1-{len(args.model)})")
        if not 0 < args.confidence < 1:
            raise UserError(f"--confidence must be between 0 and 1, got {args.confidence}")
    with tempfile.TemporaryDirectory(prefix="compressor-profile-") as tmp:
        subjects = [_subject(model, input_shape, Path(tmp) / f"model{i}.onnx", args)
                    for i, model in enumerate(args.model)]
        if len(subjects) > 1:
            return _compare(subjects, targets[0], input_shape, args)
        profiles = [_profile_one(subjects[0], target, input_shape, args) for target in targets]
    if args.json:
        print_json(profiles[0] if len(profiles) == 1 else profiles)
        return 0
    _print_profiles(profiles, targets)
    return 0


class _Subject(NamedTuple):
    path: Path  # the ONNX file
    label: str
    module: object  # the torch module of an architecture (for a torch target), else None
    shape: tuple[int, ...] | None  # the input shape it was exported at


def _subject(model_arg: str, input_shape: tuple[int, ...] | None, path: Path, args) -> _Subject:
    """MODEL as an ONNX file: as given, or an architecture exported to `path`."""
    if _is_onnx_file(model_arg):
        return _Subject(Path(model_arg), Path(model_arg).name, None, input_shape)
    from compressor.models.build import build_from_arch
    from compressor.models.onnx_export import export_onnx

    shape = input_shape or DEFAULT_ARCH_SHAPE
    if len(shape) != 4:
        raise UserError(f"--input-shape for an architecture must be NxCxHxW, got {args.input_shape!r}")
    try:
        module = build_from_arch(model_arg, args.num_classes, shape[1:])
    except UserError as exc:
        if ":" in model_arg:
            raise
        raise UserError(f"{exc} (MODEL is an .onnx file or an architecture: torchvision:ARCH, nago, "
                        "zoo:FAMILY, an ArchSpec .json file)") from None
    with err_console.status(f"exporting {model_arg} to ONNX"):
        export_onnx(module, shape, path)
    return _Subject(path, model_arg, module, shape)


def _runnable(subject: _Subject, target):
    if target.runtime != "torch":
        return subject.path
    if subject.module is None:
        raise UserError(f"target {target.name!r} runs eager PyTorch; give MODEL as an architecture "
                        "(torchvision:ARCH, nago, zoo:FAMILY)")
    return subject.module


def _profile_one(subject: _Subject, target, input_shape, args) -> Profile:
    import profilers

    with err_console.status(f"profiling {subject.label} on {target.name} ({target.runtime})"):
        return profilers.measure(_runnable(subject, target), target, input_shape=subject.shape or input_shape,
                                 max_seconds=args.max_seconds, memory=not args.no_memory, label=subject.label)


def _compare(subjects: list[_Subject], target, input_shape, args) -> int:
    import profilers
    from profilers.side_by_side import statistic

    reference = args.reference - 1
    with err_console.status(f"profiling {len(subjects)} models side by side on {target.name} ({target.runtime})"):
        result = profilers.compare([_runnable(s, target) for s in subjects], target, reference=reference,
                                   labels=[s.label for s in subjects], input_shape=input_shape,
                                   seconds=args.max_seconds, memory=not args.no_memory,
                                   confidence=args.confidence)
    if args.json:
        print_json(result.to_dict())
        return 0
    ref_label = result.labels[reference]

    def ratio(i: int) -> str:
        found = result.ratios[i]
        return f"{found.value:.3f} ({found.low:.3f}-{found.high:.3f})"

    rows = _profile_rows(meaning_row=False) + [
        (f"p50 / {ref_label}, {result.confidence:.0%} interval", lambda p, i: ratio(i)),
        (f"peak memory / {ref_label}", lambda p, i: result.memory_ratios[i]),
    ]
    print_table(f"side by side on {target.name} ({result.mode}, {result.rounds} rounds, "
                f"{result.seconds:.1f} s timed)", ["model", *result.labels],
                [(name, *[get(p, i) for i, p in enumerate(result.profiles)]) for name, get in rows])
    meaning = result.profiles[0].get("peak_memory_meaning")
    console.print(f"peak memory: {meaning or f'not measured by the {target.runtime} runtime'}")
    console.print("intervals: percentile bootstrap over rounds"
                  + (" (paired: the same rounds for both models)" if result.mode == "interleaved" else ""))
    console.print(f"ratios: {statistic(result.percentile)}; p50 ms: of all runs")
    for warning in result.warnings:
        err_console.print(f"[yellow]warning[/yellow]: {warning}")
    for profile in result.profiles:
        for warning in profile["warnings"]:
            err_console.print(f"[yellow]warning[/yellow] ({profile['model']}): {warning}")
    return 0


def _profile_rows(*, meaning_row: bool) -> list:
    """Table rows of a Profile: (name, get(profile, column))."""
    rows = [
        ("runtime", lambda p, t: p["runtime"]),
        ("input shape", lambda p, t: "x".join(map(str, p["input_shape"]))),
        ("p50 ms", lambda p, t: p["latency_ms"]["p50"]),
        ("p90 ms", lambda p, t: p["latency_ms"]["p90"]),
        ("p99 ms", lambda p, t: p["latency_ms"]["p99"]),
        ("cv", lambda p, t: f"{p['latency_ms']['cv']:.1%}"),
        ("runs (n)", lambda p, t: p["latency_ms"]["n"]),
        ("throughput /s", lambda p, t: p["throughput_per_s"]),
        ("peak memory MiB", lambda p, t: p["peak_memory_mb"]),
        ("size MiB", lambda p, t: p["model_size_mb"]),
        ("params", lambda p, t: p["params"]),
        ("MACs", lambda p, t: p["macs"]),
    ]
    if meaning_row:
        rows.insert(9, ("peak memory means", lambda p, t: p.get("peak_memory_meaning") or "not measured"))
    return rows


def _within(value: float | None, budget: float | None) -> str | None:
    if budget is None:
        return None
    if value is None:
        return "not measured"
    return "yes" if value <= budget else f"no ({fmt(value)} > {budget:g})"


def _print_profiles(profiles: list[Profile], targets) -> None:
    rows = _profile_rows(meaning_row=True)
    if any(t.budgets.any() for t in targets):
        rows += [
            ("within latency budget", lambda p, t: _within(p["latency_ms"][t.budgets.latency_percentile], t.budgets.latency_ms)),
            ("within memory budget", lambda p, t: _within(p["peak_memory_mb"], t.budgets.memory_mb)),
            ("within size budget", lambda p, t: _within(p["model_size_mb"], t.budgets.size_mb)),
        ]
    print_table(
        f"profile of {profiles[0]['model']}",
        ["target", *[p["target"] for p in profiles]],
        [(name, *[get(p, t) for p, t in zip(profiles, targets)]) for name, get in rows],
    )
    for profile in profiles:
        for warning in profile["warnings"]:
            err_console.print(f"[yellow]warning[/yellow] ({profile['target']}): {warning}")
