"""`compressor export CHECKPOINT|RUN_DIR --target T --out DIR`: the deployable, parity-checked bundle.

Loads a compressor checkpoint (or RUN_DIR/best.pt), rebuilds its network from
the stored ArchSpec, loads the dataset it was trained on (the parity gate on
the validation split, figures on the test split reported, INT8 calibration on
training samples) and calls `compressor.export.export_bundle`
with the preprocessing the checkpoint records (a checkpoint from before it was
recorded was trained on the training split's statistics, which are used).
Heavy imports (torch, onnxruntime) happen inside `run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compressor.cli.common import add_target_args, positive_float, positive_int, resolve_target
from compressor.cli.console import err_console, print_json, print_table
from compressor.errors import UserError
from targets.errors import first_line

FORMATS_HELP = "onnx,ort,int8,fp16,tensorrt"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a checkpoint as parity-checked, profiled ONNX/INT8/FP16/TensorRT artifacts",
        description="Build the deployable artifacts of a trained model for a target, gate each one "
        "against the PyTorch model on the validation split (the test split's figures are reported), profile "
        "the ones that pass side by side on the target and recommend the fastest. INT8 tries up to 4 "
        "quantisation recipes chosen by the CPU's features and keeps the fastest that passes. Writes DIR/artifacts.json, DIR/DEPLOY.md and the model files; an existing "
        "bundle in DIR is replaced only once the new one is complete. The dataset (--data) supplies the test split "
        "and calibration inputs; its image size and channels follow the checkpoint unless given.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT|RUN_DIR", help="a compressor checkpoint (.pt) or a run directory holding best.pt")
    add_target_args(parser)
    parser.add_argument("--formats", metavar="LIST", help=f"comma-separated, from {FORMATS_HELP} (default: by target: "
                        "CPU -> onnx,ort,int8; TensorRT -> onnx,fp16,tensorrt; other GPU -> onnx,ort,fp16)")
    parser.add_argument("--calib-data", metavar="FILE.npy", help="INT8 calibration inputs, a float32 array (N, C, H, W) "
                        "prepared as the artifacts take them: raw pixels / 255 (normalised with --no-fold-normalisation) "
                        "(default: a sample of the training split)")
    parser.add_argument("--no-fold-normalisation", action="store_true",
                        help="ship the bare network, which takes normalised inputs, instead of one that takes raw "
                             "pixels / 255 with the normalisation inside (the default)")
    parser.add_argument("--calib-samples", type=positive_int, default=128, help="calibration samples (default %(default)s)")
    parser.add_argument("--int8-recipes", metavar="LIST",
                        help="comma-separated INT8 recipes to try instead of the CPU's set, each "
                             "CALIBRATION-WEIGHTS-BITS: minmax|percentile|entropy, perchannel|pertensor, w7|w8 "
                             "(e.g. entropy-perchannel-w8; at most 4)")
    parser.add_argument("--max-accuracy-drop", type=positive_float, default=1.0, metavar="POINTS",
                        help="largest validation-accuracy loss in percentage points allowed for INT8/FP16/TensorRT (default %(default)s)")
    parser.add_argument("--fp32-max-abs-diff", type=positive_float, default=1e-3,
                        help="largest absolute logit difference allowed for FP32 artifacts (default %(default)s)")
    parser.add_argument("--profile-seconds", type=positive_float, metavar="S",
                        help="timed seconds per artifact in the side-by-side session (default: the target's min_seconds)")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory measurement (faster)")
    parser.add_argument("--out", required=True, metavar="DIR", help="bundle directory")
    parser.add_argument("--json", action="store_true", help="print artifacts.json on stdout")
    from compressor.data.datasets import add_data_args

    add_data_args(parser)
    # The checkpoint knows its input shape; the dataset follows it unless the user says otherwise.
    parser.set_defaults(func=run, image_size=None, channels=None)


def run(args: argparse.Namespace) -> int:
    from compressor.models.checkpoint import load_checkpoint
    from compressor.data.datasets import dataset_from_args
    from compressor.export import ExportConfig, export_bundle
    from compressor.models.build import model_from_checkpoint

    target = resolve_target(args.target, args)
    path = _checkpoint_path(Path(args.checkpoint))
    ckpt = load_checkpoint(path)
    if not ckpt.arch:
        raise UserError(f"{path}: the checkpoint stores no architecture (ArchSpec); re-save it with compressor")
    model = model_from_checkpoint(ckpt)
    channels, height, _ = ckpt.input_shape
    if args.image_size is None:
        args.image_size = height
    if args.channels is None:
        args.channels = channels
    dataset = dataset_from_args(args)
    preprocessing = ckpt.preprocessing or dataset.student_preprocessing()
    if tuple(dataset.input_shape) != tuple(ckpt.input_shape) or dataset.num_classes != ckpt.num_classes:
        raise UserError(
            f"the dataset gives inputs {tuple(dataset.input_shape)} with {dataset.num_classes} classes, but the checkpoint "
            f"expects {tuple(ckpt.input_shape)} with {ckpt.num_classes}; pass the --data/--image-size/--channels it was trained with"
        )
    config = ExportConfig(
        formats=_parse_list(args.formats, "--formats", FORMATS_HELP),
        int8_recipes=_parse_list(args.int8_recipes, "--int8-recipes", "minmax-perchannel-w8, entropy-perchannel-w8, ..."),
        max_accuracy_drop=args.max_accuracy_drop / 100.0,
        fp32_max_abs_diff=args.fp32_max_abs_diff,
        calib_samples=args.calib_samples,
        profile_max_seconds=args.profile_seconds,
        profile_memory=not args.no_memory,
        fold_normalisation=not args.no_fold_normalisation,
    )
    calibration = _load_calibration(args.calib_data) if args.calib_data else None
    with err_console.status("exporting", spinner="dots") as status:
        manifest = export_bundle(
            model, ckpt.arch, dataset, target, args.out, config,
            progress=lambda message: status.update(message),
            calibration=calibration,
            checkpoint=str(path),
            preprocessing=preprocessing,
        )
    if args.json:
        print_json(manifest)
        return 0
    print_artifacts(manifest)
    err_console.print(f"bundle written to {args.out} (artifacts.json, DEPLOY.md; library logs in export.log)")
    return 0


def print_artifacts(manifest: dict) -> None:
    """The bundle as a table: validation gate figures, test accuracy, side-by-side latency and ratio, status."""
    rows = []
    for a in manifest["artifacts"]:
        parity = a.get("parity") or {}
        latency = a.get("latency") or {}
        ratio = (a.get("ratio_to_fp32") or {}).get("model.onnx")
        if a["status"] != "ok":
            status = f"{a['status']}: {a.get('reason', '')}"
        elif any("slower than FP32" in n for n in a.get("notes", [])):
            status = "ok, slower than FP32"
        elif a.get("profile_error"):
            status = f"ok, not profiled: {a['profile_error']}"
        elif a.get("over_budget"):
            status = f"ok, over budget: {'; '.join(a['over_budget'])}"
        else:
            status = "ok"
        if a.get("int8", {}).get("recipe"):
            status += f" ({a['int8']['recipe']['name']})"
        rows.append((a["format"], a["file"], a.get("size_mb"), parity.get("max_abs_diff"), parity.get("accuracy"),
                     (a.get("test_parity") or {}).get("accuracy"), latency.get("value"),
                     None if ratio is None else f"{ratio['value']:.2f} [{ratio['low']:.2f}, {ratio['high']:.2f}]",
                     (a.get("profile") or {}).get("peak_memory_mb"), status, a["recommended"]))
    reference = manifest["reference"]
    percentile = (manifest.get("session") or {}).get("percentile", "p50")
    print_table(
        f"export for {manifest['target']['name']} (PyTorch accuracy: validation {reference['val_accuracy']:.2%}, "
        f"test {reference['test_accuracy']:.2%})",
        ["format", "file", "MiB", "max|Δ| val", "val acc", "test acc", f"{percentile} ms", "x FP32 [95%]", "peak MiB",
         "status", "recommended"],
        rows,
    )
    session = manifest.get("session")
    if session:
        err_console.print(f"latencies: one {session['mode']} side-by-side session of {len(session['models'])} models "
                          f"({session['rounds']} rounds); gates on {reference['val_samples']} validation samples")
        if session.get("note"):
            err_console.print(session["note"])
    for a in manifest["artifacts"]:
        int8 = a.get("int8") or {}
        if int8.get("tried"):
            tried = ", ".join(
                f"{t['name']} {'passed' if t['passed'] else 'failed'}"
                + (f" (drop {t['validation']['accuracy_drop'] * 100:.2f} pts)" if t.get("validation") else f" ({t['error']})")
                for t in int8["tried"])
            err_console.print(f"int8 recipes ({int8['recipe_set']}): {tried}; kept {int8['recipe']['name']}: {int8['why']}")
    if manifest["recommended"]:
        err_console.print(f"recommended: {manifest['recommended']} — {manifest['recommendation']}")
    else:
        err_console.print(f"no recommendation: {manifest['recommendation']}")


def _checkpoint_path(path: Path) -> Path:
    if path.is_dir():
        best = path / "best.pt"
        if not best.is_file():
            raise UserError(f"{path} is a directory without best.pt; pass a checkpoint file or a compress RUN_DIR")
        return best
    return path


def _parse_list(text: str | None, flag: str, choices: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    items = tuple(f.strip() for f in text.split(",") if f.strip())
    if not items:
        raise UserError(f"{flag} needs at least one of {choices}")
    return items


def _load_calibration(path: str):
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"--calib-data {path}: no such file") from None
    except (ValueError, OSError) as exc:
        raise UserError(f"--calib-data {path}: not a NumPy .npy array ({first_line(exc, 120)})") from None
    if not isinstance(data, np.ndarray):
        raise UserError(f"--calib-data {path}: expected one .npy array (N, C, H, W), got an archive of several")
    return data
