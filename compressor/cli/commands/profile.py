"""`compressor profile MODEL`: how fast and how big a model is on one or more targets.

MODEL is an .onnx file (checked with onnx.checker before anything runs it)
or an architecture reference: `torchvision:ARCH`, `nago[:key=value,...]`,
`zoo[:FAMILY[:key=value,...]]` or an ArchSpec JSON file, built with random
weights by `compressor.models.build.build_from_arch` (the one place that maps
these strings) and exported on the fly with
`compressor.models.onnx_export.export_onnx` to a temporary file; a `torch`
target measures the module itself. Each `--target` is profiled in turn with
`profilers.measure`; one target prints a table of its figures, several print
one column per target. `--json` prints the Profile contract (a list of
Profiles with several targets). Heavy libraries are imported inside `run`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.cli.common import add_target_args, parse_shape, positive_float, positive_int, resolve_target
from compressor.cli.console import err_console, fmt, print_json, print_table
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
        "  compressor profile model.onnx --target cpu --target cpu-1t --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="an .onnx file, or an architecture reference "
                        "(torchvision:resnet18, nago, zoo:FAMILY, an ArchSpec .json file)")
    add_target_args(parser, multiple=True)
    parser.add_argument(
        "--input-shape",
        metavar="NxCxHxW",
        help="first input's shape, batch included (default: the model's, dynamic batch from the target; "
        "1x3x224x224 for an architecture)",
    )
    parser.add_argument("--max-seconds", type=positive_float, help="time cap of the timed phase (overrides the target's)")
    parser.add_argument("--num-classes", type=positive_int, default=1000,
                        help="classes of an architecture's classifier (default 1000)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement (faster)")
    parser.add_argument("--json", action="store_true", help="print the Profile JSON (a list with several targets)")
    parser.set_defaults(func=run)


def _is_onnx_file(model: str) -> bool:
    # A missing .onnx file is still a file argument (its error says it does not exist); an ArchSpec .json is not.
    return model.endswith(".onnx") or (Path(model).is_file() and not model.endswith(".json"))


def run(args: argparse.Namespace) -> int:
    import profilers

    target_names = args.target or ["cpu-1t"]
    targets = [resolve_target(name, args) for name in target_names]
    input_shape = parse_shape(args.input_shape)
    with tempfile.TemporaryDirectory(prefix="compressor-profile-") as tmp:
        module = None
        if _is_onnx_file(args.model):
            model = Path(args.model)
            label = model.name
        else:
            from compressor.models.build import build_from_arch
            from compressor.models.onnx_export import export_onnx

            input_shape = input_shape or DEFAULT_ARCH_SHAPE
            if len(input_shape) != 4:
                raise UserError(f"--input-shape for an architecture must be NxCxHxW, got {args.input_shape!r}")
            try:
                module = build_from_arch(args.model, args.num_classes, input_shape[1:])
            except UserError as exc:
                if ":" in args.model:
                    raise
                raise UserError(f"{exc} (MODEL is an .onnx file or an architecture: torchvision:ARCH, nago, "
                                "zoo:FAMILY, an ArchSpec .json file)") from None
            model = Path(tmp) / "model.onnx"
            with err_console.status(f"exporting {args.model} to ONNX"):
                export_onnx(module, input_shape, model)
            label = args.model
        profiles = []
        for target in targets:
            with err_console.status(f"profiling {label} on {target.name} ({target.runtime})"):
                if target.runtime == "torch":
                    if module is None:
                        raise UserError(f"target {target.name!r} runs eager PyTorch; give MODEL as an architecture "
                                        "(torchvision:ARCH, nago, zoo:FAMILY)")
                    subject = module
                else:
                    subject = model
                profiles.append(
                    profilers.measure(
                        subject,
                        target,
                        input_shape=input_shape,
                        max_seconds=args.max_seconds,
                        memory=not args.no_memory,
                        label=label,
                    )
                )
    if args.json:
        print_json(profiles[0] if len(profiles) == 1 else profiles)
        return 0
    _print_profiles(profiles, targets)
    return 0


def _within(value: float | None, budget: float | None) -> str | None:
    if budget is None:
        return None
    if value is None:
        return "not measured"
    return "yes" if value <= budget else f"no ({fmt(value)} > {budget:g})"


def _print_profiles(profiles: list[Profile], targets) -> None:
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
