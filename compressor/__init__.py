"""compressor: deployment-oriented model compression with hardware profiling.

Packages (DESIGN.md): `targets` (what a device is), `profilers` (how a model
is measured there), and this package, the pipeline: student spaces
(`compressor.spaces`), data and teachers (`compressor.data.datasets`,
`compressor.models.teachers`), distillation (`compressor.train.distill`), the constrained
search (`compressor.search.loop`, `compressor.search.store`), the orchestration behind
`compressor compress` (`compressor.pipeline.compress`), export (`compressor.export`),
reports (`compressor.pipeline.report`) and the CLI (`compressor.cli`).

The Python API mirrors the CLI:

    import compressor
    result = compressor.compress("teacher.pt", data="digits", target="cpu-1t",
                                 latency_ms=0.15, trials=24, out="runs/digits")
    result.report["student"]["test_accuracy"]

Attributes are imported lazily so that `import compressor` does not pull in
torch (an edge device runs `compressor agent` without it).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "compress": ("compressor.pipeline.compress", "compress"),
    "DataOptions": ("compressor.pipeline.compress", "DataOptions"),
    "SearchConfig": ("compressor.search.config", "SearchConfig"),
    "CompressResult": ("compressor.search.loop", "CompressResult"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'compressor' has no attribute {name!r}")
