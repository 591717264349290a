"""The deployable export bundle: every artifact parity-gated, profiled, one recommended.

`export_bundle` turns a trained PyTorch model into the files a user ships:

    model.onnx            FP32 ONNX (input `input`, output `logits`, dynamic batch);
                          always built, every other format derives from it
    model.ort.onnx        ONNX Runtime's offline-optimised graph for the target
    model.int8.onnx       static QDQ INT8: the kept one of up to 4 recipes chosen by the CPU's
                          features, calibrated on a sample of training inputs
    model.fp16.onnx       FP16 weights/activations, float32 inputs and outputs
    model.<prec>.engine   a TensorRT 10 engine (FP16, or INT8 from the QDQ model)
    artifacts.json        per artifact: file, format, sha256, size, parity (validation), test_parity
                          (reported), profile, latency and ratio_to_fp32 (one session), budget, recommended
    DEPLOY.md             how to load the recommended artifact
    export.log            what the third-party libraries logged while building

How the parts fit, in the order an export runs:

- `plan`: which formats (the target's defaults or the user's), their file
  names and `ExportConfig`. An artifact that cannot be built here (no
  TensorRT or GPU) is recorded as skipped with the reason when it came from
  the target's default formats, and refused up front when asked for by name.
- `bundle`: for each artifact, in order: build (`builders`; TensorRT engines
  with the one engine builder, `profilers.backends.trt`), then the parity
  gate against the PyTorch model on the VALIDATION split (`parity`; the test
  split's figures are computed and reported as `test_parity`, never used to
  decide). INT8 builds and gates every recipe of `int8.recipe_set` (by the
  target CPU's features). Then ONE side-by-side session
  (`compressor.models.on_target.check_side_by_side`, FP32 ONNX first) profiles
  every artifact that passed and every passing INT8 recipe together, so each
  artifact carries its Profile, latency interval, ratio to each FP32 artifact
  with its interval, and the budget verdict of `on_target`; `int8.select_recipe`
  keeps one recipe on those figures. Runtimes that cannot interleave
  (TensorRT, remote) are measured one after another, and the bundle says so.
  Everything is written in a temporary sibling directory renamed onto
  `out_dir` only when the bundle is complete: a crash leaves either the old
  bundle or none, never a half-written one that looks finished, and the
  leftovers of a killed export are removed by the next one.
- `recommend`: the artifact with the lowest latency (at the target's budget
  percentile, from the session) among those that passed and were profiled,
  within the target's budgets if any is; an INT8/FP16 artifact measurably
  slower than the best FP32 one (its ratio's lower bound above 1) is reported
  as such and never recommended; and a simpler FP32 artifact (`model.onnx`,
  then `model.ort.onnx`) that the fastest does not lead by `SPEED_MARGIN`
  (3%) beyond its ratio's interval is recommended in its place.
- `deploy`: DEPLOY.md, a runnable snippet for the recommended artifact.
"""

from __future__ import annotations

from compressor.export.bundle import export_bundle
from compressor.export.plan import FORMATS, ExportConfig, default_formats, plan_formats
from compressor.export.recommend import recommend

__all__ = ["FORMATS", "ExportConfig", "default_formats", "export_bundle", "recommend", "plan_formats"]
