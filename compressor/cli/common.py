"""Argument helpers shared by several sub-commands."""

from __future__ import annotations

import argparse

from targets import Target, load_target

from compressor.errors import UserError


def add_target_args(parser: argparse.ArgumentParser, *, multiple: bool = False, default: str | None = "cpu-1t") -> None:
    parser.add_argument(
        "--target",
        action="append" if multiple else "store",
        default=None if multiple else default,
        metavar="NAME|FILE.toml",
        help=f"target preset name or TOML file (default: {default})"
        + ("; repeat for a side-by-side comparison" if multiple else ""),
    )
    parser.add_argument("--latency-ms", type=positive_float, help="latency budget (overrides the target's)")
    parser.add_argument("--memory-mb", type=positive_float, help="peak memory budget in MiB (overrides the target's)")
    parser.add_argument("--size-mb", type=positive_float, help="model size budget in MiB (overrides the target's)")


def resolve_target(name: str, args: argparse.Namespace) -> Target:
    """Load a target and apply the CLI's budget overrides."""
    return load_target(name).with_budgets(
        latency_ms=getattr(args, "latency_ms", None),
        memory_mb=getattr(args, "memory_mb", None),
        size_mb=getattr(args, "size_mb", None),
    )


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """'1x3x32x32' -> (1, 3, 32, 32)."""
    if text is None:
        return None
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--input-shape must look like 1x3x224x224, got {text!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise UserError(f"--input-shape dimensions must be positive integers, got {text!r}")
    return dims
