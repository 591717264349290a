"""Whether a target can be measured on this machine, and if not, why.

A cheap question asked for every preset in a listing, so it imports no heavy
runtime: installed packages are found with `importlib.util.find_spec`, a CUDA
GPU by the NVIDIA driver's traces. Only an ONNX Runtime target imports
onnxruntime, the one runtime this package may assume, to list its execution
providers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from targets.model import Target

def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _cuda_present() -> bool:
    # Cheap and import-free: the NVIDIA driver exposes this file when a GPU is usable.
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def availability(target: Target) -> tuple[bool, str]:
    """Whether this machine can measure on `target`, and why not.

    Returns:
        (True, "") or (False, a one-line reason such as "tensorrt not installed").
    """
    if target.runtime == "remote":
        if "REPLACE-WITH-DEVICE" in (target.url or ""):
            return False, "template: set url to your device's agent"
        if not os.environ.get(target.token_env or ""):
            return False, f"set ${target.token_env} to the agent's token"
        return True, ""
    if target.runtime == "tensorrt":
        if not _has_module("tensorrt"):
            return False, "tensorrt not installed (pip install 'compressor[tensorrt]')"
        if not _cuda_present():
            return False, "no CUDA GPU"
        return True, ""
    if target.runtime == "torch":
        if not _has_module("torch"):
            return False, "torch not installed"
        if "CUDAExecutionProvider" in target.providers and not _cuda_present():
            return False, "no CUDA GPU"
        return True, ""
    if not _has_module("onnxruntime"):
        return False, "onnxruntime not installed"
    import onnxruntime

    have = set(onnxruntime.get_available_providers())
    missing = [p for p in target.providers if p not in have]
    if missing:
        return False, f"{missing[0]} not available in this onnxruntime build"
    if target.cpu_affinity and hasattr(os, "sched_getaffinity"):
        allowed = os.sched_getaffinity(0)
        bad = [c for c in target.cpu_affinity if c not in allowed]
        if bad:
            return False, f"cpu {bad[0]} not available (allowed: {sorted(allowed)})"
    return True, ""
