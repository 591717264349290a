"""Export bundle: each format's parity on a tiny digits CNN, the gate catching a broken
artifact, the recommendation rule, the atomic write and bad input.

The model is a small CNN trained for a few seconds on sklearn's digits (8x8 images
upsampled to 3x16x16); artifacts are real ONNX Runtime files checked and profiled
with the real runtime on a quick one-thread CPU target.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch

from targets import availability, load_target

from compressor.errors import UserError
from compressor.export import FORMATS, ExportConfig, builders, default_formats, export_bundle, plan_formats, recommend
from compressor.export import parity as parity_mod

QUICK_TARGET = """
name = "cpu-1t-quick"
kind = "edge"
runtime = "onnxruntime"
providers = ["CPUExecutionProvider"]
threads = 1
batch_size = 1
[measure]
warmup_runs = 3
min_runs = 10
min_seconds = 0.05
max_seconds = 0.3
"""
FAST = ExportConfig(formats=("onnx", "ort", "int8", "fp16"), profile_memory=False)


@dataclass
class TinyDigits:
    num_classes: int
    input_shape: tuple[int, int, int]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@pytest.fixture(scope="module")
def digits() -> TinyDigits:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=16, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return TinyDigits(10, (3, 16, 16), x[:1400], y[:1400], x[1400:], y[1400:])


@pytest.fixture(scope="module")
def model(digits) -> torch.nn.Module:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(8):
        for i in range(0, len(digits.train_y), 64):
            loss = torch.nn.functional.cross_entropy(net(digits.train_x[i : i + 64]), digits.train_y[i : i + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # Re-estimate BatchNorm statistics for the final weights (a few epochs leave them lagging).
    for layer in net.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None
    with torch.no_grad():
        net(digits.train_x)
    return net.eval()


@pytest.fixture(scope="module")
def quick_target(tmp_path_factory):
    path = tmp_path_factory.mktemp("target") / "quick.toml"
    path.write_text(QUICK_TARGET)
    return load_target(path)


@pytest.fixture(scope="module")
def bundle(model, digits, quick_target, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    return out, export_bundle(model, "test:tiny-cnn", digits, quick_target, out, FAST, checkpoint="tiny.pt")


def test_every_format_passes_its_gate_and_is_profiled(bundle):
    out, manifest = bundle
    assert manifest["reference"]["test_accuracy"] > 0.85, "the fixture model should be trained"
    by_format = {a["format"]: a for a in manifest["artifacts"]}
    assert set(by_format) == {"onnx", "ort", "int8", "fp16"}
    for fmt in ("onnx", "ort"):
        p = by_format[fmt]["parity"]
        assert p["passed"] and p["max_abs_diff"] < 1e-3 and p["top1_agreement"] >= 0.99, (fmt, p)
    for fmt in ("int8", "fp16"):
        p = by_format[fmt]["parity"]
        assert p["passed"] and p["accuracy_drop"] <= 0.01, (fmt, p)
    assert by_format["fp16"]["parity"]["max_abs_diff"] > 0, "FP16 cannot be bit-identical to FP32"
    for entry in manifest["artifacts"]:
        assert entry["status"] == "ok"
        assert entry["profile"]["latency_ms"]["p50"] > 0
        assert entry["profile"]["model"] == entry["file"]


def test_bundle_files_match_the_manifest(bundle):
    out, manifest = bundle
    on_disk = json.loads((out / "artifacts.json").read_text())
    assert on_disk["recommended"] == manifest["recommended"] and on_disk["checkpoint"] == "tiny.pt"
    for entry in on_disk["artifacts"]:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["size_mb"] == pytest.approx(len(data) / 2**20)
        onnx.checker.check_model(str(out / entry["file"]))
    fp16 = onnx.load(str(out / "model.fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, "FP16 keeps float32 inputs"
    int8_ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= int8_ops
    assert sorted(p.name for p in out.iterdir()) == sorted(["DEPLOY.md", "artifacts.json", *(a["file"] for a in on_disk["artifacts"])])
    assert not list(out.parent.glob(".bundle.*")), "no temporary directory left behind"


def test_recommended_is_the_fastest_eligible_and_deploy_snippet_runs(bundle, digits, monkeypatch):
    out, manifest = bundle
    recommended = [a for a in manifest["artifacts"] if a["recommended"]]
    assert len(recommended) == 1 and recommended[0]["file"] == manifest["recommended"]
    fp32_best = min(a["profile"]["latency_ms"]["p50"] for a in manifest["artifacts"] if a["format"] in ("onnx", "ort"))
    eligible = [a for a in manifest["artifacts"]
                if a["format"] in ("onnx", "ort") or a["profile"]["latency_ms"]["p50"] <= fp32_best]
    assert recommended[0] is min(eligible, key=lambda a: a["profile"]["latency_ms"]["p50"])
    deploy = (out / "DEPLOY.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", deploy, re.S).group(1)
    assert manifest["recommended"] in snippet
    monkeypatch.chdir(out)
    scope: dict = {}
    exec(snippet, scope)  # the user's copy-paste, run as written
    assert scope["logits"].shape == (1, digits.num_classes)


def test_perturbed_weights_fail_the_gate(bundle, digits, model, tmp_path):
    out, _ = bundle
    broken = onnx.load(str(out / "model.onnx"))
    rng = np.random.default_rng(0)
    for init in broken.graph.initializer:
        weights = onnx.numpy_helper.to_array(init)
        if weights.dtype == np.float32 and weights.ndim > 1:
            init.CopyFrom(onnx.numpy_helper.from_array(weights + rng.normal(0, 0.05, weights.shape).astype(np.float32), init.name))
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    test_x = digits.test_x.numpy()
    figures = parity_mod.figures(parity_mod.torch_logits(model, test_x), parity_mod.ort_logits(tmp_path / "broken.onnx", test_x), digits.test_y.numpy())
    result = parity_mod.gate("onnx", figures, fp32_max_abs_diff=1e-3, fp32_min_top1_agreement=0.99, max_accuracy_drop=0.01)
    assert not result["passed"] and "max |diff|" in result["reason"]


def test_broken_artifact_in_a_bundle_is_failed_and_never_recommended(model, digits, quick_target, tmp_path, monkeypatch):
    real_build_int8 = builders.build_int8

    def build_then_corrupt(source, path, calibration, *, for_tensorrt):
        real_build_int8(source, path, calibration, for_tensorrt=for_tensorrt)
        broken = onnx.load(str(path))
        for init in broken.graph.initializer:
            weights = onnx.numpy_helper.to_array(init)
            if weights.dtype == np.int8 and weights.ndim > 1:  # scramble the quantised conv weights
                init.CopyFrom(onnx.numpy_helper.from_array(np.random.default_rng(0).permutation(weights.ravel()).reshape(weights.shape), init.name))
        onnx.save(broken, str(path))

    monkeypatch.setattr(builders, "build_int8", build_then_corrupt)
    manifest = export_bundle(model, "tiny", digits, quick_target, tmp_path / "b", ExportConfig(formats=("onnx", "int8"), profile_memory=False))
    int8 = next(a for a in manifest["artifacts"] if a["format"] == "int8")
    assert int8["status"] == "failed" and not int8["parity"]["passed"] and not int8["recommended"]
    assert "accuracy drop" in int8["reason"] and int8["parity"]["accuracy_drop"] > 0.01
    assert manifest["recommended"] == "model.onnx"


def _entry(fmt: str, p50: float, passed: bool = True) -> dict:
    return {"file": f"model.{fmt}", "format": fmt, "status": "ok" if passed else "failed",
            "parity": {"passed": passed}, "profile": {"latency_ms": {"p50": p50, "p90": p50 * 1.2}}}


def test_recommendation_rejects_int8_slower_than_fp32():
    artifacts = [_entry("onnx", 2.0), _entry("ort", 1.5), _entry("int8", 1.8)]
    file, _ = recommend(artifacts)
    assert file == "model.ort"
    int8 = artifacts[2]
    assert not int8["recommended"] and "slower than FP32" in int8["notes"][0]
    assert [a["recommended"] for a in artifacts] == [False, True, False]


def test_recommendation_prefers_faster_int8_but_never_a_failed_one():
    file, _ = recommend([_entry("onnx", 2.0), _entry("int8", 0.5), _entry("fp16", 0.1, passed=False)])
    assert file == "model.int8"
    file, why = recommend([_entry("onnx", 2.0, passed=False)])
    assert file is None and "no artifact" in why


def test_recommendation_uses_the_budget_percentile():
    artifacts = [_entry("onnx", 1.0), _entry("ort", 1.1)]
    artifacts[0]["profile"]["latency_ms"]["p99"] = 9.0
    artifacts[1]["profile"]["latency_ms"]["p99"] = 2.0
    assert recommend(artifacts, "p99")[0] == "model.ort"


def test_crash_midway_keeps_the_old_bundle_and_leaves_no_partial(model, digits, quick_target, tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    export_bundle(model, "tiny", digits, quick_target, out, ExportConfig(formats=("onnx",), profile_memory=False))
    before = (out / "artifacts.json").read_text()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a user's Ctrl-C or a kill halfway through

    monkeypatch.setattr(builders, "build_int8", crash)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(model, "tiny", digits, quick_target, out, ExportConfig(formats=("onnx", "int8"), profile_memory=False))
    assert (out / "artifacts.json").read_text() == before
    assert not (out / "model.int8.onnx").exists()
    with pytest.raises(KeyboardInterrupt):
        export_bundle(model, "tiny", digits, quick_target, tmp_path / "fresh", ExportConfig(formats=("onnx", "int8")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_bad_input_is_refused_before_anything_is_written(model, digits, quick_target, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="unknown export format 'onx'"):
        export_bundle(model, "tiny", digits, quick_target, out, ExportConfig(formats=("onx",)))
    with pytest.raises(UserError, match="calibration data .* shape"):
        export_bundle(model, "tiny", digits, quick_target, out, ExportConfig(formats=("int8",)), calibration=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(UserError, match="needs a TensorRT target"):
        export_bundle(model, "tiny", digits, quick_target, out, ExportConfig(formats=("tensorrt",)))
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an export bundle"):
        export_bundle(model, "tiny", digits, quick_target, out, ExportConfig(formats=("onnx",)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in out.iterdir()] == ["notes.txt"]


def test_default_formats_follow_the_target():
    assert default_formats(load_target("cpu-1t")) == ("onnx", "ort", "int8")
    assert default_formats(load_target("gpu-trt-fp16")) == ("onnx", "fp16", "tensorrt")
    assert default_formats(load_target("gpu-trt-int8")) == ("onnx", "int8", "tensorrt")
    assert default_formats(load_target("gpu-ort-cuda")) == ("onnx", "ort", "fp16")
    for preset in ("cpu", "cpu-1t", "gpu-trt-fp16", "rpi4-remote"):
        assert set(default_formats(load_target(preset))) <= set(FORMATS)


def test_tensorrt_by_default_is_skipped_with_the_reason_when_missing():
    target = load_target("gpu-trt-fp16")
    ok, why = availability(target)
    if ok:
        pytest.skip("TensorRT and a GPU are present: nothing is skipped")
    formats, skipped = plan_formats(target, ExportConfig())
    assert formats == ("onnx", "fp16", "tensorrt") and skipped["tensorrt"] == why
    with pytest.raises(UserError, match="cannot export format 'tensorrt'"):
        plan_formats(target, ExportConfig(formats=("tensorrt",)))


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("preset", ["gpu-trt-fp16", "gpu-trt-int8"])
def test_tensorrt_engine_passes_parity(preset, model, digits, tmp_path):
    target = load_target(preset)
    ok, why = availability(target)
    if not ok:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {why}")
    manifest = export_bundle(model, "tiny", digits, target, tmp_path / "b", ExportConfig(profile_max_seconds=1.0, profile_memory=False))
    engine = next(a for a in manifest["artifacts"] if a["format"] == "tensorrt")
    assert engine["file"] == f"model.{target.precision}.engine"
    assert engine["status"] == "ok" and engine["parity"]["passed"], engine
    assert (tmp_path / "b" / engine["file"]).stat().st_size > 0


@pytest.fixture(scope="module")
def student_checkpoint(tmp_path_factory):
    pytest.importorskip("compressor.data.datasets", reason="the data area is not in the tree yet")
    pytest.importorskip("compressor.models.build", reason="the models area is not in the tree yet")
    from compressor.models.checkpoint import Checkpoint, save_checkpoint
    from compressor.spaces import build_model, spec_from_ref

    torch.manual_seed(0)
    spec = spec_from_ref("nago", seed=0)
    net = build_model(spec, (3, 16, 16), 10)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, Checkpoint(state_dict=net.state_dict(), arch=spec.to_json(), num_classes=10, input_shape=(3, 16, 16)))
    return path


def _cli(argv, capsys):
    from compressor.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_exports_a_run_dir_and_prints_json(student_checkpoint, quick_target, tmp_path, capsys):
    out = tmp_path / "bundle"
    code, stdout, _ = _cli(["export", str(student_checkpoint.parent), "--target", quick_target.source, "--formats", "onnx,ort",
                            "--no-memory", "--out", str(out), "--json"], capsys)
    assert code == 0
    manifest = json.loads(stdout)
    assert [a["format"] for a in manifest["artifacts"]] == ["onnx", "ort"]
    assert all(a["parity"]["passed"] for a in manifest["artifacts"]) and manifest["recommended"]
    assert manifest["checkpoint"] == str(student_checkpoint) and (out / manifest["recommended"]).is_file()


def test_cli_bad_input_is_one_line_exit_2(student_checkpoint, quick_target, tmp_path, capsys):
    base = ["--target", quick_target.source, "--out", str(tmp_path / "out")]
    bare = tmp_path / "bare.pt"
    torch.save({"weight": torch.zeros(2)}, bare)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.zeros((4, 1, 8, 8), np.float32))
    cases = [
        ([str(student_checkpoint), "--formats", "onnx,webgpu"], "unknown export format"),
        ([str(tmp_path)], "without best.pt"),
        ([str(bare)], "not a compressor checkpoint"),
        ([str(student_checkpoint), "--formats", "int8", "--calib-data", str(calib)], "calibration data"),
        ([str(student_checkpoint), "--formats", "tensorrt"], "TensorRT"),
    ]
    for args, message in cases:
        code, _, err = _cli(["export", *args, *base], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "out").exists()


def test_recommendation_prefers_artifacts_within_budgets():
    artifacts = [_entry("onnx", 1.0), _entry("int8", 1.5)]
    artifacts[0]["over_budget"] = ["size 8.50 MiB > 4 MiB"]
    artifacts[1]["over_budget"] = []
    file, why = recommend(artifacts)
    assert file == "model.int8" and "budgets" in why
    artifacts[1]["over_budget"] = ["size 4.20 MiB > 4 MiB"]
    file, why = recommend(artifacts)
    assert file == "model.onnx" and "no artifact meets" in why
