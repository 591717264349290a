"""Profilers: statistics, checked loading, static analysis by hand, the ORT backend, TensorRT gated."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import onnx
import pytest
from conftest import make_conv_gemm_model
from onnx import TensorProto, helper, numpy_helper

import profilers
from profilers.backends.memprobe import session_options
from profilers.profile import LatencyStats, Profile
from profilers.stats import summarize
from targets import GRAPH_OPTIMIZATION_LEVELS, load_target

# Hand count for make_conv_gemm_model (input 1x3x8x8):
#   Conv: weight 4*3*3*3 = 108, bias 4; output 1x4x8x8 = 256 values, each 3*3*3 = 27 MACs -> 6912
#   Gemm: weight 10*256 = 2560, bias 10; 10 outputs, each 256 MACs -> 2560
CONV_GEMM_PARAMS = 108 + 4 + 2560 + 10
CONV_GEMM_MACS = 256 * 27 + 10 * 256


def test_summarize_nearest_rank():
    samples = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted
    latency = summarize(samples)
    assert (latency["p50"], latency["p90"], latency["p99"]) == (50.0, 90.0, 99.0)
    assert latency["min"] == 1.0 and latency["max"] == 100.0 and latency["n"] == 100
    assert latency["mean"] == pytest.approx(50.5)
    assert latency["std"] == pytest.approx(np.std(samples, ddof=1))
    assert latency["cv"] == pytest.approx(latency["std"] / 50.5)
    assert summarize([2.0])["std"] == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_static_analysis_matches_hand_count(tiny_onnx):
    result = profilers.static_analysis(tiny_onnx)
    assert result["params"] == CONV_GEMM_PARAMS
    assert result["macs"] == CONV_GEMM_MACS
    assert result["model_size_mb"] == pytest.approx(os.path.getsize(tiny_onnx) / 2**20)
    assert result["unresolved_mac_nodes"] == 0
    # MACs are per batch: four inputs cost four times as much; parameters do not change.
    batch4 = profilers.static_analysis(tiny_onnx.read_bytes(), input_shape=(4, 3, 8, 8))
    assert batch4["macs"] == 4 * CONV_GEMM_MACS and batch4["params"] == CONV_GEMM_PARAMS


def test_static_analysis_matmul_and_grouped_conv():
    # x[2,6,5,5] -> Conv(groups=3, 6->6, 3x3, no pad) -> [2,6,3,3]; MatMul of a [2,3] by [3,7].
    conv_w = numpy_helper.from_array(np.ones((6, 2, 3, 3), np.float32), "w")
    mm_b = numpy_helper.from_array(np.ones((3, 7), np.float32), "b")
    shape_const = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], group=3),
            helper.make_node("Reshape", ["a", "shape"], ["a2"]),
            helper.make_node("MatMul", ["a2", "b"], ["z"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 5, 5]),
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [6]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, 3, 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 7]),
        ],
        initializer=[conv_w, mm_b, shape_const],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = profilers.static_analysis(model)
    # Conv: 2*6*3*3 outputs x (6/3 channels * 9) = 108 * 18; MatMul: 2*7 outputs x 3.
    assert result["macs"] == 108 * 18 + 2 * 7 * 3
    assert result["params"] == 6 * 2 * 9 + 3 * 7  # the int64 shape tensor is not a parameter


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"this is plainly a text file, not a model\n" * 3, "not an ONNX model"),
    ],
)
def test_load_refuses_non_onnx(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(profilers.ProfileError, match=message):
        profilers.load_onnx_checked(path)


def test_load_refuses_missing_truncated_and_invalid(tmp_path, tiny_onnx):
    with pytest.raises(profilers.ProfileError, match="does not exist"):
        profilers.load_onnx_checked(tmp_path / "missing.onnx")
    data = tiny_onnx.read_bytes()
    for cut in (len(data) // 2, len(data) - 7, 40):
        with pytest.raises(profilers.ProfileError):
            profilers.load_onnx_checked(data[:cut])
    broken = make_conv_gemm_model()
    broken.graph.node[1].input[0] = "nowhere"  # Relu reads a tensor nothing produces
    with pytest.raises(profilers.ProfileError, match="onnx.checker"):
        profilers.load_onnx_checked(broken.SerializeToString())


def test_load_accepts_path_bytes_and_proto(tiny_onnx):
    for form in (tiny_onnx, str(tiny_onnx), tiny_onnx.read_bytes(), onnx.load(str(tiny_onnx))):
        assert profilers.load_onnx_checked(form).graph.name == "conv_gemm"


@pytest.mark.slow  # asking the tensorrt backend imports torch
def test_available_reports_each_runtime():
    assert profilers.available("onnxruntime") == (True, "")
    for runtime in profilers.runtimes():
        ok, why = profilers.available(runtime)
        assert isinstance(ok, bool) and (ok or why)
    ok, why = profilers.available("openvino")
    assert not ok and "unknown runtime" in why


def test_ort_backend_profile_contract(tiny_onnx, fast_target):
    profile = profilers.measure(tiny_onnx, fast_target, keep_samples=True)
    latency = profile["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert latency["n"] >= 1
    assert len(profile["latency_ms_samples"]) == latency["n"]
    assert profile["peak_memory_mb"] > 0
    assert profile["params"] == CONV_GEMM_PARAMS and profile["macs"] == CONV_GEMM_MACS
    assert profile["input_shape"] == [1, 3, 8, 8]
    assert profile["throughput_per_s"] == pytest.approx(1000 / latency["p50"])
    assert profile["target"] == "cpu-1t" and profile["runtime"] == "onnxruntime" and profile["model"] == "tiny.onnx"
    env = profile["environment"]
    assert env["intra_op_threads"] == 1 and env["affinity"] == [0] and env["onnxruntime"]
    assert isinstance(profile["warnings"], list)
    assert set(profile) == Profile.__required_keys__ | Profile.__optional_keys__
    assert set(latency) == set(LatencyStats.__annotations__)
    json.dumps(profile)  # the contract is JSON-serialisable
    # The measurement pinned only itself: the calling thread's CPUs are restored.
    assert sorted(os.sched_getaffinity(0)) == sorted(os.sched_getaffinity(os.getpid()))


def test_every_graph_optimization_level_configures_a_session(fast_target):
    from profilers.backends.ort import session_settings

    for level in GRAPH_OPTIMIZATION_LEVELS:
        options = session_options(session_settings(dataclasses.replace(fast_target, graph_optimization=level)))
        assert options.graph_optimization_level.name == GRAPH_OPTIMIZATION_LEVELS[level]


def test_ort_dynamic_batch_from_target_and_explicit_shape(tiny_onnx, fast_target):
    batch3 = dataclasses.replace(fast_target, batch_size=3)
    profile = profilers.measure(tiny_onnx.read_bytes(), batch3, memory=False)
    assert profile["input_shape"] == [3, 3, 8, 8] and profile["peak_memory_mb"] is None
    assert profile["macs"] == 3 * CONV_GEMM_MACS
    assert profile["throughput_per_s"] == pytest.approx(3000 / profile["latency_ms"]["p50"])
    explicit = profilers.measure(tiny_onnx, fast_target, input_shape=(2, 3, 8, 8), memory=False)
    assert explicit["input_shape"] == [2, 3, 8, 8]


def test_ort_input_shape_errors(tiny_onnx, fast_target):
    with pytest.raises(profilers.ProfileError, match="rank 3"):
        profilers.measure(tiny_onnx, fast_target, input_shape=(3, 8, 8), memory=False)
    with pytest.raises(profilers.ProfileError, match="axis 1"):
        profilers.measure(tiny_onnx, fast_target, input_shape=(1, 4, 8, 8), memory=False)


def test_dynamic_spatial_dim_needs_a_shape(tmp_path, fast_target):
    model = make_conv_gemm_model()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    with pytest.raises(profilers.ProfileError, match="dynamic dimension at axis 2"):
        profilers.measure(path, fast_target, memory=False)


def test_unavailable_target_is_a_profile_error(tiny_onnx):
    for name in ("gpu-trt-fp16", "rpi4-remote"):
        target = load_target(name)
        if profilers.available(target.runtime)[0] and name != "rpi4-remote":
            continue
        with pytest.raises(profilers.ProfileError, match="cannot run here"):
            profilers.measure(tiny_onnx, target)


@pytest.mark.slow  # imports torch
def test_torch_backend_measures_a_module(fast_target):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(256, 10))
    target = dataclasses.replace(fast_target, runtime="torch")
    profile = profilers.measure(model, target, input_shape=(1, 3, 8, 8))
    assert profile["runtime"] == "torch" and profile["params"] == CONV_GEMM_PARAMS
    assert profile["macs"] == CONV_GEMM_MACS
    assert profile["latency_ms"]["p50"] <= profile["latency_ms"]["p99"]
    with pytest.raises(profilers.ProfileError, match="torch.nn.Module"):
        profilers.measure(b"onnx bytes", target, input_shape=(1, 3, 8, 8))


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_profile(tiny_onnx):
    ok, why = profilers.available("tensorrt")
    if not ok:
        pytest.skip(f"TensorRT unavailable: {why}")
    target = load_target("gpu-trt-fp16").with_measure(max_seconds=0.5, min_seconds=0.1)
    profile = profilers.measure(tiny_onnx, target)
    assert profile["runtime"] == "tensorrt" and profile["macs"] == CONV_GEMM_MACS
    assert 0 < profile["latency_ms"]["p50"] <= profile["latency_ms"]["p99"]
    assert profile["peak_memory_mb"] >= 0 and profile["environment"]["engine_mb"] > 0


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_unavailable_reason():
    ok, why = profilers.available("tensorrt")
    if ok:
        pytest.skip("TensorRT is available here; the unavailable path cannot be observed")
    assert "tensorrt" in why or "GPU" in why or "torch" in why
