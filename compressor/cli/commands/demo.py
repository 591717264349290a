"""`compressor demo`: the main job on the bundled digits data (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from compressor.cli.common import positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from compressor.pipeline.demo import DemoConfig

    d = DemoConfig()
    parser = sub.add_parser(
        "demo",
        help="train (or reuse) a ResNet-18 teacher on digits and compress it for one CPU core",
        description="The main job end to end on the bundled digits data: a ResNet-18 teacher (cached after the "
        "first run), its profile on the target, a tight latency budget (1/20 of its p50, but at least 2.5x the "
        "space's smallest network so that it stays reachable on any CPU) and a memory budget "
        "(1/2 of its peak), the search, the final student, the export bundle, and a side-by-side table of "
        "teacher, searched student and the best hand-designed student within the budget, judged in one side-by-side session.",
    )
    parser.add_argument("--out", type=Path, default=d.out, help="run directory (default %(default)s)")
    parser.add_argument("--target", default=d.target, help="target preset or TOML file (default %(default)s)")
    parser.add_argument("--trials", type=positive_int, default=d.trials, help="search proposals (default %(default)s)")
    parser.add_argument("--family-size", type=positive_int, default=d.family_size, help="members per proposal (default %(default)s)")
    parser.add_argument("--fidelities", default=",".join(map(str, d.fidelities)), help="successive-halving epochs (default %(default)s)")
    parser.add_argument("--teacher-epochs", type=positive_int, default=d.teacher_epochs, help="teacher training epochs (default %(default)s)")
    parser.add_argument("--final-epochs", type=positive_int, default=d.final_epochs, help="epochs for the winner and the baseline (default %(default)s)")
    parser.add_argument("--image-size", type=positive_int, default=d.image_size, help="digits upsampled to this size (default %(default)s)")
    parser.add_argument("--latency-fraction", type=positive_float, default=d.latency_fraction, help="latency budget as a fraction of the teacher's p50 (default 1/20)")
    parser.add_argument("--floor-multiple", type=positive_float, default=d.floor_multiple, help="the latency budget is at least this times the smallest network's p50 (default %(default)s)")
    parser.add_argument("--profile-seconds", type=positive_float, default=d.profile_seconds,
                        help="seconds of each model's measurement, as in compress (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed (default 0)")
    parser.add_argument("--cache-dir", type=Path, help="cache for the teacher and its logits (default $COMPRESSOR_CACHE or ~/.cache/compressor)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compressor.cli.commands.compress import parse_fidelities, print_summary
    from compressor.cli.console import console, print_json, print_table
    from compressor.pipeline.demo import DemoConfig, run_demo

    report = run_demo(DemoConfig(
        out=args.out, target=args.target, image_size=args.image_size, teacher_epochs=args.teacher_epochs,
        trials=args.trials, family_size=args.family_size, fidelities=parse_fidelities(args.fidelities),
        final_epochs=args.final_epochs, latency_fraction=args.latency_fraction,
        floor_multiple=args.floor_multiple, profile_seconds=args.profile_seconds, seed=args.seed,
        cache_dir=args.cache_dir, quiet=args.quiet or args.json,
    ))
    if args.json:
        print_json(report)
        return 0
    print_summary(report, args.out)
    print_table("goals", ["goal", "measured", "met"], [(g["goal"], g["value"], g["met"]) for g in report["goals"]])
    console.print(f"demo finished in {report['demo']['seconds']:.0f} s")
    return 0
