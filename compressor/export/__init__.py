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

For each artifact, in order: build (`builders`, `tensorrt`), then the parity
gate against the PyTorch model on the test split (`parity`), then, if it
passed, a profile on the target with the target's runtime (`profilers`). The
recommendation is the artifact with the lowest latency (at the target's
budget percentile) among those that passed and were profiled; an INT8/FP16
artifact slower than the best FP32 one on this target is reported as such and
never recommended. An artifact that cannot be built here (no TensorRT or GPU)
is recorded as skipped with the reason when it came from the target's default
formats, and refused up front when the user asked for it by name.

Everything is written in a temporary sibling directory, which is renamed onto
`out_dir` only when the bundle is complete: a crash leaves either the old
bundle or none, never a half-written one that looks finished.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from targets import Target, availability

from compressor.errors import UserError
from compressor.export import builders, parity
from compressor.export.deploy import render_deploy
from compressor.models.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME

__all__ = ["FORMATS", "ExportConfig", "default_formats", "export_bundle", "recommend", "plan_formats"]

FORMATS = ("onnx", "ort", "int8", "fp16", "tensorrt")
BUNDLE_FORMAT = "compressor-export/1"
MANIFEST = "artifacts.json"
FILE_NAMES = {"onnx": "model.onnx", "ort": "model.ort.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
REDUCED_PRECISION = ("int8", "fp16")
FP32 = ("onnx", "ort")


@dataclass(frozen=True)
class ExportConfig:
    """What to build and how strictly to check it.

    Attributes:
        formats: artifacts to build, from FORMATS; None -> `default_formats(target)`.
        max_accuracy_drop: largest test-accuracy loss (a fraction: 0.01 = 1 point) an
            INT8/FP16/TensorRT artifact may show against PyTorch.
        fp32_max_abs_diff: largest absolute logit difference an FP32 artifact may show;
            1e-3 is far above float32 reordering noise (~1e-5 for a ResNet) and far below
            any real change of the weights.
        fp32_min_top1_agreement: fraction of test samples on which an FP32 artifact's
            top-1 class must equal PyTorch's (below 1.0 because near-ties may flip).
        calib_samples: training inputs used to calibrate INT8 (seeded sample).
        profile_max_seconds: cap on each artifact's latency measurement (None: the target's).
        profile_memory: also measure peak memory (a fresh process per artifact; slower).
        seed: seeds the calibration sample.
    """

    formats: tuple[str, ...] | None = None
    max_accuracy_drop: float = 0.01
    fp32_max_abs_diff: float = 1e-3
    fp32_min_top1_agreement: float = 0.99
    calib_samples: int = 128
    profile_max_seconds: float | None = None
    profile_memory: bool = True
    seed: int = 0


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


def engine_file(target: Target) -> str:
    return f"model.{target.precision}.engine"


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


def export_bundle(
    model,
    arch: str,
    dataset,
    target: Target,
    out_dir: str | os.PathLike[str],
    config: ExportConfig = ExportConfig(),
    *,
    progress: Callable[[str], None] | None = None,
    calibration: np.ndarray | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Build, check, profile and write the export bundle for `model`.

    Args:
        model: the trained torch.nn.Module (the parity reference).
        arch: its ArchSpec JSON string or "torchvision:NAME", recorded in the bundle.
        dataset: a `compressor.data.datasets.Dataset`-like object (input_shape, train_x, test_x, test_y).
        target: where the artifacts will run.
        out_dir: the bundle directory; an existing bundle there is replaced once the new one is complete.
        config: formats and gate thresholds.
        progress: called with a short message as each step starts.
        calibration: INT8 calibration inputs (N, C, H, W) instead of a sample of `dataset.train_x`.
        checkpoint: the checkpoint path the model came from, recorded in the bundle.

    Returns:
        The content of artifacts.json.

    Raises:
        UserError: bad formats, calibration data of the wrong shape, an out_dir that is not a bundle.
    """
    say = progress or (lambda message: None)
    formats, skipped = plan_formats(target, config)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    input_shape = tuple(int(d) for d in dataset.input_shape)
    test_x = _as_float32(dataset.test_x)
    test_y = np.asarray(dataset.test_y).astype(np.int64)
    calib = None
    if "int8" in formats and "int8" not in skipped:
        calib = _calibration_sample(dataset, calibration, input_shape, config)
    target_ok, target_why = availability(target)

    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        say(f"PyTorch reference on {len(test_x)} test samples")
        reference = parity.torch_logits(model, test_x)
        builder = _BundleBuilder(tmp, model, input_shape, target, config, reference, test_x, test_y, calib, say)
        artifacts = []
        for fmt in formats:
            if fmt in skipped:
                artifacts.append(_skipped(fmt, target, skipped[fmt]))
            else:
                artifacts.append(builder.artifact(fmt, profile=target_ok))
        recommended, why = recommend(artifacts, target.budgets.latency_percentile)
        if not target_ok:
            why = f"nothing was profiled: target {target.name} cannot be measured here ({target_why})"
        manifest = {
            "bundle": BUNDLE_FORMAT,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": checkpoint,
            "arch": arch,
            "target": target.to_dict(),
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "opset": OPSET,
            "input_shape": list(input_shape),
            "reference": {
                "runtime": "torch",
                "test_accuracy": float((reference.argmax(axis=1) == test_y).mean()),
                "samples": int(len(test_y)),
            },
            "config": {**asdict(config), "formats": list(formats)},
            "recommended": recommended,
            "recommendation": why,
            "artifacts": artifacts,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "DEPLOY.md").write_text(render_deploy(manifest), encoding="utf-8")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def recommend(artifacts: list[dict[str, Any]], percentile: str = "p50") -> tuple[str | None, str]:
    """Mark the fastest artifact that passed its gate as recommended (in place).

    Artifacts within the target's budgets ("over_budget" empty or absent) come
    first: a faster file that misses the size budget loses to a slower one that
    fits; when none fits, the fastest is recommended and the reason says so.
    Among those, an INT8/FP16 artifact slower than the fastest FP32 one gets a
    note and is not a candidate: reduced precision that costs accuracy and buys
    no speed on this target is not worth shipping.

    Args:
        artifacts: artifact entries with "format", "status", "parity", "profile".
        percentile: the latency percentile compared ("p50", "p90", "p99").

    Returns:
        (the recommended file or None, a one-line explanation).
    """
    def latency(entry: dict[str, Any]) -> float:
        return float(entry["profile"]["latency_ms"][percentile])

    for entry in artifacts:
        entry["recommended"] = False
    measured = [a for a in artifacts if a.get("status") == "ok" and a["parity"]["passed"] and a.get("profile")]
    if not measured:
        return None, "no artifact both passed its parity gate and was profiled on the target"
    within = [a for a in measured if not a.get("over_budget")]
    pool = within or measured
    fp32 = [a for a in pool if a["format"] in FP32]
    baseline = min(fp32, key=latency) if fp32 else None
    candidates = []
    for entry in pool:
        if baseline is not None and entry["format"] in REDUCED_PRECISION and latency(entry) > latency(baseline):
            entry.setdefault("notes", []).append(
                f"slower than FP32 on this target ({latency(entry):.3g} ms vs {latency(baseline):.3g} ms "
                f"{percentile} for {baseline['file']}): not recommended"
            )
            continue
        candidates.append(entry)
    best = min(candidates, key=latency)
    best["recommended"] = True
    why = f"fastest artifact that passed its parity gate ({latency(best):.3g} ms {percentile})"
    if within and len(within) < len(measured):
        why = f"fastest artifact that passed its parity gate and meets the target's budgets ({latency(best):.3g} ms {percentile})"
    elif not within:
        why += f"; no artifact meets the target's budgets ({'; '.join(best['over_budget'])})"
    return best["file"], why


def over_budget(profile: dict[str, Any], target: Target) -> list[str]:
    """The target budgets a profiled artifact misses, each as a short phrase (empty: all met)."""
    import profilers

    return [reason for reason, _ in profilers.budget_violations(profile, target.budgets)]


class _BundleBuilder:
    """Builds, gates and profiles one artifact at a time inside the temporary bundle directory."""

    def __init__(self, root: Path, model, input_shape, target: Target, config: ExportConfig, reference, test_x, test_y, calib, say) -> None:
        self.root = root
        self.model = model
        self.input_shape = input_shape
        self.target = target
        self.config = config
        self.reference = reference
        self.test_x = test_x
        self.test_y = test_y
        self.calib = calib
        self.say = say
        self.providers = _local_providers(target)

    def artifact(self, fmt: str, *, profile: bool) -> dict[str, Any]:
        file = engine_file(self.target) if fmt == "tensorrt" else FILE_NAMES[fmt]
        path = self.root / file
        entry: dict[str, Any] = {"file": file, "format": fmt, "status": "ok", "recommended": False, "notes": []}
        self.say(f"{fmt}: building {file}")
        if fmt == "onnx":
            try:
                builders.build_onnx(self.model, self.input_shape, path)
            except Exception as exc:  # nothing else can be built without it
                raise UserError(f"the model could not be exported to ONNX: {_first_line(exc)}") from exc
        else:
            try:
                self._build(fmt, path, entry)
            except UserError:
                raise
            except Exception as exc:  # one format failing (an op the quantiser rejects) must not sink the others
                return {**entry, "status": "failed", "reason": f"build failed: {_first_line(exc)}", "parity": {"passed": False}, "profile": None}
        data = path.read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), size_mb=len(data) / 2**20)
        self.say(f"{fmt}: parity on {len(self.test_x)} test samples")
        try:
            outputs = self._run(fmt, path)
            entry["parity"] = parity.gate(
                fmt,
                parity.figures(self.reference, outputs, self.test_y),
                fp32_max_abs_diff=self.config.fp32_max_abs_diff,
                fp32_min_top1_agreement=self.config.fp32_min_top1_agreement,
                max_accuracy_drop=self.config.max_accuracy_drop,
            )
        except Exception as exc:  # a runtime that cannot execute the file is a failed artifact, with the reason
            entry.update(status="failed", reason=f"could not run for the parity check: {_first_line(exc)}", parity={"passed": False}, profile=None)
            return entry
        entry["profile"] = None
        if not entry["parity"]["passed"]:
            entry.update(status="failed", reason=f"parity gate failed: {entry['parity']['reason']}")
            return entry
        if profile:
            self.say(f"{fmt}: profiling on {self.target.name}")
            entry["profile"], error = self._profile(fmt, path)
            if error:
                entry["profile_error"] = error
            else:
                entry["over_budget"] = over_budget(entry["profile"], self.target)
        return entry

    def _build(self, fmt: str, path: Path, entry: dict[str, Any]) -> None:
        source = self.root / FILE_NAMES["onnx"]
        if fmt == "ort":
            level = self.target.graph_optimization
            if self.target.runtime == "remote" and level == "all":
                # Level "all" bakes in this machine's CPU layout; the device is another machine.
                level = "extended"
            entry["notes"].append(builders.build_ort(source, path, level, self.providers))
        elif fmt == "int8":
            builders.build_int8(source, path, self.calib, for_tensorrt=self.target.served_by == "tensorrt")
            entry["notes"].append(f"calibrated on {len(self.calib)} samples (MinMax, per-channel weights)")
        elif fmt == "fp16":
            builders.build_fp16(source, path)
            if "CUDAExecutionProvider" not in self.providers and self.target.served_by != "tensorrt":
                entry["notes"].append("FP16 on a CPU runtime runs through casts or slow kernels; meant for GPUs")
        elif fmt == "tensorrt":
            from compressor.export import tensorrt

            entry["source"] = engine_source(self.target)
            entry["precision"] = self.target.precision
            plan = tensorrt.build_engine(
                (self.root / entry["source"]).read_bytes(),
                self.input_shape,
                self.target.precision,
                workspace_mb=self.target.workspace_mb,
                opt_batch=self.target.batch_size,
            )
            path.write_bytes(plan)
            entry["notes"].append("a TensorRT engine runs only on the GPU model and TensorRT version that built it")

    def _run(self, fmt: str, path: Path) -> np.ndarray:
        if fmt == "tensorrt":
            from compressor.export import tensorrt

            return tensorrt.engine_logits(path.read_bytes(), self.test_x)
        return parity.ort_logits(str(path), self.test_x, self.providers)

    def _profile(self, fmt: str, path: Path) -> tuple[dict[str, Any] | None, str | None]:
        import profilers

        # The tensorrt backend of profilers builds its engine from ONNX itself.
        measured = self.root / engine_source(self.target) if fmt == "tensorrt" else path
        try:
            profile = profilers.measure(
                str(measured),
                self.target,
                input_shape=(self.target.batch_size, *self.input_shape),
                max_seconds=self.config.profile_max_seconds,
                memory=self.config.profile_memory,
                label=path.name,
            )
        except profilers.ProfileError as exc:
            return None, _first_line(exc)
        return profile, None


def _skipped(fmt: str, target: Target, reason: str) -> dict[str, Any]:
    file = engine_file(target) if fmt == "tensorrt" else FILE_NAMES[fmt]
    return {"file": file, "format": fmt, "status": "skipped", "reason": reason, "sha256": None, "size_mb": None,
            "parity": {"passed": False}, "profile": None, "recommended": False, "notes": []}


def _local_providers(target: Target) -> list[str]:
    """The ONNX Runtime providers used here for building and parity: the target's if present, else CPU."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    if target.served_by == "onnxruntime" and target.runtime != "remote":
        chosen = [p for p in target.providers if p in have]
    else:
        chosen = ["CUDAExecutionProvider"] if target.kind == "gpu" and "CUDAExecutionProvider" in have else []
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # fallback for ops the accelerator's provider lacks
    return chosen


def _as_float32(values) -> np.ndarray:
    array = values.numpy() if hasattr(values, "numpy") else np.asarray(values)
    return np.ascontiguousarray(array, dtype=np.float32)


def _calibration_sample(dataset, calibration, input_shape: tuple[int, ...], config: ExportConfig) -> np.ndarray:
    source = "--calib-data" if calibration is not None else "the dataset's training split"
    samples = _as_float32(calibration if calibration is not None else dataset.train_x)
    if samples.ndim != 4 or tuple(samples.shape[1:]) != input_shape:
        raise UserError(
            f"calibration data from {source} has shape {tuple(samples.shape)}, but the model takes "
            f"(N, {', '.join(map(str, input_shape))}); pass inputs preprocessed like the training data"
        )
    if len(samples) == 0:
        raise UserError(f"calibration data from {source} is empty; INT8 needs at least one sample")
    rng = np.random.default_rng(config.seed)
    chosen = rng.choice(len(samples), size=min(config.calib_samples, len(samples)), replace=False)
    return samples[np.sort(chosen)]


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a directory for the bundle")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise UserError(
            f"--out {out_dir} is a non-empty directory that is not an export bundle; "
            "choose a new or empty directory (an existing bundle is replaced)"
        )


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished bundle into place; the old one is removed only after the new one is there."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
