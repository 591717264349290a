"""`compressor targets [show NAME]`: list presets and whether each runs here."""

from __future__ import annotations

import argparse
import sys

from targets import availability, list_targets, load_target, target_to_toml

from compressor.cli.console import print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "targets",
        help="list hardware target presets and whether each can run here",
        description="List the built-in targets with their runtime, budgets and whether this "
        "machine can measure on them; `targets show NAME` prints a preset's TOML to copy and edit.",
    )
    parser.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    parser.add_argument("name", nargs="?", help="preset name or TOML file (with `show`)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            from compressor.errors import UserError

            raise UserError("`targets show` needs a NAME, e.g. `compressor targets show cpu-1t`")
        target = load_target(args.name)
        if args.json:
            print_json(target.to_dict())
        else:
            sys.stdout.write(target_to_toml(target))
        return 0
    rows = []
    for target in list_targets():
        ok, why = availability(target)
        rows.append((target, ok, why))
    if args.json:
        print_json([{**t.to_dict(), "available": ok, "unavailable_reason": why} for t, ok, why in rows])
        return 0
    print_table(
        None,
        ["target", "kind", "runtime", "precision", "threads", "budgets", "runs here", "why not"],
        [
            (
                t.name,
                t.kind,
                t.runtime if t.runtime != "remote" else f"remote/{t.remote_runtime}",
                t.precision,
                t.threads if t.threads else "all cores",
                _budgets(t),
                ok,
                why,
            )
            for t, ok, why in rows
        ],
    )
    return 0


def _budgets(target) -> str:
    b = target.budgets
    parts = []
    if b.latency_ms:
        parts.append(f"{b.latency_ms:g} ms {b.latency_percentile}")
    if b.memory_mb:
        parts.append(f"{b.memory_mb:g} MiB")
    if b.size_mb:
        parts.append(f"{b.size_mb:g} MiB file")
    return ", ".join(parts) or "none"
