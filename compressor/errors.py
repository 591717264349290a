"""The error a user sees as one line with exit code 2: the toolkit's `UserError` (defined in `targets.errors`)."""

from __future__ import annotations

from targets.errors import UserError

__all__ = ["UserError"]
