"""DEPLOY.md: what is in the bundle and a runnable snippet for the recommended artifact."""

from __future__ import annotations

from typing import Any


def render_deploy(manifest: dict[str, Any]) -> str:
    """The text of DEPLOY.md for a bundle's artifacts.json content."""
    target = manifest["target"]
    shape = ", ".join(str(d) for d in [target["batch_size"], *manifest["input_shape"]])
    by_file = {a["file"]: a for a in manifest["artifacts"]}
    recommended = by_file.get(manifest["recommended"]) if manifest["recommended"] else None
    lines = [
        f"# Deploying on `{target['name']}`",
        "",
        f"Input `{manifest['input_name']}`: float32, shape ({shape}) (any batch size), preprocessed exactly as for "
        f"training. Output `{manifest['output_name']}`: float32 class scores. PyTorch's test accuracy: "
        f"{manifest['reference']['test_accuracy']:.2%} on {manifest['reference']['samples']} samples.",
        "",
    ]
    if recommended is None:
        lines += [f"No artifact is recommended: {manifest['recommendation']}.", "", "See the table below and artifacts.json.", ""]
    else:
        lines += [f"**Use `{recommended['file']}`** — {manifest['recommendation']}.", ""]
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
        "| file | format | status | size MiB | max abs diff | top-1 agreement | accuracy | latency ms p50 | recommended |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for a in manifest["artifacts"]:
        p = a.get("parity") or {}
        prof = a.get("profile") or {}
        p50 = (prof.get("latency_ms") or {}).get("p50")
        status = a["status"] if a["status"] == "ok" else f"{a['status']}: {a.get('reason', '')}"
        lines.append(
            f"| {a['file']} | {a['format']} | {status} | {_num(a.get('size_mb'), '.2f')} | {_num(p.get('max_abs_diff'), '.2e')} "
            f"| {_num(p.get('top1_agreement'), '.2%')} | {_num(p.get('accuracy'), '.2%')} | {_num(p50, '.3f')} "
            f"| {'yes' if a['recommended'] else ''} |"
        )
    lines += ["", "`artifacts.json` has every figure: sha256, parity gate and thresholds, the full latency profile.", ""]
    return "\n".join(lines)


def _ort_snippet(file: str, fmt: str, manifest: dict[str, Any]) -> list[str]:
    target = manifest["target"]
    providers = target["providers"] if target["runtime"] in ("onnxruntime", "remote") else ["CPUExecutionProvider"]
    lines = [
        "```python",
        "import numpy as np",
        "import onnxruntime as ort",
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
        f"x = np.zeros(({', '.join(str(d) for d in [target['batch_size'], *manifest['input_shape']])}), dtype=np.float32)  # your batch",
        f"logits = session.run([{manifest['output_name']!r}], {{{manifest['input_name']!r}: x}})[0]",
        "predicted = logits.argmax(axis=1)",
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
        f"x = torch.zeros(({shape}), dtype=torch.float32, device='cuda')  # your batch",
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


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
