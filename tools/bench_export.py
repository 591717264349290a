"""Benchmark: what the export bundle buys over eager PyTorch on one CPU core.

For a NAGO student (the search space's default family, seed 0, or a checkpoint
the search produced, `--student`) and torchvision resnet18 / mobilenet_v2 at
32 px, each trained briefly on the digits data, in one run: torch eager vs
ONNX FP32 vs ORT-optimised vs INT8 latency (p50, batch 1) on target `cpu-1t`,
and each one's test accuracy. Every figure comes from the real code paths:
`profilers.measure` (torch backend for eager, onnxruntime for the files) and
`compressor.export.export_bundle` (parity and recommendation).

    .venv/bin/python tools/bench_export.py [--epochs 3] [--student CHECKPOINT|RUN_DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import profilers  # noqa: E402
from targets import load_target  # noqa: E402

from compressor.cli.console import print_table  # noqa: E402
from compressor.export import ExportConfig, export_bundle  # noqa: E402

TARGET = "cpu-1t"


def train(model: torch.nn.Module, dataset, epochs: int, seed: int = 0) -> torch.nn.Module:
    """A short supervised run (Adam, batch 64), then BatchNorm statistics re-estimated for the final weights."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(dataset.train_y))
        for i in range(0, len(order), 64):
            batch = order[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(dataset.train_x[batch]), dataset.train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for layer in model.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
            layer.momentum = None
    with torch.no_grad():
        for i in range(0, len(dataset.train_y), 256):
            model(dataset.train_x[i : i + 256])
    return model.eval()


def candidates(dataset, args):
    import torchvision

    from compressor.spaces import build_model, spec_from_ref

    if args.student:
        from compressor.models.checkpoint import load_checkpoint
        from compressor.models.build import model_from_checkpoint

        path = Path(args.student)
        ckpt = load_checkpoint(path / "best.pt" if path.is_dir() else path)
        yield "student (search)", ckpt.arch, model_from_checkpoint(ckpt).eval()
    else:
        spec = spec_from_ref("nago", seed=0)
        yield "student (nago seed 0)", spec.to_json(), train(build_model(spec, dataset.input_shape, dataset.num_classes), dataset, args.epochs)
    for name in ("resnet18", "mobilenet_v2"):
        net = getattr(torchvision.models, name)(num_classes=dataset.num_classes)
        yield name, f"torchvision:{name}", train(net, dataset, args.epochs)


def _why_not(artifact: dict) -> str:
    if artifact["status"] != "ok":
        return f"{artifact['format']} {artifact['status']}: {artifact.get('reason', '')}"
    if any("slower than FP32" in note for note in artifact.get("notes", [])):
        return f"{artifact['format']} slower than FP32"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per model (default 3)")
    parser.add_argument("--student", help="a checkpoint or compress RUN_DIR to use as the student")
    parser.add_argument("--max-seconds", type=float, default=5.0, help="time cap of each latency measurement")
    args = parser.parse_args()

    from compressor.data.datasets import load_dataset

    torch.set_num_threads(1)
    raw = load_dataset("digits", image_size=32, channels=3, seed=0)
    dataset = raw.normalised(raw.student_preprocessing())
    target = load_target(TARGET)
    eager_target = dataclasses.replace(target, name=f"{TARGET}-torch", runtime="torch")
    config = ExportConfig(formats=("onnx", "ort", "int8"), profile_max_seconds=args.max_seconds, profile_memory=False)
    rows = []
    started = time.perf_counter()
    for name, arch, model in candidates(dataset, args):
        shape = (target.batch_size, *dataset.input_shape)
        eager = profilers.measure(model, eager_target, input_shape=shape, max_seconds=args.max_seconds, memory=False)
        with tempfile.TemporaryDirectory() as tmp:
            manifest = export_bundle(model, arch, raw, target, Path(tmp) / "bundle", config,
                                     preprocessing=dataset.preprocessing)
        by_format = {a["format"]: a for a in manifest["artifacts"]}

        def p50(fmt: str):
            profile = by_format[fmt].get("profile")
            return profile["latency_ms"]["p50"] if profile else None

        eager_p50 = eager["latency_ms"]["p50"]
        recommended = next((a for a in manifest["artifacts"] if a["recommended"]), None)
        rows.append((
            name,
            eager_p50, p50("onnx"), p50("ort"), p50("int8"),
            manifest["reference"]["test_accuracy"],
            by_format["onnx"]["parity"].get("accuracy"),
            by_format["ort"]["parity"].get("accuracy"),
            by_format["int8"]["parity"].get("accuracy"),
            recommended["format"] if recommended else "none",
            eager_p50 / recommended["profile"]["latency_ms"]["p50"] if recommended else None,
            "; ".join(_why_not(a) for a in manifest["artifacts"] if _why_not(a)),
        ))
    print_table(
        f"export on {TARGET}, batch 1, p50 ms and test accuracy ({time.perf_counter() - started:.0f} s)",
        ["model", "torch ms", "onnx ms", "ort ms", "int8 ms", "acc torch", "acc onnx", "acc ort", "acc int8", "recommended", "speed-up vs torch", "not recommended"],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
