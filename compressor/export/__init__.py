"""The deployable export bundle: every artifact parity-gated, profiled, one recommended.

`export_bundle` turns a trained PyTorch model into the files a user ships:

    model.onnx            FP32 ONNX (input `input`, output `logits`, dynamic batch);
                          always built, every other format derives from it
    model.ort.onnx        ONNX Runtime's offline-optimised graph for the target
    model.int8.onnx       static QDQ INT8, calibrated on a sample of training inputs
    model.fp16.onnx       FP16 weights/activations, float32 inputs and outputs
    model.<prec>.engine   a TensorRT 10 engine (FP16, or INT8 from the QDQ model)
    artifacts.json        per artifact: file, format, sha256, size, parity, profile, recommended
    DEPLOY.md             how to load the recommended artifact
    export.log            what the third-party libraries logged while building

How the parts fit, in the order an export runs:

- `plan`: which formats (the target's defaults or the user's), their file
  names and `ExportConfig`. An artifact that cannot be built here (no
  TensorRT or GPU) is recorded as skipped with the reason when it came from
  the target's default formats, and refused up front when asked for by name.
- `bundle`: for each artifact, in order: build (`builders`; TensorRT engines
  with the one engine builder, `profilers.backends.trt`), then the parity
  gate against the PyTorch model on the test split (`parity`), then, if it
  passed, a profile of that same file on the target with the target's
  runtime (`profilers`). Everything is written in a temporary sibling
  directory renamed onto `out_dir` only when the bundle is complete: a crash
  leaves either the old bundle or none, never a half-written one that looks
  finished, and the leftovers of a killed export are removed by the next one.
- `recommend`: the artifact with the lowest latency (at the target's budget
  percentile) among those that passed and were profiled, within the target's
  budgets if any is; an INT8/FP16 artifact slower than the best FP32 one on
  this target is reported as such and never recommended.
- `deploy`: DEPLOY.md, a runnable snippet for the recommended artifact.
"""

from __future__ import annotations

from compressor.export.bundle import export_bundle
from compressor.export.plan import FORMATS, ExportConfig, default_formats, plan_formats
from compressor.export.recommend import recommend

__all__ = ["FORMATS", "ExportConfig", "default_formats", "export_bundle", "recommend", "plan_formats"]
