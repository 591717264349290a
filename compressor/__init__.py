"""compressor: deployment-oriented model compression with hardware profiling.

Three packages, imports pointing one way (compressor -> profilers ->
targets): `targets` (what a device is), `profilers` (how a model is measured
there), and this one, the pipeline. Its subpackages, in the order a run uses
them:

- `models`: networks as files (arch references, checkpoints, ONNX export,
  teachers) and `on_target`, the one measure-and-check step;
- `data`: datasets in memory with seeded splits;
- `spaces`: the student families (`nago`, `zoo`);
- `train`: the distillation loss, the teacher-logits cache, the trainer;
- `search`: the constrained search (config, strategies, schedule, evaluator,
  trial store, analysis);
- `pipeline`: the jobs end to end (`compress`, the hand-designed baseline,
  reports, the demo);
- `export`: the parity-checked, profiled deployment bundle;
- `cli`: the `compressor` command.

docs/design.md walks through the data flow and the contracts.

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
    "CompressResult": ("compressor.pipeline.compress", "CompressResult"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'compressor' has no attribute {name!r}")
