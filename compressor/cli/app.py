"""The `compressor` command line.

Each sub-command lives in `compressor/cli/commands/<name>.py` and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
This module only assembles them and applies the conventions every command
shares:

- `--help` on every command;
- bad input of any kind — a flag (argparse), a target (`TargetError`), a
  model (`ProfileError`), anything else (`UserError`), all of one family
  rooted in `targets.errors.UserError` — is one line on stderr,
  `compressor CMD: error: ...`, plus at most a hint to `--help`, exit 2;
- a failure that is not the user's input but the environment's — the remote
  device went away (`RemoteError`), a run's database is unreadable
  (`sqlite3.DatabaseError`), the disk is full or a file cannot be written
  (`OSError`) — is also one line, exit 1;
- `--verbose` (before the command) adds the traceback: the one debug switch;
- `--json` where scripts read the output.

Command modules import heavy libraries (torch, onnxruntime) inside their
functions, so that `compressor agent` and `compressor targets` work on a
device where torch is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import sqlite3
import sys
import traceback

from targets.errors import UserError, first_line

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


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block is what `--help` is for."""

    def error(self, message: str):
        message = message.removeprefix("argument ")
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="compressor",
        description=(
            "Compress a trained network for a target device: profile models with the runtime "
            "that will serve them, search a distilled student family under the target's "
            "budgets, and export parity-checked deployable artifacts."
        ),
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"compressor.cli.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from profilers import RemoteError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        return _fail(args, exc, 2)
    except (RemoteError, sqlite3.DatabaseError, OSError) as exc:
        return _fail(args, exc, 1)
    except KeyboardInterrupt:
        print(f"compressor {args.command}: interrupted", file=sys.stderr)
        return 130


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    """One line on stderr (the traceback first under --verbose) and the exit code."""
    if args.verbose:
        traceback.print_exc()
    message = str(exc) if isinstance(exc, UserError) else _environment_message(exc)
    print(f"compressor {args.command}: error: {message}", file=sys.stderr)
    return code


def _environment_message(exc: BaseException) -> str:
    if isinstance(exc, sqlite3.DatabaseError):
        return f"a run database could not be read or written ({first_line(exc)}); it may be corrupt or not a run"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or first_line(exc)}: {exc.filename}"
    return first_line(exc)


if __name__ == "__main__":
    sys.exit(main())
