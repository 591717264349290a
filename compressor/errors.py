"""The one exception type a user sees as a one-line message (exit code 2)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: printed as one line on stderr, exit code 2, no traceback."""
