"""Writing a bundle: every artifact built, gated on validation, measured side by side, swapped in whole.

`export_bundle` plans the formats (`plan`), computes the PyTorch reference
once per split, then hands each format to `ArtifactBuilder`: build
(`builders`, or the TensorRT builder of `profilers.backends.trt`) and parity
gate (`parity`) on the validation split; the test split's figures of the
shipped file are kept as `test_parity`, reported and never decisive. INT8 is
built with every recipe of the target's set (`int8`) and each recipe is
gated. A build that fails, or a file its runtime cannot run, is a failed
artifact with the reason; the other formats go on.

Then `ArtifactBuilder.measure` profiles everything that passed, INT8 recipes
included, in ONE side-by-side session (`on_target.check_side_by_side`, the
FP32 ONNX file first, memory with `profile_memory`): each entry gets the
session's Profile (a TensorRT engine is timed as shipped, not rebuilt), its
latency interval at the budget percentile, its ratio to each FP32 artifact
with its interval (`ratio_to_fp32`), and the budget verdict of `on_target`
(`budget`, `over_budget`). `finish_int8` keeps one recipe (`int8.select_recipe`
on the session's figures) and moves its file to model.int8.onnx; on a
TensorRT target the recipe is kept by accuracy before the engine is built
from it. A runtime that cannot interleave (TensorRT, a remote agent) is
measured one after another; the session record and each entry say so. If the
session itself fails, every entry it held records `profile_error`.
`recommend` then picks the artifact to ship.

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
and both it and each artifact get the raw validation and test images (INT8 is
calibrated on raw training images). artifacts.json, DEPLOY.md and every ONNX file's
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
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import psutil

from targets import Target, availability
from targets.errors import first_line

from compressor.errors import UserError
from compressor.export import builders, parity
from compressor.export.deploy import render_deploy
from compressor.export.int8 import RELEVANT_FLAGS, RecipeTrial, has_vnni, recipe_set, select_recipe
from compressor.export.plan import (
    BUNDLE_FORMAT,
    FILE_NAMES,
    FP32,
    LOG_FILE,
    MANIFEST,
    ExportConfig,
    artifact_file,
    engine_source,
    plan_formats,
)
from compressor.export.recommend import recommend
from compressor.models.on_target import Session
from compressor.models.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME
from compressor.models.preprocessing import Preprocessing, normalising

# Where the INT8 recipes' files wait, inside the temporary bundle, until one is kept.
INT8_CANDIDATES = "int8-recipes"
SEQUENTIAL_NOTE = ("this runtime cannot interleave models in one process (TensorRT, eager torch, a remote agent): "
                   "the artifacts were measured one after another, so their ratios compare measurements taken at "
                   "different times")


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
        dataset: a `compressor.data.datasets.Dataset`-like object (input_shape, train_x, val_x, val_y,
            test_x, test_y, optionally class_names) holding raw images in [0, 1]; the gates decide on
            the validation split, the test split is reported.
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
        UserError: bad formats or INT8 recipes, calibration data of the wrong shape, no validation split,
            an out_dir that is not a bundle.
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
    if getattr(dataset, "val_x", None) is None or getattr(dataset, "val_y", None) is None:
        raise UserError("the dataset has no validation split (val_x, val_y); the parity gate decides on validation "
                        "data, so give a dataset with one")
    val_x = _as_float32(prepare(dataset.val_x))
    val_y = np.asarray(dataset.val_y).astype(np.int64)
    if len(val_y) == 0:
        raise UserError("the dataset's validation split is empty; the parity gate decides on validation data, "
                        "so give a dataset with a validation split (more samples, or a larger validation fraction)")
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
            say(f"PyTorch reference on {len(val_x)} validation and {len(test_x)} test samples")
            splits = Splits(val_x, val_y, parity.torch_logits(shipped, val_x), test_x, test_y,
                            parity.torch_logits(shipped, test_x))
            builder = ArtifactBuilder(tmp, shipped, input_shape, target, config, splits, calib, say,
                                      taken.metadata_props(class_names))
            artifacts = [_skipped(fmt, target, skipped[fmt]) if fmt in skipped else builder.artifact(fmt)
                         for fmt in formats]
            session = builder.measure(artifacts) if target_ok else None
            for entry in artifacts:
                if entry["format"] == "int8" and entry["status"] == "ok":
                    builder.finish_int8(entry, session)
        recommended, why = recommend(artifacts)
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
                "val_accuracy": _accuracy(splits.val_reference, val_y),
                "val_samples": int(len(val_y)),
                "test_accuracy": _accuracy(splits.test_reference, test_y),
                "test_samples": int(len(test_y)),
            },
            "config": {**asdict(config), "formats": list(formats)},
            "session": None if session is None else _session_record(session),
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
    """Builds and gates the artifacts one at a time inside the temporary bundle directory, then measures them together.

    `artifact(fmt)` builds a format and gates it on the validation split (an INT8 format: every recipe
    of its set, `compressor.export.int8`); `measure(artifacts)` profiles everything that passed in one
    side-by-side session; `finish_int8(entry, session)` keeps one INT8 recipe and ships its file.
    """

    def __init__(self, root: Path, model, input_shape, target: Target, config: ExportConfig, splits: Splits, calib,
                 say, metadata: dict[str, str]) -> None:
        self.root = root
        self.model = model
        self.input_shape = input_shape
        self.target = target
        self.config = config
        self.splits = splits
        self.calib = calib
        self.say = say
        self.metadata = metadata
        self.providers = _local_providers(target)
        self.int8_trials: list[RecipeTrial] = []
        self.int8_pending = False

    def artifact(self, fmt: str) -> dict[str, Any]:
        file = artifact_file(fmt, self.target)
        path = self.root / file
        entry: dict[str, Any] = {"file": file, "format": fmt, "status": "ok", "recommended": False, "notes": [],
                                 "profile": None}
        self.say(f"{fmt}: building {file}")
        if fmt == "onnx":
            try:
                builders.build_onnx(self.model, self.input_shape, path)
                builders.stamp_metadata(path, self.metadata)
            except Exception as exc:  # nothing else can be built without it
                raise UserError(f"the model could not be exported to ONNX: {first_line(exc)}") from exc
        elif fmt == "int8":
            return self._int8(entry)
        else:
            try:
                self._build(fmt, path, entry)
                if fmt != "tensorrt":
                    builders.stamp_metadata(path, self.metadata)
            except Exception as exc:  # one format failing (an op the quantiser rejects) must not sink the others
                return {**entry, "status": "failed", "reason": f"build failed: {first_line(exc)}", "parity": {"passed": False}}
        self.say(f"{fmt}: parity on {len(self.splits.val_x)} validation samples")
        try:
            entry["parity"] = self._gate(fmt, path)
        except Exception as exc:  # a runtime that cannot execute the file is a failed artifact, with the reason
            return {**entry, "status": "failed", "reason": f"could not run for the parity check: {first_line(exc)}",
                    "parity": {"passed": False}}
        self._ship(entry, path)
        if not entry["parity"]["passed"]:
            entry.update(status="failed", reason=f"parity gate failed: {entry['parity']['reason']}")
        return entry

    def _build(self, fmt: str, path: Path, entry: dict[str, Any]) -> None:
        source = self.root / FILE_NAMES["onnx"]
        if fmt == "ort":
            level = self.target.graph_optimization
            if self.target.runtime == "remote" and level == "all":
                # Level "all" bakes in this machine's CPU layout; the device is another machine.
                level = "extended"
            entry["notes"].append(builders.build_ort(source, path, level, self.providers))
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

    def _gate(self, fmt: str, path: Path) -> dict[str, Any]:
        """The parity gate on the validation split: the figures that decide, with `split` = "val"."""
        figures = parity.figures(self.splits.val_reference, self._logits(fmt, path, self.splits.val_x), self.splits.val_y)
        return {**parity.gate(fmt, figures, fp32_max_abs_diff=self.config.fp32_max_abs_diff,
                              fp32_min_top1_agreement=self.config.fp32_min_top1_agreement,
                              max_accuracy_drop=self.config.max_accuracy_drop), "split": "val"}

    def _ship(self, entry: dict[str, Any], path: Path) -> None:
        """Hash the shipped file and add its test-split figures (reported only: no decision reads them)."""
        data = path.read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), size_mb=len(data) / 2**20)
        try:
            outputs = self._logits(entry["format"], path, self.splits.test_x)
            entry["test_parity"] = {**parity.figures(self.splits.test_reference, outputs, self.splits.test_y),
                                    "split": "test", "decides": False}
        except Exception as exc:  # the validation pass ran it; a failure here is only a missing report
            entry["test_parity"] = {"split": "test", "decides": False, "error": first_line(exc)}

    def _logits(self, fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
        return parity.engine_logits(path, x) if fmt == "tensorrt" else parity.ort_logits(path, x, self.providers)

    def _int8(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Build and gate every INT8 recipe of the target's set; a TensorRT target keeps one now (see `int8`)."""
        import platform

        from profilers.host import cpu_flags, cpu_model

        started = time.perf_counter()
        for_tensorrt = self.target.served_by == "tensorrt"
        remote = self.target.runtime == "remote"
        flags = None if remote else cpu_flags()
        recipes, why = self.config.int8_recipe_set() or recipe_set(flags, for_tensorrt=for_tensorrt,
                                                                   machine="" if remote else platform.machine())
        (self.root / INT8_CANDIDATES).mkdir()
        self.int8_trials = []
        for recipe in recipes:
            label = f"model.int8.{recipe.name}.onnx"
            path = self.root / INT8_CANDIDATES / label
            trial = RecipeTrial(recipe, label)
            self.say(f"int8: recipe {recipe.name}")
            try:
                used = builders.build_int8(self.root / FILE_NAMES["onnx"], path, self.calib, for_tensorrt=for_tensorrt,
                                           recipe=recipe)
                builders.stamp_metadata(path, self.metadata)
                trial.parity = {**self._gate("int8", path), "calibration_samples": used}
            except Exception as exc:  # one recipe failing (an op a calibrator rejects) leaves the others
                trial.error = first_line(exc)
            self.int8_trials.append(trial)
        entry["int8"] = {
            "recipe_set": why,
            "cpu": None if flags is None else {"model": cpu_model(), "vnni": has_vnni(flags),
                                               "flags": sorted(f for f in flags if f in RELEVANT_FLAGS)},
            "build_and_gate_seconds": time.perf_counter() - started,
        }
        entry["parity"] = {"passed": False}  # replaced by the kept recipe's gate (finish_int8)
        self.int8_pending = True
        if for_tensorrt:  # the engine is built from the QDQ model before any session, and its speed does not
            self.finish_int8(entry, None)  # depend on the calibration method: kept by accuracy now
        return entry

    def finish_int8(self, entry: dict[str, Any], session: Session | None) -> None:
        """Keep one INT8 recipe (`int8.select_recipe`, on the session's figures when measured) and ship its file."""
        if not self.int8_pending:
            return
        self.int8_pending = False
        ratio = None
        if session is not None:
            for trial in self.int8_trials:
                if trial.label in session.checked:
                    checked = session.checked[trial.label]
                    trial.latency = (checked.latency_ms, *checked.latency_interval)
            ratio = (lambda a, b: _flat(session.ratio(a, b, session.comparison.percentile)))
        kept, why = select_recipe(self.int8_trials, ratio)
        entry["int8"].update(recipe=kept.recipe.to_dict(), why=why, tried=[t.to_dict() for t in self.int8_trials])
        if kept.parity is None:
            entry.update(status="failed", reason=f"build failed: {kept.error}", parity={"passed": False})
        else:
            path = self.root / entry["file"]
            os.replace(self.root / INT8_CANDIDATES / kept.label, path)
            entry["parity"] = kept.parity
            entry["notes"].append(f"recipe {kept.recipe.name}: {kept.recipe.describe()}, calibrated on "
                                  f"{kept.parity['calibration_samples']} training samples; {why}")
            self._ship(entry, path)
            if not kept.passed:
                entry.update(status="failed", reason=f"parity gate failed: {kept.parity['reason']}")
            elif session is not None and kept.label in session.checked:
                _measured(entry, session, kept.label)
        shutil.rmtree(self.root / INT8_CANDIDATES, ignore_errors=True)

    def measure(self, artifacts: list[dict[str, Any]]) -> Session | None:
        """Profile every artifact that passed (and every passing INT8 recipe) in ONE side-by-side session.

        The FP32 ONNX file comes first; each entry gets its Profile, its latency interval, its ratio to each
        FP32 artifact and the budget verdict of `check_side_by_side`. Returns None when the session failed
        (its error is recorded on the entries).
        """
        import profilers

        from compressor.models.on_target import check_side_by_side

        models = {a["file"]: str(self.root / a["file"]) for a in artifacts
                  if a["status"] == "ok" and a["parity"]["passed"]}
        if self.int8_pending:
            models.update({t.label: str(self.root / INT8_CANDIDATES / t.label) for t in self.int8_trials if t.passed})
        if not models:
            return None
        self.say(f"profiling {len(models)} artifacts side by side on {self.target.name}")
        seconds = None if self.config.profile_max_seconds is None else self.config.profile_max_seconds * len(models)
        try:
            session = check_side_by_side(models, self.target, self.input_shape, seconds=seconds,
                                         memory=self.config.profile_memory, name="export")
        except profilers.ProfileError as exc:
            for entry in artifacts:
                if entry["file"] in models or (entry["format"] == "int8" and self.int8_pending):
                    entry["profile_error"] = first_line(exc)
            return None
        for entry in artifacts:
            if entry["file"] in session.checked:
                _measured(entry, session, entry["file"])
        return session


@dataclass(frozen=True)
class Splits:
    """The gate's data (validation: decides) and the reported data (test), each with PyTorch's logits."""

    val_x: np.ndarray
    val_y: np.ndarray
    val_reference: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_reference: np.ndarray


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def _session_record(session: Session) -> dict[str, Any]:
    """The session every latency figure of the bundle comes from (ids, mode, models, rounds, warnings)."""
    record = dict(next(iter(session.checked.values())).session)
    record["fp32_reference"] = FILE_NAMES["onnx"] if FILE_NAMES["onnx"] in session.checked else None
    if record["mode"] == "sequential":
        record["note"] = SEQUENTIAL_NOTE
    return record


def _flat(found: tuple[float, tuple[float, float]]) -> tuple[float, float, float]:
    return found[0], *found[1]


def _measured(entry: dict[str, Any], session: Session, label: str) -> None:
    """Write the session's figures of `label` into `entry`: profile, latency interval, ratios, budget verdict."""
    checked = session.checked[label]
    profile = dict(checked.profile, model=entry["file"])
    fp32 = [f for f in session.checked if f in (FILE_NAMES[x] for x in FP32)]
    percentile = session.comparison.percentile
    low, high = checked.latency_interval
    entry.update(
        profile=profile,
        latency={"percentile": percentile, "value": checked.latency_ms, "low": low, "high": high},
        ratio_to_fp32={f: dict(zip(("value", "low", "high"), _flat(session.ratio(label, f, percentile)))) for f in fp32},
        budget=checked.verdict_fields(),
        over_budget=checked.reasons,
    )
    if session.comparison.mode == "sequential":
        entry["notes"].append(SEQUENTIAL_NOTE)


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
