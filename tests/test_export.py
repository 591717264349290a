"""Export bundle: the parity gate's rule, the recommendation rule, the atomic write, logs and bad input.

Tests check rules, never one processor's outcome: whether INT8 keeps its
accuracy or which file is fastest depends on the CPU's instruction set and
speed, so the tests check that each verdict follows the recorded figures and
that the recommendation is the fastest eligible entry of the manifest, or a
simpler FP32 one it does not lead by the margin. Gate failures are forced
deterministically (an impossible threshold, scrambled weights) and
`recommend` is also run on synthetic entries.

`slow` tests use a small CNN trained for a few seconds on sklearn's digits
(8x8 images upsampled to 3x16x16); fast ones an untrained CNN on random
inputs. Artifacts are real ONNX Runtime files checked and profiled with the
real runtime on a quick one-thread CPU target.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch

from profilers.host import cache_root
from targets import availability, load_target

from compressor.errors import UserError
from compressor.export import FORMATS, ExportConfig, builders, default_formats, export_bundle, plan_formats, recommend
from compressor.export import parity as parity_mod
from compressor.export.bundle import library_log
from compressor.export.recommend import SPEED_MARGIN

FAST = ExportConfig(formats=("onnx", "ort", "int8", "fp16"), profile_memory=False)


@dataclass
class TinyDigits:
    num_classes: int
    input_shape: tuple[int, int, int]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
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
    return TinyDigits(10, (3, 16, 16), x[:1100], y[:1100], x[1100:1400], y[1100:1400], x[1400:], y[1400:])


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
def tiny_data() -> TinyDigits:
    """Random inputs and labels: enough for export mechanics, where accuracy does not matter."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(144, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (144,), generator=g)
    return TinyDigits(4, (3, 8, 8), x[:48], y[:48], x[48:96], y[48:96], x[96:], y[96:])


@pytest.fixture(scope="module")
def tiny_net() -> torch.nn.Module:
    """An untrained CNN (seeded): FP32 parity holds for any weights."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4),
    ).eval()


@pytest.fixture(scope="module")
def quick_target(quick_target):
    """conftest's quick target, loaded."""
    return load_target(quick_target)


@pytest.fixture(scope="module")
def bundle(model, digits, quick_target, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    return out, export_bundle(model, "test:tiny-cnn", digits, quick_target, out, FAST, checkpoint="tiny.pt")


def _gate_of(config: ExportConfig, fmt: str, p: dict) -> bool:
    """What the gate must conclude from the figures it recorded (the rule, restated independently)."""
    if fmt in ("onnx", "ort"):
        return p["max_abs_diff"] <= config.fp32_max_abs_diff and p["top1_agreement"] >= config.fp32_min_top1_agreement
    return bool(np.isfinite(p["max_abs_diff"])) and p["accuracy_drop"] <= config.max_accuracy_drop + 1e-12


@pytest.mark.slow
def test_every_format_is_gated_by_its_figures_and_profiled_if_it_passed(bundle):
    out, manifest = bundle
    assert manifest["reference"]["test_accuracy"] > 0.85, "the fixture model should be trained"
    by_format = {a["format"]: a for a in manifest["artifacts"]}
    assert set(by_format) == {"onnx", "ort", "int8", "fp16"}
    for fmt in ("onnx", "ort"):  # FP32 computes PyTorch's function on any CPU
        p = by_format[fmt]["parity"]
        assert p["passed"] and p["max_abs_diff"] < 1e-3 and p["top1_agreement"] >= 0.99, (fmt, p)
    assert by_format["fp16"]["parity"]["max_abs_diff"] > 0, "FP16 cannot be bit-identical to FP32"
    for entry in manifest["artifacts"]:
        p = entry["parity"]
        # INT8 may pass or fail depending on this CPU's integer kernels; either way the verdict follows the figures.
        assert p["passed"] == _gate_of(FAST, entry["format"], p), entry
        assert p["split"] == "val" and p["samples"] == manifest["reference"]["val_samples"] and p["gate"]
        test = entry["test_parity"]
        assert test["split"] == "test" and not test["decides"] and test["samples"] == manifest["reference"]["test_samples"]
        assert "passed" not in test, "the test split is reported, never gated"
        assert entry["sha256"] and entry["size_mb"] > 0
        if p["passed"]:
            assert entry["status"] == "ok" and "reason" not in p
            assert entry["profile"]["latency_ms"]["p50"] > 0 and entry["profile"]["model"] == entry["file"]
            assert entry["budget"]["session"] == manifest["session"]["id"], "every figure from the one session"
        else:
            assert entry["status"] == "failed" and entry["reason"] == f"parity gate failed: {p['reason']}"
            assert entry["profile"] is None and not entry["recommended"]


@pytest.mark.slow
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
    expected = ["DEPLOY.md", "artifacts.json", "export.log", *(a["file"] for a in on_disk["artifacts"])]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert not list(out.parent.glob(".bundle.*")), "no temporary directory left behind"


def _eligible(artifacts: list[dict]) -> list[dict]:
    """The candidates for the recommendation, from whatever the manifest says was measured."""
    measured = [a for a in artifacts if a["status"] == "ok" and a["parity"]["passed"] and a.get("latency")]
    pool = [a for a in measured if not a.get("over_budget")] or measured
    fp32 = [a for a in pool if a["format"] in ("onnx", "ort")]
    if not fp32:
        return pool
    best = min(fp32, key=lambda a: a["latency"]["value"])["file"]
    return [a for a in pool if a["format"] in ("onnx", "ort") or a["ratio_to_fp32"][best]["low"] <= 1]


def _expected_recommendation(artifacts: list[dict]) -> dict:
    """The fastest eligible artifact, or the first simpler FP32 one (in FORMATS order) it does not lead by the margin."""
    eligible = _eligible(artifacts)
    fastest = min(eligible, key=lambda a: a["latency"]["value"])
    order = list(FORMATS)
    tied = [a for a in eligible if a["format"] in ("onnx", "ort") and order.index(a["format"]) < order.index(fastest["format"])
            and fastest["ratio_to_fp32"][a["file"]]["high"] >= 1 - SPEED_MARGIN]
    return min(tied, key=lambda a: order.index(a["format"])) if tied else fastest


@pytest.mark.slow
def test_recommended_follows_the_rule_and_deploy_snippet_runs(bundle, digits, model, tmp_path):
    out, manifest = bundle
    recommended = [a for a in manifest["artifacts"] if a["recommended"]]
    assert len(recommended) == 1 and recommended[0]["file"] == manifest["recommended"]
    assert manifest["session"]["percentile"] == manifest["target"]["budgets"]["latency_percentile"]
    assert recommended[0] is _expected_recommendation(manifest["artifacts"])
    assert all(a["status"] == "ok" for a in recommended)
    deploy = (out / "DEPLOY.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", deploy, re.S).group(1)
    assert manifest["recommended"] in snippet
    from PIL import Image

    pixels = (digits.test_x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "digit.png")
    with torch.no_grad():
        expected = int(model(torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]).argmax())
    (tmp_path / "predict.py").write_text(snippet)
    # The user's copy-paste, run as written from the bundle directory on an image file.
    done = subprocess.run([sys.executable, str(tmp_path / "predict.py"), str(tmp_path / "digit.png")], cwd=out,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == manifest["class_names"][expected] == str(expected)


def test_an_impossible_gate_fails_the_artifact_keeps_its_figures_and_never_recommends_it(tiny_net, tiny_data, quick_target, tmp_path):
    # No accuracy drop can be <= -100 points: the FP16 gate fails on any machine.
    config = ExportConfig(formats=("onnx", "fp16"), max_accuracy_drop=-1.0, profile_memory=False)
    manifest = export_bundle(tiny_net, "tiny", tiny_data, quick_target, tmp_path / "b", config)
    onnx_entry, fp16 = manifest["artifacts"]
    assert fp16["status"] == "failed" and not fp16["recommended"] and fp16["profile"] is None
    assert fp16["reason"].startswith("parity gate failed: accuracy drop")
    p = fp16["parity"]
    assert not p["passed"] and p["gate"] == {"max_accuracy_drop": -1.0}
    assert p["accuracy_drop"] == pytest.approx(p["reference_accuracy"] - p["accuracy"]) and 0 <= p["top1_agreement"] <= 1
    assert hashlib.sha256((tmp_path / "b" / fp16["file"]).read_bytes()).hexdigest() == fp16["sha256"]
    assert manifest["recommended"] == onnx_entry["file"] == "model.onnx" and onnx_entry["profile"]


@pytest.mark.slow
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


def scramble_int8(monkeypatch) -> None:
    """Make every INT8 file built from now on permute its quantised conv weights: an artifact that disagrees
    with PyTorch on any CPU (the real builder runs first, so the file is a valid, checked QDQ model)."""
    real_build_int8 = builders.build_int8

    def build_then_corrupt(source, path, calibration, *, for_tensorrt, recipe):
        used = real_build_int8(source, path, calibration, for_tensorrt=for_tensorrt, recipe=recipe)
        broken = onnx.load(str(path))
        for init in broken.graph.initializer:
            weights = onnx.numpy_helper.to_array(init)
            if weights.dtype == np.int8 and weights.ndim > 1:  # scramble the quantised conv weights
                init.CopyFrom(onnx.numpy_helper.from_array(np.random.default_rng(0).permutation(weights.ravel()).reshape(weights.shape), init.name))
        onnx.save(broken, str(path))
        return used

    monkeypatch.setattr(builders, "build_int8", build_then_corrupt)


@pytest.mark.slow
def test_broken_artifact_in_a_bundle_is_failed_and_never_recommended(model, digits, quick_target, tmp_path, monkeypatch):
    scramble_int8(monkeypatch)
    manifest = export_bundle(model, "tiny", digits, quick_target, tmp_path / "b", ExportConfig(formats=("onnx", "int8"), profile_memory=False))
    int8 = next(a for a in manifest["artifacts"] if a["format"] == "int8")
    assert int8["status"] == "failed" and not int8["parity"]["passed"] and not int8["recommended"]
    assert "accuracy drop" in int8["reason"] and int8["parity"]["accuracy_drop"] > 0.01
    tried = int8["int8"]["tried"]
    assert tried and not any(t["passed"] for t in tried) and int8["profile"] is None
    assert int8["int8"]["recipe"]["name"] == min(tried, key=lambda t: t["validation"]["accuracy_drop"])["name"]
    assert manifest["recommended"] == "model.onnx"


def _entry(fmt: str, ms: float, passed: bool = True, spread: float = 0.01, percentile: str = "p50") -> dict:
    """A measured entry as the session writes it (ratios filled in by `_session`)."""
    return {"file": f"model.{fmt}", "format": fmt, "status": "ok" if passed else "failed", "parity": {"passed": passed},
            "profile": {"latency_ms": {percentile: ms}}, "spread": spread,
            "latency": {"percentile": percentile, "value": ms, "low": ms * (1 - spread), "high": ms * (1 + spread)}}


def _session(*artifacts: dict) -> list[dict]:
    """Each entry's ratio to every FP32 entry, with an interval as wide as the entry's `spread`."""
    fp32 = [a for a in artifacts if a["format"] in ("onnx", "ort")]
    for a in artifacts:
        a["ratio_to_fp32"] = {f["file"]: {"value": (r := a["latency"]["value"] / f["latency"]["value"]),
                                          "low": r * (1 - a["spread"]), "high": r * (1 + a["spread"])} for f in fp32}
    return list(artifacts)


def test_recommendation_rejects_int8_measurably_slower_than_fp32():
    artifacts = _session(_entry("onnx", 2.0), _entry("ort", 1.5), _entry("int8", 1.8))
    file, _ = recommend(artifacts)
    assert file == "model.ort"
    int8 = artifacts[2]
    assert not int8["recommended"] and "slower than FP32" in int8["notes"][0] and "model.ort" in int8["notes"][0]
    assert [a["recommended"] for a in artifacts] == [False, True, False]


def test_recommendation_decides_slower_with_the_ratios_interval():
    # 1.55 ms vs 1.5 ms: slower on the point estimate, but the interval [0.98, 1.09] contains 1.
    artifacts = _session(_entry("onnx", 2.0), _entry("ort", 1.5), _entry("int8", 1.55, spread=0.05))
    file, _ = recommend(artifacts)
    int8 = artifacts[2]
    assert file == "model.ort", "still the fastest point estimate"
    assert "not distinguishable" in int8["notes"][0] and not any("slower than FP32" in n for n in int8["notes"])
    artifacts = _session(_entry("onnx", 2.0), _entry("ort", 1.5), _entry("int8", 1.45, spread=0.05))
    file, why = recommend(artifacts)
    assert file == "model.ort", "the fastest point estimate, but x0.967 [0.918, 1.015] of model.ort: not faster"
    assert "model.int8 x0.967" in why and "not faster" in why
    artifacts = _session(_entry("onnx", 2.0), _entry("ort", 1.5), _entry("int8", 1.2, spread=0.05))
    assert recommend(artifacts)[0] == "model.int8", "a candidate, and faster by more than the margin"


def test_recommendation_ships_the_simpler_file_unless_the_faster_one_leads_by_the_margin():
    # model.ort x0.985 [0.975, 0.995] of model.onnx: faster within the session, by less than the 3% the ratio moves
    # between sessions, so the plain file, whichever point estimate is lower.
    artifacts = _session(_entry("onnx", 2.0), _entry("ort", 1.97))
    file, why = recommend(artifacts)
    assert file == "model.onnx" and [a["recommended"] for a in artifacts] == [True, False]
    assert "model.ort x0.985" in why
    fast = 2.0 * (1 - SPEED_MARGIN) / 1.01 * 0.999  # its ratio's upper bound just below 1 - SPEED_MARGIN
    artifacts = _session(_entry("onnx", 2.0), _entry("ort", fast))
    assert recommend(artifacts)[0] == "model.ort"
    assert recommend(_session(_entry("onnx", 2.0), _entry("ort", fast * 1.002)))[0] == "model.onnx"
    over = _session(_entry("onnx", 2.0), _entry("ort", 1.97))
    over[0]["over_budget"] = ["latency"]
    assert recommend(over)[0] == "model.ort", "a file over the budget is never preferred for being simpler"


def test_recommendation_prefers_faster_int8_but_never_a_failed_one():
    file, _ = recommend(_session(_entry("onnx", 2.0), _entry("int8", 0.5), _entry("fp16", 0.1, passed=False)))
    assert file == "model.int8"
    file, why = recommend(_session(_entry("onnx", 2.0, passed=False)))
    assert file is None and "no artifact" in why


def test_recommendation_uses_the_sessions_percentile():
    artifacts = _session(_entry("onnx", 9.0, percentile="p99"), _entry("ort", 2.0, percentile="p99"))
    file, why = recommend(artifacts)
    assert file == "model.ort" and "ms p99" in why


def test_crash_midway_keeps_the_old_bundle_and_leaves_no_partial(tiny_net, tiny_data, quick_target, tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    export_bundle(tiny_net, "tiny", tiny_data, quick_target, out, ExportConfig(formats=("onnx",), profile_memory=False))
    before = (out / "artifacts.json").read_text()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a user's Ctrl-C or a kill halfway through

    monkeypatch.setattr(builders, "build_int8", crash)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(tiny_net, "tiny", tiny_data, quick_target, out, ExportConfig(formats=("onnx", "int8"), profile_memory=False))
    assert (out / "artifacts.json").read_text() == before
    assert not (out / "model.int8.onnx").exists()
    with pytest.raises(KeyboardInterrupt):
        export_bundle(tiny_net, "tiny", tiny_data, quick_target, tmp_path / "fresh", ExportConfig(formats=("onnx", "int8")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_bad_input_is_refused_before_anything_is_written(tiny_net, tiny_data, quick_target, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="unknown export format 'onx'"):
        export_bundle(tiny_net, "tiny", tiny_data, quick_target, out, ExportConfig(formats=("onx",)))
    with pytest.raises(UserError, match="calibration data .* shape"):
        export_bundle(tiny_net, "tiny", tiny_data, quick_target, out, ExportConfig(formats=("int8",)), calibration=np.zeros((4, 1, 5, 5), np.float32))
    with pytest.raises(UserError, match="needs a TensorRT target"):
        export_bundle(tiny_net, "tiny", tiny_data, quick_target, out, ExportConfig(formats=("tensorrt",)))
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an export bundle"):
        export_bundle(tiny_net, "tiny", tiny_data, quick_target, out, ExportConfig(formats=("onnx",)))
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
def test_tensorrt_engine_is_gated_and_the_shipped_file_is_the_one_profiled(preset, tiny_net, tiny_data, tmp_path):
    target = load_target(preset)
    ok, why = availability(target)
    if not ok:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {why}")
    # Any accuracy drop passes, so the engine is profiled whatever this GPU's kernels round to.
    config = ExportConfig(max_accuracy_drop=1.0, profile_max_seconds=1.0, profile_memory=False)
    manifest = export_bundle(tiny_net, "tiny", tiny_data, target, tmp_path / "b", config)
    engine = next(a for a in manifest["artifacts"] if a["format"] == "tensorrt")
    assert engine["file"] == f"model.{target.precision}.engine"
    assert engine["status"] == "ok" and engine["parity"]["passed"] == _gate_of(config, "tensorrt", engine["parity"]), engine
    shipped = hashlib.sha256((tmp_path / "b" / engine["file"]).read_bytes()).hexdigest()
    assert engine["sha256"] == shipped == engine["profile"]["environment"]["engine_sha256"]
    assert list((cache_root() / "tensorrt").glob("*.timing")), "the timing cache is kept for the next build"


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


@pytest.mark.slow  # the first CLI call imports the whole command set
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
        ([str(student_checkpoint), "--formats", "int8", "--int8-recipes", "kl-perchannel-w8"], "unknown INT8 recipe"),
    ]
    for args, message in cases:
        code, _, err = _cli(["export", *args, *base], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "out").exists()


def test_recommendation_prefers_artifacts_within_budgets():
    artifacts = _session(_entry("onnx", 1.0), _entry("int8", 1.5))
    artifacts[0]["over_budget"] = ["size 8.50 MiB > 4 MiB"]
    artifacts[1]["over_budget"] = []
    file, why = recommend(artifacts)
    assert file == "model.int8" and "budgets" in why
    artifacts[1]["over_budget"] = ["size 4.20 MiB > 4 MiB"]
    file, why = recommend(artifacts)
    assert file == "model.onnx" and "no artifact meets" in why


def test_recommendation_skips_failed_and_skipped_entries_without_profiles():
    failed = {"file": "model.int8.onnx", "format": "int8", "status": "failed", "reason": "parity gate failed: x",
              "parity": {"passed": False, "accuracy_drop": 0.07}, "profile": None, "sha256": "ab", "size_mb": 0.1}
    skipped = {"file": "model.fp16.engine", "format": "tensorrt", "status": "skipped", "reason": "no GPU",
               "parity": {"passed": False}, "profile": None}
    unprofiled = {**_entry("ort", 0.1), "profile": None, "latency": None, "profile_error": "timed out"}
    artifacts = [*_session(_entry("onnx", 3.0)), failed, skipped, unprofiled]
    file, _ = recommend(artifacts)
    assert file == "model.onnx" and [a["recommended"] for a in artifacts] == [True, False, False, False]
    assert failed["reason"] and failed["parity"]["accuracy_drop"] == 0.07 and failed["sha256"] == "ab", "figures kept"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_next_export_removes_stale_temporaries_but_not_a_running_exports(tiny_net, tiny_data, quick_target, tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f".b.partial-{dead}", tmp_path / f".b.old-{dead}"]
    running = tmp_path / f".b.partial-{os.getppid()}"  # a live process that is not us: a concurrent export
    other = tmp_path / f".c.partial-{dead}"  # another bundle's business
    for path in (*stale, running, other):
        path.mkdir()
        (path / "model.onnx").write_bytes(b"half")
    export_bundle(tiny_net, "tiny", tiny_data, quick_target, tmp_path / "b", ExportConfig(formats=("onnx",), profile_memory=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b", running.name, other.name])


def test_library_logging_goes_to_the_bundle_log_not_the_terminal(tiny_net, tiny_data, quick_target, tmp_path, capfd, monkeypatch):
    real_build_int8 = builders.build_int8

    def noisy_build_int8(*args, **kwargs):
        logging.warning("third-party chatter")  # what onnxruntime.quantization does, on the root logger
        real_build_int8(*args, **kwargs)

    monkeypatch.setattr(builders, "build_int8", noisy_build_int8)
    export_bundle(tiny_net, "tiny", tiny_data, quick_target, tmp_path / "b", ExportConfig(formats=("onnx", "int8"), profile_memory=False))
    assert "third-party chatter" not in capfd.readouterr().err
    assert "third-party chatter" in (tmp_path / "b" / "export.log").read_text()
    handlers = logging.getLogger().handlers[:]
    with library_log(tmp_path / "x.log"):
        pass
    assert logging.getLogger().handlers == handlers, "the root logger is restored"


def test_int8_export_of_a_depthwise_network_prints_no_axis_warnings(tiny_data, quick_target, tmp_path, capfd,
                                                                     monkeypatch):
    import onnxruntime.quantization as quantization

    real_quantize, calls = quantization.quantize_static, []

    def recording_quantize(*args, **kwargs):
        calls.append(kwargs)
        return real_quantize(*args, **kwargs)

    monkeypatch.setattr(quantization, "quantize_static", recording_quantize)
    torch.manual_seed(0)
    # BatchNorm after ReLU stays unfused: its 1-D scale is where ORT guessed the channel axis wrong.
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.BatchNorm2d(8),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU(), torch.nn.BatchNorm2d(8),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4),
    ).eval()
    config = ExportConfig(formats=("onnx", "int8"), int8_recipes=("minmax-perchannel-w8", "entropy-perchannel-w7"),
                          profile_memory=False)
    manifest = export_bundle(net, "dw", tiny_data, quick_target, tmp_path / "b", config)
    assert "out-of-range" not in capfd.readouterr().err
    log = (tmp_path / "b" / "export.log").read_text()
    assert "out-of-range" not in log, "the per-channel axis of BatchNormalization scales is set, not guessed"
    # The axis of BatchNormalization's 1-D scale is declared to the quantiser, not left to its guess. Which
    # scales onnxruntime then quantises per channel is its own choice and differs between its versions
    # (1.30 keeps the second BatchNormalization per tensor, 1.32 does not), so the call is what is checked.
    per_channel_calls = [c for c in calls if c.get("per_channel")]
    assert per_channel_calls and all(
        c["extra_options"]["QDQOpTypePerChannelSupportToAxis"]["BatchNormalization"] == 0 for c in per_channel_calls)
    int8 = onnx.load(str(tmp_path / "b" / "model.int8.onnx"))
    assert any(n.op_type == "DequantizeLinear" for n in int8.graph.node)
    assert manifest["artifacts"][1]["sha256"]
