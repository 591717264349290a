"""Writing a bundle: every artifact built, gated and profiled in a private directory, swapped in whole.

`export_bundle` plans the formats (`plan`), computes the PyTorch reference
once, then hands each format to `ArtifactBuilder`: build (`builders`, or the
TensorRT builder of `profilers.backends.trt`), parity gate (`parity`), and, if
it passed, a profile of that very file on the target (`profilers.measure`; a
TensorRT engine is timed as shipped, not rebuilt). A build that fails, or a
file its runtime cannot run, is a failed artifact with the reason; the other
formats go on. `recommend` then picks the artifact to ship.

Files: everything is written in `.<out>.partial-<pid>` next to `out_dir`,
renamed onto `out_dir` only when the bundle is complete (the old bundle goes
through `.<out>.old-<pid>` and is removed after), so a crash leaves either
the old bundle or none, never a half-written one that looks finished. A
process killed before it could clean up leaves those directories behind; each
export first removes the ones whose process is gone, and never those of an
export still running (its pid is alive).

Inputs: by default the bundle ships the student behind its normalisation
(`preprocessing.normalising`), so every artifact takes raw pixels scaled to
[0, 1] and a deployer only resizes and divides by 255. The parity gate
compares like with like: the PyTorch reference is that same wrapped module,
and both it and each artifact get the raw test images (INT8 is calibrated on
raw training images). artifacts.json, DEPLOY.md and every ONNX file's
`metadata_props` record what the input is (`preprocessing`), the
normalisation inside the graph and the class names in output order.

Logs: third-party libraries (onnxruntime.quantization, onnx) log through the
root logger; during an export the root logger writes to `export.log` in the
bundle instead of the terminal, so warnings are kept without flooding it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import psutil

from targets import Target, availability
from targets.errors import first_line

from compressor.errors import UserError
from compressor.export import builders, parity
from compressor.export.deploy import render_deploy
from compressor.export.plan import (
    BUNDLE_FORMAT,
    FILE_NAMES,
    LOG_FILE,
    MANIFEST,
    ExportConfig,
    artifact_file,
    engine_source,
    plan_formats,
)
from compressor.export.recommend import over_budget, recommend
from compressor.models.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME
from compressor.models.preprocessing import Preprocessing, normalising


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
    preprocessing: Preprocessing | None = None,
) -> dict[str, Any]:
    """Build, check, profile and write the export bundle for `model`.

    Args:
        model: the trained torch.nn.Module (the parity reference).
        arch: its ArchSpec JSON string or "torchvision:NAME", recorded in the bundle.
        dataset: a `compressor.data.datasets.Dataset`-like object (input_shape, train_x, test_x, test_y,
            optionally class_names) holding raw images in [0, 1].
        preprocessing: the normalisation `model` was trained with (None: it takes the dataset's
            tensors as they are); folded into the artifacts unless `config.fold_normalisation` is False.
        target: where the artifacts will run.
        out_dir: the bundle directory; an existing bundle there is replaced once the new one is complete.
        config: formats and gate thresholds.
        progress: called with a short message as each step starts.
        calibration: INT8 calibration inputs (N, C, H, W), prepared as the artifacts' input (raw [0, 1]
            by default), instead of a sample of `dataset.train_x`.
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
    trained = preprocessing or Preprocessing.raw(input_shape[1:], input_shape[0])
    if (trained.channels, *trained.size) != input_shape:
        raise UserError(f"the model's preprocessing is for {trained.channels}x{trained.size[0]}x{trained.size[1]} "
                        f"inputs but the data is {'x'.join(map(str, input_shape))}")
    folded = config.fold_normalisation and not trained.is_identity
    shipped = normalising(model, trained) if folded else model
    # What the artifacts take: raw [0, 1] pixels when the normalisation is inside them.
    taken = Preprocessing.raw(trained.size, trained.channels) if config.fold_normalisation else trained
    prepare = (lambda x: x) if config.fold_normalisation else trained.normalise
    class_names = list(getattr(dataset, "class_names", None) or [str(i) for i in range(dataset.num_classes)])
    test_x = _as_float32(prepare(dataset.test_x))
    test_y = np.asarray(dataset.test_y).astype(np.int64)
    calib = None
    if "int8" in formats and "int8" not in skipped:
        calib = _calibration_sample(prepare(dataset.train_x), calibration, input_shape, config)
    target_ok, target_why = availability(target)

    remove_stale_temporaries(out_dir)
    tmp = _temporary(out_dir, "partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with library_log(tmp / LOG_FILE):
            say(f"PyTorch reference on {len(test_x)} test samples")
            reference = parity.torch_logits(shipped, test_x)
            builder = ArtifactBuilder(tmp, shipped, input_shape, target, config, reference, test_x, test_y, calib, say,
                                      taken.metadata_props(class_names))
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
            "preprocessing": taken.to_dict(),
            "normalisation_in_graph": trained.to_dict() if folded else None,
            "class_names": class_names,
            "reference": {
                "runtime": "torch",
                "test_accuracy": float((reference.argmax(axis=1) == test_y).mean()),
                "samples": int(len(test_y)),
            },
            "config": {**asdict(config), "formats": list(formats)},
            "recommended": recommended,
            "recommendation": why,
            "log": LOG_FILE,
            "artifacts": artifacts,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "DEPLOY.md").write_text(render_deploy(manifest), encoding="utf-8")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


class ArtifactBuilder:
    """Builds, gates and profiles one artifact at a time inside the temporary bundle directory."""

    def __init__(self, root: Path, model, input_shape, target: Target, config: ExportConfig, reference, test_x, test_y, calib, say,
                 metadata: dict[str, str]) -> None:
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
        self.metadata = metadata
        self.providers = _local_providers(target)

    def artifact(self, fmt: str, *, profile: bool) -> dict[str, Any]:
        file = artifact_file(fmt, self.target)
        path = self.root / file
        entry: dict[str, Any] = {"file": file, "format": fmt, "status": "ok", "recommended": False, "notes": []}
        self.say(f"{fmt}: building {file}")
        if fmt == "onnx":
            try:
                builders.build_onnx(self.model, self.input_shape, path)
                builders.stamp_metadata(path, self.metadata)
            except Exception as exc:  # nothing else can be built without it
                raise UserError(f"the model could not be exported to ONNX: {first_line(exc)}") from exc
        else:
            try:
                self._build(fmt, path, entry)
                if fmt != "tensorrt":
                    builders.stamp_metadata(path, self.metadata)
            except Exception as exc:  # one format failing (an op the quantiser rejects) must not sink the others
                return {**entry, "status": "failed", "reason": f"build failed: {first_line(exc)}", "parity": {"passed": False}, "profile": None}
        data = path.read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), size_mb=len(data) / 2**20)
        self.say(f"{fmt}: parity on {len(self.test_x)} test samples")
        try:
            outputs = parity.engine_logits(path, self.test_x) if fmt == "tensorrt" else parity.ort_logits(path, self.test_x, self.providers)
            entry["parity"] = parity.gate(
                fmt,
                parity.figures(self.reference, outputs, self.test_y),
                fp32_max_abs_diff=self.config.fp32_max_abs_diff,
                fp32_min_top1_agreement=self.config.fp32_min_top1_agreement,
                max_accuracy_drop=self.config.max_accuracy_drop,
            )
        except Exception as exc:  # a runtime that cannot execute the file is a failed artifact, with the reason
            entry.update(status="failed", reason=f"could not run for the parity check: {first_line(exc)}", parity={"passed": False}, profile=None)
            return entry
        entry["profile"] = None
        if not entry["parity"]["passed"]:
            entry.update(status="failed", reason=f"parity gate failed: {entry['parity']['reason']}")
            return entry
        if profile:
            self.say(f"{fmt}: profiling on {self.target.name}")
            entry["profile"], error = self._profile(path)
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
            from profilers.backends.trt import build_engine

            entry["source"] = engine_source(self.target)
            entry["precision"] = self.target.precision
            # Batch 1 (latency) up to the parity batch, tuned for the target's batch size.
            opt = self.target.batch_size
            shapes = [(batch, *self.input_shape) for batch in (1, opt, max(parity.PARITY_BATCH, opt))]
            path.write_bytes(build_engine(
                (self.root / entry["source"]).read_bytes(),
                self.target.precision,
                workspace_mb=self.target.workspace_mb,
                shapes={INPUT_NAME: tuple(shapes)},
            ))
            entry["notes"].append("a TensorRT engine runs only on the GPU model and TensorRT version that built it")

    def _profile(self, path: Path) -> tuple[dict[str, Any] | None, str | None]:
        import profilers

        try:
            profile = profilers.measure(
                str(path),
                self.target,
                input_shape=(self.target.batch_size, *self.input_shape),
                max_seconds=self.config.profile_max_seconds,
                memory=self.config.profile_memory,
                label=path.name,
            )
        except profilers.ProfileError as exc:
            return None, first_line(exc)
        return profile, None


@contextlib.contextmanager
def library_log(path: Path) -> Iterator[None]:
    """Inside the block, the root logger writes to `path` (created even when nothing is logged) and nowhere else."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = root.handlers[:]
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved
        handler.close()


def _temporary(out_dir: Path, kind: str, pid: int | None = None) -> Path:
    return out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid() if pid is None else pid}"


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Remove the `.<out>.partial-<pid>`/`.<out>.old-<pid>` directories of exports whose process is gone.

    Returns:
        The directories removed.
    """
    if not out_dir.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.(partial|old)-(\d+)")
    removed = []
    for path in out_dir.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match is None or not path.is_dir():
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or psutil.pid_exists(pid):  # ours, or a concurrent export's
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _skipped(fmt: str, target: Target, reason: str) -> dict[str, Any]:
    return {"file": artifact_file(fmt, target), "format": fmt, "status": "skipped", "reason": reason, "sha256": None, "size_mb": None,
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


def _calibration_sample(train_x, calibration, input_shape: tuple[int, ...], config: ExportConfig) -> np.ndarray:
    source = "--calib-data" if calibration is not None else "the dataset's training split"
    samples = _as_float32(calibration if calibration is not None else train_x)
    if samples.ndim != 4 or tuple(samples.shape[1:]) != input_shape:
        raise UserError(
            f"calibration data from {source} has shape {tuple(samples.shape)}, but the model takes "
            f"(N, {', '.join(map(str, input_shape))}); pass inputs prepared as the artifacts take them "
            "(raw pixels / 255 unless --no-fold-normalisation)"
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
    old = _temporary(out_dir, "old")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
