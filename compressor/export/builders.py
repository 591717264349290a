"""One builder per ONNX artifact: plain ONNX, ORT-optimised, INT8 QDQ, FP16.

Each builder reads the FP32 `model.onnx` (or the model) and writes its file in
the bundle's temporary directory; none of them runs the result (parity does).

- ORT-optimised: ONNX Runtime applies its graph optimisations once, offline,
  via `SessionOptions.optimized_model_filepath`, at the target's level. Above
  "extended" the saved graph uses kernels and layouts of the machine and
  execution provider that produced it (e.g. NCHWc blocks for this CPU's
  vector width), so the file is specific to that hardware.
- INT8: `quant_pre_process` (shape inference and folding; symbolic shape
  inference is skipped, it needs sympy and is not needed for CNNs), then static
  QDQ quantisation with one `int8.Int8Recipe` (calibration method, per-channel
  or per-tensor weights, 7- or 8-bit weights; `compressor.export.int8` says
  which recipes a CPU gets and how one is kept) on a seeded sample of training
  inputs (the histogram calibrators on at most `HISTOGRAM_CALIB_SAMPLES` of
  them). The channel axis of unfused normalisation scales is set explicitly
  (`PER_CHANNEL_AXIS`). Activations are unsigned on ONNX Runtime (the U8S8
  kernels of x86/ARM CPUs) and symmetric signed for TensorRT, which accepts
  only zero-point-0 INT8.
- FP16: `convert_float_to_float16(keep_io_types=True)`, so callers still feed
  and read float32.

Every ONNX artifact is then stamped (`stamp_metadata`) with the bundle's
`metadata_props`: the input's preprocessing and the class names
(compressor.models.preprocessing), so a file travels with its contract.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from targets import GRAPH_OPTIMIZATION_LEVELS

from compressor.export.int8 import HISTOGRAM_CALIB_SAMPLES, Int8Recipe
from compressor.models.onnx_export import INPUT_NAME, export_onnx

# The per-channel axis of the weights ORT would otherwise guess wrong: a
# BatchNormalization that follows no Conv (BN after ReLU, after an Add) is left
# unfused, and its 1-D scale has its channels on axis 0, where ORT's default
# for normalisations is axis 1 (valid only for rank >= 2): each such node then
# fell back to one per-tensor scale with a root-logger warning.
PER_CHANNEL_AXIS = {"BatchNormalization": 0, "InstanceNormalization": 0}
# What the calibrators print goes to the bundle's export.log (the root logger's handler during an export).
LOG = logging.getLogger(__name__)
LOG.setLevel(logging.INFO)
# Calibration batches: big enough to be quick, small enough for large inputs.
CALIBRATION_BATCH = 16


def build_onnx(model, input_shape: tuple[int, ...], path: Path) -> None:
    """Export the PyTorch model (input `input`, output `logits`, dynamic batch) and check it."""
    import onnx

    export_onnx(model, (1, *input_shape), path)
    onnx.checker.check_model(str(path))


def stamp_metadata(path: Path, props: dict[str, str]) -> None:
    """Write `props` into the ONNX file's `metadata_props` (replacing keys already there)."""
    import onnx

    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def build_ort(source: Path, path: Path, level: str, providers: list[str]) -> str:
    """Save ONNX Runtime's optimised graph of `source` to `path`.

    Returns:
        A note for the bundle saying on what hardware the file is valid.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[level])
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=providers)
    if level == "all":
        return (
            f"optimised offline at level 'all' with {', '.join(providers)}: the graph uses layouts and "
            "fused kernels of this machine's hardware; rebuild it on (or for) a different CPU/GPU"
        )
    return f"optimised offline at level {level!r}: portable to other machines served by {', '.join(providers)}"


class SampleReader(CalibrationDataReader):
    """ONNX Runtime `CalibrationDataReader` over an in-memory array of inputs."""

    def __init__(self, samples: np.ndarray, input_name: str = INPUT_NAME) -> None:
        self._batches = iter([samples[i : i + CALIBRATION_BATCH] for i in range(0, len(samples), CALIBRATION_BATCH)])
        self._input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._batches, None)
        return None if chunk is None else {self._input_name: chunk}


def build_int8(source: Path, path: Path, calibration: np.ndarray, *, for_tensorrt: bool,
               recipe: Int8Recipe = Int8Recipe()) -> int:
    """Static QDQ INT8 quantisation of `source` with `recipe`, calibrated on `calibration` (N, C, H, W float32).

    Returns:
        The number of calibration samples used (histogram calibrators use at most `HISTOGRAM_CALIB_SAMPLES`).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if recipe.calibration != "minmax":
        calibration = calibration[:HISTOGRAM_CALIB_SAMPLES]
    extra_options = {"QDQOpTypePerChannelSupportToAxis": PER_CHANNEL_AXIS}
    if for_tensorrt:
        extra_options.update(ActivationSymmetric=True, WeightSymmetric=True)
    prepared = path.with_name(path.stem + ".pre.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    printed = io.StringIO()
    try:
        # The histogram calibrators print their progress on stdout, where it would corrupt `--json` output.
        with contextlib.redirect_stdout(printed):
            quantize_static(
                str(prepared),
                str(path),
                SampleReader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=recipe.per_channel,
                reduce_range=recipe.reduce_range and not for_tensorrt,
                activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[recipe.calibration],
                extra_options=extra_options,
            )
    finally:
        if printed.getvalue().strip():
            LOG.info("%s: %s", recipe.name, printed.getvalue().strip())
        prepared.unlink(missing_ok=True)
        # ORT's calibrator leaves its augmented model next to the output in some versions.
        for leftover in path.parent.glob("augmented_model*.onnx"):
            leftover.unlink()
    return len(calibration)


def build_fp16(source: Path, path: Path) -> None:
    """Convert `source` to FP16 weights and activations, keeping float32 inputs and outputs."""
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))
