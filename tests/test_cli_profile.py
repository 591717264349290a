"""`compressor profile`: the happy paths and every bad-input path (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import pickle

import onnx
import pytest
from conftest import make_conv_gemm_model

from compressor.cli import main

FAST = ["--max-seconds", "0.3"]


def _fails(capsys, argv: list[str], fragment: str) -> None:
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err


def _fast_target_file(tmp_path) -> str:
    path = tmp_path / "fast.toml"
    path.write_text(
        'name = "fast-1t"\nkind = "edge"\nruntime = "onnxruntime"\nthreads = 1\ncpu_affinity = [0]\n'
        "[measure]\nwarmup_runs = 2\nmin_runs = 20\nmin_seconds = 0.05\nmax_seconds = 0.3\n"
    )
    return str(path)


def test_profile_json_is_the_profile_contract(capsys, tiny_onnx, tmp_path):
    assert main(["profile", str(tiny_onnx), "--target", _fast_target_file(tmp_path), "--json", *FAST]) == 0
    profile = json.loads(capsys.readouterr().out)
    for key in ("target", "runtime", "model", "input_shape", "latency_ms", "throughput_per_s", "peak_memory_mb",
                "model_size_mb", "params", "macs", "environment", "warnings"):
        assert key in profile
    assert profile["target"] == "fast-1t" and profile["peak_memory_mb"] > 0
    assert set(profile["latency_ms"]) == {"p50", "p90", "p99", "mean", "std", "min", "max", "cv", "n"}


@pytest.mark.slow
def test_profile_several_targets_side_by_side(capsys, tiny_onnx, tmp_path):
    fast = _fast_target_file(tmp_path)
    argv = ["profile", str(tiny_onnx), "--target", fast, "--target", "cpu", "--no-memory", "--latency-ms", "1000", *FAST]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fast-1t" in out and "cpu" in out and "p99 ms" in out and "within latency budget" in out
    assert main([*argv, "--json"]) == 0
    profiles = json.loads(capsys.readouterr().out)
    assert [p["target"] for p in profiles] == ["fast-1t", "cpu"]


@pytest.mark.slow
def test_profile_torchvision_model(capsys, tmp_path):
    argv = ["profile", "torchvision:resnet18", "--input-shape", "1x3x32x32", "--num-classes", "10",
            "--target", _fast_target_file(tmp_path), "--no-memory", "--json", *FAST]
    assert main(argv) == 0
    profile = json.loads(capsys.readouterr().out)
    assert profile["model"] == "torchvision:resnet18" and profile["input_shape"] == [1, 3, 32, 32]
    # ResNet-18's convolutions and fc with BatchNorm folded in: 11.17 M weights for 10 classes.
    assert 11_000_000 < profile["params"] < 11_300_000 and profile["macs"] > 30_000_000


@pytest.mark.slow
def test_profile_a_search_space_architecture(capsys, tmp_path):
    argv = ["profile", "nago", "--input-shape", "1x3x16x16", "--num-classes", "10",
            "--target", _fast_target_file(tmp_path), "--no-memory", "--json", *FAST]
    assert main(argv) == 0
    profile = json.loads(capsys.readouterr().out)
    assert profile["model"] == "nago" and profile["input_shape"] == [1, 3, 16, 16] and profile["params"] > 0


def test_missing_file(capsys, tmp_path):
    _fails(capsys, [str(tmp_path / "nope.onnx")], "does not exist")


def test_not_onnx(capsys, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("hello, this is not a model\n" * 10)
    _fails(capsys, [str(path)], "not an ONNX model")


def test_truncated_onnx(capsys, tmp_path, tiny_onnx):
    path = tmp_path / "cut.onnx"
    path.write_bytes(tiny_onnx.read_bytes()[: tiny_onnx.stat().st_size // 2])
    _fails(capsys, [str(path)], "error")


def test_model_failing_checker(capsys, tmp_path):
    model = make_conv_gemm_model()
    model.graph.node[1].input[0] = "nowhere"
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    _fails(capsys, [str(path)], "onnx.checker")


def test_hostile_pickle_is_never_unpickled(capsys, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.onnx"
    path.write_bytes(pickle.dumps(Payload()))
    _fails(capsys, [str(path)], "not an ONNX model")
    assert not marker.exists()


def test_wrong_rank_input_shape(capsys, tiny_onnx):
    _fails(capsys, [str(tiny_onnx), "--input-shape", "3x8x8"], "rank 3")
    _fails(capsys, [str(tiny_onnx), "--input-shape", "1x3xAx8"], "--input-shape")


def test_unavailable_runtime(capsys, tiny_onnx):
    _fails(capsys, [str(tiny_onnx), "--target", "rpi4-remote"], "cannot run here")


def test_unknown_target_and_architecture(capsys, tiny_onnx):
    _fails(capsys, [str(tiny_onnx), "--target", "nope"], "unknown target")
    _fails(capsys, ["resnet"], "an .onnx file or an architecture")


@pytest.mark.slow
def test_unknown_torchvision_architecture(capsys):
    _fails(capsys, ["torchvision:resnet19"], "resnet18")


def test_help_mentions_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["profile", "--help"])
    assert info.value.code == 0
    assert "torchvision:resnet18" in capsys.readouterr().out
