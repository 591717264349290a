"""Teachers: checkpoint, ONNX (same logits as its PyTorch source), refusals. Fixtures shared with test_distill."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.models.checkpoint import Checkpoint, save_checkpoint
from compressor.data.datasets import load_dataset
from compressor.errors import UserError
from compressor.models.build import build_from_arch
from compressor.models.teachers import load_teacher

SMALL = dict(image_size=8, channels=1)  # the digits at their native 8 px: fast


@pytest.fixture(scope="module")
def small_data():
    torch.set_num_threads(1)
    return load_dataset("digits", **SMALL)


@pytest.fixture()
def teacher_ckpt(tmp_path, small_data) -> Path:
    torch.manual_seed(0)
    arch = "zoo:plain:widths=8-8-8"
    model = build_from_arch(arch, small_data.num_classes, small_data.input_shape)
    path = tmp_path / "teacher.pt"
    from compressor.spaces import spec_from_ref

    save_checkpoint(path, Checkpoint(model.state_dict(), spec_from_ref(arch).to_json(), small_data.num_classes,
                                     small_data.input_shape))
    return path


def test_onnx_teacher_matches_its_pytorch_source(tmp_path, small_data, teacher_ckpt):
    from compressor.models.onnx_export import export_onnx

    torch_teacher = load_teacher(str(teacher_ckpt), num_classes=10, input_shape=small_data.input_shape)
    onnx_path = tmp_path / "teacher.onnx"
    export_onnx(torch_teacher.module, (1, *small_data.input_shape), onnx_path)
    onnx_teacher = load_teacher(str(onnx_path), num_classes=10, input_shape=small_data.input_shape)
    x = small_data.test_x[:100]
    assert torch.allclose(onnx_teacher.logits(x), torch_teacher.logits(x), atol=1e-4)
    with pytest.raises(UserError, match="has 10 outputs but the data has 3 classes"):
        load_teacher(str(onnx_path), num_classes=3, input_shape=small_data.input_shape)
    # A fixed input size is the teacher's own: the data are read again at it, not refused.
    assert load_teacher(str(onnx_path), num_classes=10, input_shape=(3, 16, 16)).input_shape == (1, 8, 8)


class Payload:
    """Anything pickled that is not plain data; must never be instantiated by loading."""

    def __reduce__(self):
        return (print, ("executed!",))


def test_pickled_payload_is_refused(tmp_path, small_data):
    path = tmp_path / "evil.pt"
    torch.save({"format": "compressor-checkpoint/1", "state_dict": {}, "arch": Payload()}, path)
    with pytest.raises(UserError, match="refused"):
        load_teacher(str(path), num_classes=10, input_shape=small_data.input_shape)
    with pytest.raises(UserError, match="refused"):
        load_teacher("torchvision:resnet18", weights=str(path), num_classes=10, input_shape=small_data.input_shape)


def test_teacher_class_mismatch_is_refused(teacher_ckpt, small_data):
    with pytest.raises(UserError, match="has 10 outputs but the data has 4 classes"):
        load_teacher(str(teacher_ckpt), num_classes=4, input_shape=small_data.input_shape)
