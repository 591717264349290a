"""The device fingerprint: what the agent's machine is, sent with every answer.

`GET /v1/health` returns it and every Profile the agent measures carries it
in `environment.device`, so a number can always be traced to the board it
was measured on. Hostname-free like a Profile's environment
(`profilers.host`), since it travels inside every Profile.
"""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from profilers import host


def _board() -> str | None:
    # Raspberry Pi and Jetson boards name themselves in the device tree.
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ") or None
    except OSError:
        return None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_fingerprint() -> dict[str, Any]:
    """Board, CPU, cores, memory, OS and the runtimes with versions.

    Runtime versions come from package metadata, so nothing heavy (torch,
    tensorrt) is imported; onnxruntime is, to list its execution providers.
    """
    import psutil

    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    except ImportError:
        providers = []
    return {
        "board": _board(),
        "cpu": host.cpu_model(),
        "machine": platform.machine(),
        "cores_physical": host.physical_cores(),
        "cores_logical": psutil.cpu_count() or 1,
        "memory_mb": round(psutil.virtual_memory().total / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "runtimes": {
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
            "onnxruntime_providers": providers,
            "tensorrt": _version("tensorrt"),
            "torch": _version("torch"),
            "onnx": _version("onnx"),
        },
    }
