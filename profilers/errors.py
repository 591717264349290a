"""Errors the profilers raise: bad input (ProfileError) versus a failed measurement."""

from __future__ import annotations

from targets.errors import UserError


class ProfileError(UserError, ValueError):
    """Bad input to a profiler (a missing or invalid model, a wrong input shape, a
    runtime this machine cannot run): one line naming the problem and the fix."""


class RemoteError(RuntimeError):
    """The remote device could not deliver a measurement (unreachable, busy, or it failed there)."""
