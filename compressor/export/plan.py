"""What an export builds: the formats, their file names, the config, and which can be built here.

`plan_formats` is the first step of every export and writes nothing: it
validates the requested formats (the target's defaults when none are named),
always adds the FP32 ONNX file every other format derives from (and the QDQ
model an INT8 TensorRT engine is built from), and decides which formats are
skipped here. A format asked for by name whose runtime is missing is refused
with a one-line `UserError`; one that only came from the target's defaults is
recorded as skipped, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from targets import Target, availability

from compressor.errors import UserError
from compressor.export.int8 import MAX_RECIPES, Int8Recipe

FORMATS = ("onnx", "ort", "int8", "fp16", "tensorrt")
BUNDLE_FORMAT = "compressor-export/1"
MANIFEST = "artifacts.json"
LOG_FILE = "export.log"
FILE_NAMES = {"onnx": "model.onnx", "ort": "model.ort.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
REDUCED_PRECISION = ("int8", "fp16")
FP32 = ("onnx", "ort")


@dataclass(frozen=True)
class ExportConfig:
    """What to build and how strictly to check it.

    Attributes:
        formats: artifacts to build, from FORMATS; None -> `default_formats(target)`.
        max_accuracy_drop: largest validation-accuracy loss (a fraction: 0.01 = 1 point) an
            INT8/FP16/TensorRT artifact may show against PyTorch.
        fp32_max_abs_diff: largest absolute logit difference an FP32 artifact may show;
            1e-3 is far above float32 reordering noise (~1e-5 for a ResNet) and far below
            any real change of the weights.
        fp32_min_top1_agreement: fraction of test samples on which an FP32 artifact's
            top-1 class must equal PyTorch's (below 1.0 because near-ties may flip).
        int8_recipes: INT8 recipe names to try (`int8.Int8Recipe.parse`), in order; None: the target
            CPU's set (`int8.recipe_set`).
        calib_samples: training inputs used to calibrate INT8 (seeded sample).
        profile_max_seconds: timed seconds per artifact in the side-by-side session (None: the target's
            `min_seconds`).
        profile_memory: also measure peak memory (a fresh process per artifact; slower).
        seed: seeds the calibration sample.
        fold_normalisation: ship the student behind its normalisation layer, so every artifact
            takes raw pixels in [0, 1] (resize, divide by 255); False ships the bare network,
            which takes normalised inputs (the mean and std are recorded in the bundle).
    """

    formats: tuple[str, ...] | None = None
    max_accuracy_drop: float = 0.01
    fp32_max_abs_diff: float = 1e-3
    fp32_min_top1_agreement: float = 0.99
    int8_recipes: tuple[str, ...] | None = None
    calib_samples: int = 128
    profile_max_seconds: float | None = None
    profile_memory: bool = True
    seed: int = 0
    fold_normalisation: bool = True

    def int8_recipe_set(self) -> tuple[list[Int8Recipe], str] | None:
        """The user's INT8 recipes and why, or None to let the target's CPU decide.

        Raises:
            UserError: an unknown recipe name, or more than `MAX_RECIPES`.
        """
        if self.int8_recipes is None:
            return None
        recipes = list(dict.fromkeys(Int8Recipe.parse(name) for name in self.int8_recipes))
        if not recipes or len(recipes) > MAX_RECIPES:
            raise UserError(f"give 1 to {MAX_RECIPES} INT8 recipes, got {len(recipes)}")
        return recipes, "the recipes asked for (--int8-recipes)"


def default_formats(target: Target) -> tuple[str, ...]:
    """The formats worth building for `target`.

    A TensorRT target gets onnx, fp16 (or int8 when the target's precision is
    int8: the engine is built from the QDQ model) and tensorrt; another GPU
    target onnx, ort, fp16; a CPU or edge target onnx, ort, int8.
    """
    if target.served_by == "tensorrt":
        return ("onnx", "int8" if target.precision == "int8" else "fp16", "tensorrt")
    if target.kind == "gpu":
        return ("onnx", "ort", "fp16")
    return ("onnx", "ort", "int8")


def artifact_file(fmt: str, target: Target) -> str:
    """The bundle file of `fmt` (a TensorRT engine is named after the target's precision)."""
    return f"model.{target.precision}.engine" if fmt == "tensorrt" else FILE_NAMES[fmt]


def engine_source(target: Target) -> str:
    """The ONNX file a TensorRT engine is built from: the QDQ model for INT8, else the FP32 one."""
    return FILE_NAMES["int8" if target.precision == "int8" else "onnx"]


def runtime_missing(fmt: str, target: Target) -> str | None:
    """Why `fmt` cannot be built and measured here for `target`, or None if it can."""
    if fmt == "tensorrt":
        if target.served_by != "tensorrt":
            return f"a TensorRT engine needs a TensorRT target; {target.name} is served by {target.served_by}"
        if target.runtime == "remote":
            return "TensorRT engines are built on the device itself; export the ONNX/INT8 model and build there"
        ok, why = availability(target)
        return None if ok else why
    if fmt == "ort" and target.served_by == "tensorrt":
        return "ONNX Runtime's optimised graph only runs on ONNX Runtime, and the target is served by TensorRT"
    return None


def plan_formats(target: Target, config: ExportConfig) -> tuple[tuple[str, ...], dict[str, str]]:
    """Validate the requested formats and decide which of them are skipped.

    Returns:
        (formats in canonical order, always starting with onnx; {format: why skipped}).

    Raises:
        UserError: an unknown format, or a format asked for by name whose runtime is missing.
    """
    explicit = config.formats is not None
    requested = tuple(config.formats) if explicit else default_formats(target)
    for fmt in requested:
        if fmt not in FORMATS:
            raise UserError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    wanted = {"onnx", *requested}
    if "tensorrt" in wanted and target.precision == "int8":
        wanted.add("int8")  # the INT8 engine is built from the QDQ model
    formats = tuple(f for f in FORMATS if f in wanted)
    config.int8_recipe_set()  # bad recipe names fail before anything is built
    skipped = {}
    for fmt in formats:
        why = runtime_missing(fmt, target)
        if why is None:
            continue
        if explicit and fmt in requested:
            raise UserError(f"cannot export format {fmt!r} for target {target.name}: {why}")
        skipped[fmt] = why
    if explicit:
        ok, why = availability(target)
        if not ok:
            raise UserError(
                f"target {target.name} cannot be measured on this machine ({why}); "
                "export for a target that runs here, or omit --formats to build and check without profiling"
            )
    return formats, skipped
