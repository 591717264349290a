"""Deployment targets: what a device is, as frozen, validated data.

A `Target` says which runtime will serve the model (ONNX Runtime with its
execution providers, TensorRT, eager PyTorch, or a remote agent on an edge
board), how that runtime is configured (threads, CPU affinity, precision,
batch size, workspace), the budgets a compressed model must meet there
(latency at a stated percentile, peak memory, file size) and how to measure
(warm-up, minimum runs and seconds, time cap).

The package is this facade over five modules:

* `targets.model`: `Target`, `Budgets` and `Measurement`, and the value
  tables (`KINDS`, `RUNTIMES`, `PROVIDERS`, ...). Each key of a target file
  is declared once, as a field with its type, default, meaning and
  constraints; the one rule that spans keys is on `Target` itself.
* `targets.schema`: the generic machinery over those declarations, which
  parses a table (types, choices, bounds, unknown and missing keys) and
  words what each key must be. Parsing stops at the first bad key and names
  it with the valid choices or the expected type (`TargetError`).
* `targets.io`: presets (TOML files in `targets/presets/`), a user's TOML
  file of the same shape (accepted wherever a preset name is:
  `load_target`), parsed tables (`target_from_dict`) and TOML text
  (`render`, `target_to_toml`).
* `targets.probe`: whether a target can run on this machine
  (`availability`), a cheap question answered without importing heavy
  runtimes.
* `targets.errors`: the toolkit's error family (`UserError`, `TargetError`).

This package imports nothing else of the project (imports point one way:
compressor -> profilers -> targets) and nothing heavy, so that it works on a
device where only onnxruntime is installed.
"""

from __future__ import annotations

from targets.errors import TargetError, UserError, first_line
from targets.io import PRESETS_DIR, list_targets, load_target, preset_path, render, target_from_dict, target_to_toml
from targets.model import (
    GRAPH_OPTIMIZATION_LEVELS,
    KINDS,
    LOCAL_RUNTIMES,
    PERCENTILES,
    PRECISIONS,
    PROVIDERS,
    RUNTIMES,
    Budgets,
    Measurement,
    Target,
)
from targets.probe import availability

__all__ = [
    "Budgets",
    "Measurement",
    "Target",
    "TargetError",
    "UserError",
    "first_line",
    "GRAPH_OPTIMIZATION_LEVELS",
    "KINDS",
    "LOCAL_RUNTIMES",
    "PERCENTILES",
    "PRECISIONS",
    "PRESETS_DIR",
    "PROVIDERS",
    "RUNTIMES",
    "availability",
    "list_targets",
    "load_target",
    "preset_path",
    "render",
    "target_from_dict",
    "target_to_toml",
]
