"""Benchmark: what the export bundle buys, and which INT8 recipe wins on this CPU.

For a NAGO student (the search space's default family, seed 0, or a checkpoint
the search produced, `--student`) and torchvision resnet18 / mobilenet_v2 at
32 px, each trained briefly on the digits data, in one run: the bundle's
side-by-side session on target `cpu-1t` (FP32 ONNX, ORT-optimised and every
INT8 recipe that passed its validation gate, interleaved), the INT8 recipe
kept and the ones tried with their validation accuracy drops, the kept
recipe's speed as a ratio to FP32 ONNX with its 95% interval, and its
validation (gate) and test (reported) accuracy drops. For comparison, the
validation drop of the single recipe used before (MinMax, per-channel, 7-bit
weights), built and checked with the same code. Eager torch is measured on
its own (another runtime: not in the session). Every figure comes from the
real code paths: `compressor.export.export_bundle` (recipes, gates, the
session, the recommendation) and `profilers.measure` for eager torch.

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


def old_recipe_drop(model, raw, dataset, tmp: Path, config: ExportConfig) -> float:
    """Validation accuracy drop of the recipe used before (MinMax, per-channel, 7-bit weights), same code paths."""
    import numpy as np

    from compressor.export import builders, parity
    from compressor.export.int8 import Int8Recipe
    from compressor.models.preprocessing import normalising

    shipped = normalising(model, dataset.preprocessing)
    val_x = raw.val_x.numpy().astype(np.float32)
    builders.build_onnx(shipped, tuple(raw.input_shape), tmp / "old.onnx")
    rng = np.random.default_rng(config.seed)
    train_x = raw.train_x.numpy().astype(np.float32)
    calib = train_x[np.sort(rng.choice(len(train_x), size=min(config.calib_samples, len(train_x)), replace=False))]
    builders.build_int8(tmp / "old.onnx", tmp / "old.int8.onnx", calib, for_tensorrt=False,
                        recipe=Int8Recipe("minmax", True, True))
    figures = parity.figures(parity.torch_logits(shipped, val_x), parity.ort_logits(tmp / "old.int8.onnx", val_x),
                             raw.val_y.numpy())
    return figures["accuracy_drop"]


def _interval(r: dict | None) -> str:
    return "" if r is None else f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per model (default 3)")
    parser.add_argument("--student", help="a checkpoint or compress RUN_DIR to use as the student")
    parser.add_argument("--max-seconds", type=float, default=1.0, help="timed seconds per artifact in the session")
    args = parser.parse_args()

    from compressor.data.datasets import load_dataset
    from profilers.host import cpu_flags, cpu_model

    torch.set_num_threads(1)
    raw = load_dataset("digits", image_size=32, channels=3, seed=0)
    dataset = raw.normalised(raw.student_preprocessing())
    target = load_target(TARGET)
    eager_target = dataclasses.replace(target, name=f"{TARGET}-torch", runtime="torch")
    config = ExportConfig(formats=("onnx", "ort", "int8"), profile_max_seconds=args.max_seconds, profile_memory=False)
    rows, recipes = [], []
    started = time.perf_counter()
    for name, arch, model in candidates(dataset, args):
        shape = (target.batch_size, *dataset.input_shape)
        eager = profilers.measure(model, eager_target, input_shape=shape, max_seconds=args.max_seconds, memory=False)
        with tempfile.TemporaryDirectory() as tmp:
            manifest = export_bundle(model, arch, raw, target, Path(tmp) / "bundle", config,
                                     preprocessing=dataset.preprocessing)
            old_drop = old_recipe_drop(model, raw, dataset, Path(tmp), config)
        by_format = {a["format"]: a for a in manifest["artifacts"]}
        int8 = by_format["int8"]
        recommended = next((a for a in manifest["artifacts"] if a["recommended"]), None)
        onnx_ms = (by_format["onnx"].get("latency") or {}).get("value")
        rows.append((
            name,
            eager["latency_ms"]["p50"], onnx_ms,
            _interval((by_format["ort"].get("ratio_to_fp32") or {}).get("model.onnx")),
            int8["int8"]["recipe"]["name"] + ("" if int8["status"] == "ok" else " (failed)"),
            _interval((int8.get("ratio_to_fp32") or {}).get("model.onnx")),
            manifest["reference"]["val_accuracy"],
            int8["parity"].get("accuracy_drop"),
            (int8.get("test_parity") or {}).get("accuracy_drop"),
            old_drop,
            recommended["format"] if recommended else "none",
            "; ".join(_why_not(a) for a in manifest["artifacts"] if _why_not(a)),
        ))
        for t in int8["int8"]["tried"]:
            recipes.append((name, t["name"], t["passed"], (t.get("validation") or {}).get("accuracy_drop"),
                            (t.get("latency_ms") or {}).get("value"), _interval(t.get("ratio_to_fastest")),
                            t["name"] == int8["int8"]["recipe"]["name"]))
        print(f"{name}: {int8['int8']['why']} (recipe set: {int8['int8']['recipe_set']}; build and gate "
              f"{int8['int8']['build_and_gate_seconds']:.1f} s)", flush=True)
    flags = cpu_flags() or frozenset()
    print_table(
        f"export on {TARGET} ({cpu_model()}; vnni: {', '.join(sorted(f for f in flags if 'vnni' in f)) or 'none'}), "
        f"batch 1, p50 ({time.perf_counter() - started:.0f} s); ratios from one side-by-side session, drops in "
        "accuracy fractions",
        ["model", "torch ms", "onnx ms", "ort x onnx", "int8 recipe", "int8 x onnx", "val acc", "int8 val drop",
         "int8 test drop", "old recipe val drop", "recommended", "not recommended"],
        rows,
    )
    print_table("INT8 recipes tried (validation gate; latency from the session)",
                ["model", "recipe", "passed", "val drop", "p50 ms", "x fastest", "kept"], recipes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
