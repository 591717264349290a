"""The toolkit's one error family.

`UserError` is the base of every error caused by the user's input (a bad
flag, file, target, model or budget): the CLI prints it as one line on
stderr and exits 2, with no traceback. `TargetError` (here) and
`profilers.ProfileError` derive from it and from `ValueError`, so library
callers may catch either. It lives in `targets`, the bottom layer, because
imports point one way only (compressor -> profilers -> targets).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: one line naming the problem and the fix (exit code 2)."""


class TargetError(UserError, ValueError):
    """A target definition is invalid; the message names the key and the fix."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, cut to `limit` characters (its type name if empty).

    Third-party exceptions often carry a multi-line dump (an ONNX graph, a
    traceback from a worker); a one-line error or a trial's reason keeps the
    line that names the problem.
    """
    lines = str(exc).strip().splitlines()
    return (lines[0].strip() if lines else type(exc).__name__)[:limit]
