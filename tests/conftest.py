"""Shared fixtures: tiny hand-built ONNX models, fast measurement settings and a tiny teacher.

`make_conv_gemm_model` builds input[N,3,8,8] -> Conv(4 filters, 3x3, pad 1) ->
Relu -> Flatten -> Gemm(256 -> 10) with onnx.helper, so its parameters and
MACs can be computed by hand in a test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_conv_gemm_model(batch: int | str = "N", *, seed: int = 0) -> onnx.ModelProto:
    """Conv(3->4, 3x3, pad 1) + Relu + Flatten + Gemm(256->10) on [batch, 3, 8, 8]."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.standard_normal((10, 256)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_gemm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def tiny_onnx(tmp_path):
    """Path of the Conv+Gemm model (dynamic batch) written to a temporary folder."""
    path = tmp_path / "tiny.onnx"
    onnx.save(make_conv_gemm_model(), str(path))
    return path


@pytest.fixture
def fast_target():
    """cpu-1t with measurement settings small enough for a test (a fraction of a second)."""
    from targets import load_target

    target = load_target("cpu-1t")
    return dataclasses.replace(
        target,
        measure=dataclasses.replace(target.measure, warmup_runs=2, min_runs=20, min_seconds=0.05, max_seconds=0.3),
    )


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> str:
    """A real (tiny, briefly trained) teacher checkpoint made with the project's own trainer."""
    import torch

    from compressor.models.checkpoint import Checkpoint, save_checkpoint
    from compressor.data.datasets import load_dataset
    from compressor.train.distill import TrainConfig, train_student
    from compressor.spaces import build_model, spec_from_ref

    torch.set_num_threads(1)
    data = load_dataset("digits", image_size=16, channels=1)
    spec = spec_from_ref("zoo:plain", seed=0)
    model = build_model(spec, data.input_shape, data.num_classes)
    result = train_student(model, data, TrainConfig(epochs=2, seed=0), evaluate_test=False)
    assert result.status == "ok"
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, Checkpoint(model.state_dict(), spec.to_json(), data.num_classes, data.input_shape))
    return str(path)


# Ten times the runtime's per-call floor: room for the space's small networks on any CPU, and none of
# the wide ones a loose budget lets fit-to-budget, the baseline's width choice and the winner's fill
# grow to (their trainings, not the search, were most of the slow layer's time).
TIGHT_FLOOR_MULTIPLE = 10


@pytest.fixture(scope="session")
def tight_latency_ms(quick_target) -> float:
    """A latency budget (ms p50, 16x16 grey input) of `TIGHT_FLOOR_MULTIPLE` x this machine's floor."""
    from compressor.models.on_target import check_floor
    from targets import load_target

    return TIGHT_FLOOR_MULTIPLE * check_floor(load_target(quick_target), (1, 16, 16))


@pytest.fixture(scope="session")
def tight_latency_x_ref(quick_target, tight_latency_ms) -> float:
    """`tight_latency_ms` as a multiple of the drift reference (16x16 grey input, 10 classes), measured now."""
    from compressor.models.on_target import DriftReference
    from targets import load_target

    return tight_latency_ms / DriftReference.start(load_target(quick_target), (1, 16, 16), 10).start_ms


# cpu-1t's runtime and threads, measuring a few hundredths of a second per model and on any core (two
# test processes would otherwise measure on the same one): a side-by-side session of a test takes a
# fraction of a second, and a pipeline test runs dozens.
QUICK_TARGET = """name = "cpu-1t-quick"
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


@pytest.fixture(scope="session")
def quick_target(tmp_path_factory) -> str:
    """The path of `QUICK_TARGET` as a TOML file."""
    path = tmp_path_factory.mktemp("targets") / "cpu-1t-quick.toml"
    path.write_text(QUICK_TARGET)
    return str(path)
