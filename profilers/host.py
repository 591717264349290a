"""Facts about the measuring host, and pinning the measuring thread to CPUs.

The environment block of a Profile is hostname-free (a Profile may be shared):
CPU model, physical/logical core counts, OS, Python, and what the backend adds
(runtime version, providers, threads, affinity).

`pinned_to(cpus)` restricts the *calling thread* (Linux `sched_setaffinity(0)`
acts on a thread) for the duration of a measurement and restores the previous
set afterwards. Threads a runtime starts inside the block (ONNX Runtime's
intra-op pool is created with the session) inherit the restriction, so
creating the session inside the block pins the whole measurement; a server
thread measuring one request at a time does not disturb the rest of its
process.
"""

from __future__ import annotations

import contextlib
import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import psutil

__all__ = ["cache_root", "cpu_flags", "cpu_model", "current_affinity", "environment", "physical_cores", "pinned_to"]


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (x86 `flags`, ARM `Features` of /proc/cpuinfo), e.g. avx512_vnni; None where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def current_affinity() -> list[int]:
    """The CPUs the calling thread may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(psutil.cpu_count() or 1))


def environment(**extra) -> dict:
    """Host facts plus backend-specific entries (runtime version, threads, ...)."""
    return {
        "cpu": cpu_model(),
        "cores_physical": physical_cores(),
        "cores_logical": psutil.cpu_count() or 1,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "affinity": current_affinity(),
        **extra,
    }


@contextlib.contextmanager
def pinned_to(cpus: tuple[int, ...] | list[int]) -> Iterator[None]:
    """Restrict the calling thread to `cpus` inside the block (no-op when empty or unsupported)."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Where the toolkit caches what is expensive to redo (teacher logits, demo teachers, TensorRT timing caches).

    `override` (a `--cache-dir`), else `$COMPRESSOR_CACHE`, else `~/.cache/compressor`.
    """
    return Path(override or os.environ.get("COMPRESSOR_CACHE") or Path.home() / ".cache" / "compressor")
