"""DEPLOY.md: what is in the bundle and a runnable snippet for the recommended artifact.

The snippet is a complete program (tests/test_preprocessing.py runs it as
written): it opens an image file with PIL, converts it to the model's
channels, resizes it bilinearly to the input size, divides by 255 (and
normalises only when the bundle was built without the normalisation folded
in), runs the recommended ONNX file with ONNX Runtime and prints the class
name, read from the file's own metadata (`compressor.class_names`).
"""

from __future__ import annotations

from typing import Any

from compressor.models.preprocessing import METADATA_CLASS_NAMES


def render_deploy(manifest: dict[str, Any]) -> str:
    """The text of DEPLOY.md for a bundle's artifacts.json content."""
    target = manifest["target"]
    shape = ", ".join(str(d) for d in [target["batch_size"], *manifest["input_shape"]])
    by_file = {a["file"]: a for a in manifest["artifacts"]}
    recommended = by_file.get(manifest["recommended"]) if manifest["recommended"] else None
    pre = manifest["preprocessing"]
    inside = manifest.get("normalisation_in_graph")
    mode = "grayscale (PIL mode L)" if pre["channels"] == 1 else "RGB (PIL mode RGB; alpha dropped)"
    steps = (f"convert the image to {mode}, resize it to {pre['size'][1]}x{pre['size'][0]} px ({pre['interpolation']}, "
             "aspect ratio not kept), divide the 8-bit pixels by 255")
    if pre["name"] != "none":
        steps += f", then subtract mean {_short(pre['mean'])} and divide by std {_short(pre['std'])} per channel"
    names = manifest["class_names"]
    lines = [
        f"# Deploying on `{target['name']}`",
        "",
        f"Input `{manifest['input_name']}`: float32, shape ({shape}) (any batch size), layout {pre['layout']}: "
        f"{steps}."
        + (f" The normalisation (mean {_short(inside['mean'])}, std {_short(inside['std'])}) is inside the model."
           if inside else "")
        + f" Output `{manifest['output_name']}`: float32 scores of {len(names)} classes in this order: "
        + ", ".join(f"`{n}`" for n in names[:20]) + (", ..." if len(names) > 20 else "")
        + f" (all in `artifacts.json` `class_names` and in each ONNX file's metadata `{METADATA_CLASS_NAMES}`). "
        f"PyTorch's accuracy: {manifest['reference']['val_accuracy']:.2%} on {manifest['reference']['val_samples']} "
        f"validation samples (the parity gates decide on these), {manifest['reference']['test_accuracy']:.2%} on "
        f"{manifest['reference']['test_samples']} test samples (reported only).",
        "",
    ]
    if recommended is None:
        lines += [f"No artifact is recommended: {manifest['recommendation']}.", "", "See the table below and artifacts.json.", ""]
    else:
        lines += [f"**Use `{recommended['file']}`** — {manifest['recommendation']}. Run from the bundle directory: "
                  "`python predict.py IMAGE` with the program below saved as predict.py "
                  "(needs numpy, onnxruntime and Pillow).", ""]
        if recommended["format"] == "tensorrt":
            lines += _tensorrt_snippet(recommended["file"], manifest)
            lines += ["", "The same network as ONNX, for ONNX Runtime:", ""]
            lines += _ort_snippet(recommended.get("source", "model.onnx"), "onnx", manifest)
        else:
            lines += _ort_snippet(recommended["file"], recommended["format"], manifest)
        for note in recommended.get("notes", []):
            lines.append(f"- {note}")
        lines.append("")
    lines += [
        "## Artifacts",
        "",
        "| file | format | status | size MiB | max abs diff (val) | top-1 agreement (val) | val accuracy | test accuracy "
        "| latency ms p50 | x FP32 ONNX | recommended |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a in manifest["artifacts"]:
        p = a.get("parity") or {}
        prof = a.get("profile") or {}
        p50 = (prof.get("latency_ms") or {}).get("p50")
        test = (a.get("test_parity") or {}).get("accuracy")
        ratio = (a.get("ratio_to_fp32") or {}).get("model.onnx")
        vs_fp32 = "" if ratio is None else f"{ratio['value']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]"
        status = a["status"] if a["status"] == "ok" else f"{a['status']}: {a.get('reason', '')}"
        lines.append(
            f"| {a['file']} | {a['format']} | {status} | {_num(a.get('size_mb'), '.2f')} | {_num(p.get('max_abs_diff'), '.2e')} "
            f"| {_num(p.get('top1_agreement'), '.2%')} | {_num(p.get('accuracy'), '.2%')} | {_num(test, '.2%')} "
            f"| {_num(p50, '.3f')} | {vs_fp32} | {'yes' if a['recommended'] else ''} |"
        )
    lines += ["", "Latencies and ratios come from one side-by-side session (`session` in artifacts.json; ratio "
              "with its 95% interval). `artifacts.json` has every figure: sha256, parity gate and thresholds, the "
              "INT8 recipes tried, the full latency profile.", ""]
    return "\n".join(lines)


def _ort_snippet(file: str, fmt: str, manifest: dict[str, Any]) -> list[str]:
    target = manifest["target"]
    pre = manifest["preprocessing"]
    providers = target["providers"] if target["runtime"] in ("onnxruntime", "remote") else ["CPUExecutionProvider"]
    lines = [
        "```python",
        "import json",
        "import sys",
        "",
        "import numpy as np",
        "import onnxruntime as ort",
        "from PIL import Image",
        "",
        "options = ort.SessionOptions()",
    ]
    if target.get("threads"):
        lines.append(f"options.intra_op_num_threads = {target['threads']}")
    if fmt == "ort":
        lines.append("# Already optimised offline for this hardware: skip optimising again at load time.")
        lines.append("options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL")
    lines += [
        f"session = ort.InferenceSession({file!r}, options, providers={list(providers)!r})",
        f"class_names = json.loads(session.get_modelmeta().custom_metadata_map[{METADATA_CLASS_NAMES!r}])",
        "",
        f"image = Image.open(sys.argv[1]).convert({'L' if pre['channels'] == 1 else 'RGB'!r})",
        f"image = image.resize(({pre['size'][1]}, {pre['size'][0]}), Image.{pre['interpolation'].upper()})",
        "x = np.asarray(image, dtype=np.float32) / 255.0" + (
            "  # raw pixels in [0, 1]: the normalisation is inside the model" if pre["name"] == "none" else ""),
    ]
    if pre["name"] != "none":
        lines.append(f"x = (x - np.array({pre['mean']}, dtype=np.float32)) / np.array({pre['std']}, dtype=np.float32)")
    lines += [
        "x = x[None, None] if x.ndim == 2 else x.transpose(2, 0, 1)[None]  # (H, W[, C]) -> (1, C, H, W)",
        f"logits = session.run([{manifest['output_name']!r}], {{{manifest['input_name']!r}: x}})[0]",
        "print(class_names[int(logits[0].argmax())])",
        "```",
    ]
    return lines


def _tensorrt_snippet(file: str, manifest: dict[str, Any]) -> list[str]:
    shape = ", ".join(str(d) for d in [manifest["target"]["batch_size"], *manifest["input_shape"]])
    return [
        "```python",
        "import tensorrt as trt",
        "import torch",
        "",
        "logger = trt.Logger(trt.Logger.WARNING)",
        f"engine = trt.Runtime(logger).deserialize_cuda_engine(open({file!r}, 'rb').read())",
        "context = engine.create_execution_context()",
        f"x = torch.zeros(({shape}), dtype=torch.float32, device='cuda')  # your batch, prepared as for ONNX below",
        f"context.set_input_shape({manifest['input_name']!r}, tuple(x.shape))",
        f"logits = torch.empty(tuple(context.get_tensor_shape({manifest['output_name']!r})), device='cuda')",
        f"context.set_tensor_address({manifest['input_name']!r}, x.data_ptr())",
        f"context.set_tensor_address({manifest['output_name']!r}, logits.data_ptr())",
        "stream = torch.cuda.Stream()",
        "context.execute_async_v3(stream.cuda_stream)",
        "stream.synchronize()",
        "predicted = logits.argmax(dim=1)",
        "```",
    ]


def _short(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
