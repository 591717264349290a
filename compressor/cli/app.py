"""The `compressor` command line.

Each sub-command lives in `compressor/cli/commands/<name>.py` and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
This module only assembles them and applies the conventions every command
shares: `--help`; a `UserError` (or a `TargetError`, a bad input by
definition) prints one line on stderr and exits 2, with the traceback only
under `--verbose`; `--json` where scripts read the output.

Command modules import heavy libraries (torch, onnxruntime) inside their
functions, so that `compressor agent` and `compressor targets` work on a
device where torch is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from compressor.errors import UserError

COMMANDS = (
    "targets",
    "profile",
    "space",
    "train_teacher",
    "distill",
    "compress",
    "export",
    "demo",
    "agent",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compressor",
        description=(
            "Compress a trained network for a target device: profile models with the runtime "
            "that will serve them, search a distilled student family under the target's "
            "budgets, and export parity-checked deployable artifacts."
        ),
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"compressor.cli.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from profilers import ProfileError, RemoteError
    from targets import TargetError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, TargetError, ProfileError) as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"compressor {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RemoteError as exc:
        # Not bad input: the device went away. Exit 1, still one line.
        if args.verbose:
            traceback.print_exc()
        print(f"compressor {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"compressor {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
