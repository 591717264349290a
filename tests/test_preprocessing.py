"""Bring your own teacher and data: the preprocessing contract, real data paths, self-describing artifacts.

Fast tests check the contract's rules (parsing, records, ONNX metadata, which
preprocessing a teacher gets and why, the teacher's own input size, the
accuracy hint, the small-image stem) and every real-data path on tiny PNG
files written here with PIL. Slow tests run the real thing: an ONNX teacher
trained here on raw pixels of a PNG ImageFolder, distilled through
`compressor compress` with the right and the wrong `--teacher-preprocess`,
and the DEPLOY.md snippet run as written on a PNG file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from compressor.cli import app as cli
from compressor.data.datasets import load_dataset
from compressor.errors import UserError
from compressor.models.preprocessing import (
    METADATA_CLASS_NAMES,
    METADATA_PREPROCESSING,
    PreprocessChoice,
    Preprocessing,
    from_metadata,
    normalising,
)
from compressor.models.teachers import alternative_accuracies, check_teacher_accuracy, load_teacher, teacher_inputs

def write_digit_folder(root: Path, *, per_class: int, size: int = 16, classes: int = 10) -> Path:
    """sklearn's digits as grayscale PNG files, one folder per class (`digit0`...)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(classes):
        (root / f"digit{c}").mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(digits.images[digits.target == c][:per_class]):
            Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((size, size), Image.BILINEAR).save(
                root / f"digit{c}" / f"{i}.png")
    return root


def png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


# ---------------------------------------------------------------- the contract


def test_choices_parse_and_resolve_to_numbers():
    stats = ((0.3,), (0.4,))
    assert PreprocessChoice.parse("none").resolve((8, 8), 1, stats).is_identity
    assert PreprocessChoice.parse("dataset").resolve((8, 8), 1, stats).mean == (0.3,)
    imagenet = PreprocessChoice.parse("ImageNet").resolve((224, 224), 3, stats)
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)
    custom = PreprocessChoice.parse("mean=0.5,0.4,0.3,std=0.2,0.2,0.25").resolve((8, 8), 3, stats)
    assert custom.mean == (0.5, 0.4, 0.3) and custom.std == (0.2, 0.2, 0.25) and custom.name == "custom"
    assert PreprocessChoice.parse("mean=0.5;std=0.25").resolve((8, 8), 3, stats).std == (0.25,) * 3
    for bad in ("bogus", "mean=a,std=1", "mean=0.5"):
        with pytest.raises(UserError, match="--teacher-preprocess"):
            PreprocessChoice.parse(bad)
    with pytest.raises(UserError, match="one per channel"):
        PreprocessChoice.parse("mean=0.5,0.5,std=1,1").resolve((8, 8), 3, stats)
    with pytest.raises(UserError, match="std must be > 0"):
        PreprocessChoice.parse("mean=0.5,std=0").resolve((8, 8), 1, stats)


def test_record_and_onnx_metadata_round_trip():
    pre = Preprocessing(size=(24, 32), channels=3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7), name="custom")
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    props = pre.metadata_props(["cat", "dog"])
    assert from_metadata(props, "x.onnx") == pre and json.loads(props[METADATA_CLASS_NAMES]) == ["cat", "dog"]
    assert from_metadata({}, "x.onnx") is None
    with pytest.raises(UserError, match="x.onnx: metadata 'compressor.preprocessing' is not JSON"):
        from_metadata({METADATA_PREPROCESSING: "{"}, "x.onnx")
    with pytest.raises(UserError, match="not a valid preprocessing record"):
        from_metadata({METADATA_PREPROCESSING: json.dumps({"format": "other"})}, "x.onnx")


def test_the_normalising_wrapper_computes_what_the_student_was_trained_on():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    pre = Preprocessing(size=(6, 6), channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.1))
    raw = torch.rand(5, 3, 6, 6)
    assert torch.allclose(normalising(net, pre)(raw), net(pre.normalise(raw)))


def test_the_accuracy_hint_rule():
    assert check_teacher_accuracy(0.95, 100, 10)[1] is None
    line, hint = check_teacher_accuracy(0.15, 100, 10)
    assert "15.00%" in line and "check --teacher-preprocess" in hint and "2.0x chance" in hint
    assert check_teacher_accuracy(0.70, 100, 2)[1] is not None  # 2 classes: halfway from chance is 75%
    assert check_teacher_accuracy(0.85, 100, 10, min_accuracy=0.9)[1].count("--teacher-min-accuracy 90%") == 1
    # Above 2x chance, but another named choice is far better: the inputs are probably wrong.
    line, hint = check_teacher_accuracy(0.35, 100, 10, alternatives={"none": 0.97, "imagenet": 0.22})
    assert "none: 97.00%" in line and "62 points below --teacher-preprocess none (97.00%)" in hint
    assert check_teacher_accuracy(0.97, 100, 10, alternatives={"dataset": 0.35, "imagenet": 0.9})[1] is None


# ---------------------------------------------------------------- real data paths


def test_imagefolder_takes_gray_rgb_rgba_palette_mixed_sizes_and_non_square_images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for i in range(4):
        png(root / "a_gray" / f"{i}.png", rng.integers(0, 255, (10 + i, 7), dtype=np.uint8))
        png(root / "b_rgba" / f"{i}.png", rng.integers(0, 255, (12, 20, 4), dtype=np.uint8), "RGBA")
        png(root / "c_rgb" / f"{i}.png", rng.integers(0, 255, (30, 9, 3), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").convert("P").save(root / "c_rgb" / "p.png")
    (root / "c_rgb" / "notes.txt").write_text("not an image")
    data = load_dataset(f"imagefolder:{root}", image_size=12, channels=3)
    assert data.class_names == ["a_gray", "b_rgba", "c_rgb"] and data.num_classes == 3
    assert data.input_shape == (3, 12, 12) and len(data.train_y) + len(data.val_y) + len(data.test_y) == 13
    every = torch.cat([data.train_x, data.val_x, data.test_x])
    assert every.min() >= 0.0 and every.max() <= 1.0 and every.max() > 0.9  # raw [0, 1], not normalised
    gray = load_dataset(f"imagefolder:{root}", image_size=12, channels=1)
    assert gray.input_shape == (1, 12, 12)
    # A gray image converted to RGB has equal channels: the value a PIL user would get.
    file = root / "a_gray" / "0.png"
    expected = np.asarray(Image.open(file).convert("RGB").resize((12, 12), Image.BILINEAR), np.float32) / 255
    assert any(np.allclose(x.permute(1, 2, 0).numpy(), expected) for x in every)
    (root / "c_rgb" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png: not a readable image"):
        load_dataset(f"imagefolder:{root}", image_size=12)


def test_imagefolder_with_train_and_val_folders_and_single_image_classes(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        png(tmp_path / "train" / "many" / f"{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    png(tmp_path / "train" / "one" / "0.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    png(tmp_path / "val" / "many" / "0.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    png(tmp_path / "val" / "one" / "0.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    data = load_dataset(f"imagefolder:{tmp_path}", image_size=8)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (4, 1, 1)
    assert data.class_names == ["many", "one"] and sorted(data.train_y.tolist()) == [0, 0, 0, 1]
    png(tmp_path / "val" / "stray" / "0.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="class folder\\(s\\) stray not in"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=8)


def test_npz_uint8_images_are_scaled_to_unit_range(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    x[0, 0, 0] = 255
    np.savez(tmp_path / "u8.npz", x=x, y=np.arange(30) % 3)
    data = load_dataset(f"npz:{tmp_path / 'u8.npz'}", image_size=8, channels=3)
    every = torch.cat([data.train_x, data.val_x, data.test_x])
    assert float(every.max()) == 1.0 and float(every.min()) >= 0.0 and data.input_shape == (3, 8, 8)
    np.savez(tmp_path / "bad.npz", x=x, y=np.linspace(0, 1, 30))
    with pytest.raises(UserError, match="y must hold class indices"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


@pytest.fixture
def npz_data(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (40, 12, 12), dtype=np.uint8), y=np.arange(40) % 10)
    return load_dataset(f"npz:{tmp_path / 'd.npz'}", image_size=12, channels=1)


def test_an_onnx_teacher_with_a_fixed_batch_of_1_at_its_own_size(tmp_path, npz_data):
    from conftest import make_conv_gemm_model

    from compressor.train.distill import LogitsCache

    path = tmp_path / "batch1.onnx"
    onnx.save(make_conv_gemm_model(batch=1), str(path))  # (1, 3, 8, 8) -> 10 classes
    teacher = load_teacher(str(path), num_classes=10, input_shape=npz_data.input_shape)
    assert teacher.input_shape == (3, 8, 8)
    inputs = teacher_inputs(teacher, npz_data, "none")
    assert inputs.dataset.input_shape == (3, 8, 8) and torch.equal(inputs.dataset.val_y, npz_data.val_y)
    assert torch.equal(inputs.dataset.test_x, npz_data.at_size(8, 3).test_x)  # raw: "none" is the identity
    logits = LogitsCache(tmp_path / "cache").get(teacher, inputs.dataset)
    assert logits["train"].shape == (len(npz_data.train_y), 10)
    # The cache key follows the teacher's preprocessing (and size: the identity includes both).
    other = teacher_inputs(teacher, npz_data, "dataset")
    cache = LogitsCache(tmp_path / "cache")
    assert cache.path(teacher, other.dataset) != cache.path(teacher, inputs.dataset)
    assert inputs.source == "--teacher-preprocess" and other.source == "--teacher-preprocess"
    alternatives = alternative_accuracies(inputs)
    assert set(alternatives) == {"imagenet", "dataset"} and all(0 <= v <= 1 for v in alternatives.values())


def test_a_teacher_with_more_classes_than_the_data_is_one_clear_line(tmp_path, npz_data):
    import torchvision

    from conftest import make_conv_gemm_model

    onnx.save(make_conv_gemm_model(), str(tmp_path / "ten.onnx"))
    state = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=12).state_dict()
    torch.save(state, tmp_path / "twelve.pt")
    for ref, weights, outputs in ((str(tmp_path / "ten.onnx"), None, 10),
                                  ("torchvision:mobilenet_v3_small", str(tmp_path / "twelve.pt"), 12)):
        with pytest.raises(UserError) as info:
            load_teacher(ref, weights=weights, num_classes=4, input_shape=npz_data.input_shape)
        message = str(info.value)
        assert "\n" not in message and f"has {outputs} outputs but the data has 4 classes" in message


def test_which_preprocessing_a_teacher_gets_by_default(tmp_path, npz_data):
    from conftest import make_conv_gemm_model

    from compressor.models.checkpoint import Checkpoint, save_checkpoint
    from compressor.spaces import build_model, spec_from_ref

    bare = make_conv_gemm_model()
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    assert "records none" in teacher_inputs(
        load_teacher(str(tmp_path / "bare.onnx"), num_classes=10, input_shape=(1, 12, 12)), npz_data).source
    described = make_conv_gemm_model()
    recorded = Preprocessing(size=(8, 8), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    for key, value in recorded.metadata_props(None).items():
        described.metadata_props.add(key=key, value=value)
    onnx.save(described, str(tmp_path / "described.onnx"))
    chosen = teacher_inputs(load_teacher(str(tmp_path / "described.onnx"), num_classes=10,
                                         input_shape=(1, 12, 12)), npz_data)
    assert chosen.preprocessing == recorded and "ONNX file's metadata" in chosen.source
    spec = spec_from_ref("zoo:plain:widths=8-8-8")
    model = build_model(spec, (1, 12, 12), 10)
    student = npz_data.student_preprocessing()
    save_checkpoint(tmp_path / "t.pt", Checkpoint(model.state_dict(), spec.to_json(), 10, (1, 12, 12),
                                                  preprocessing=student))
    from_ckpt = teacher_inputs(load_teacher(str(tmp_path / "t.pt"), num_classes=10, input_shape=(1, 12, 12)), npz_data)
    assert from_ckpt.preprocessing == student and from_ckpt.source == "recorded in the checkpoint"
    assert torch.allclose(from_ckpt.dataset.train_x.mean(), torch.tensor(0.0), atol=1e-5)


def test_a_torchvision_teacher_gets_imagenet_statistics_by_default(tmp_path):
    import torchvision

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", x=rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8), y=np.arange(30) % 3)
    raw = load_dataset(f"npz:{tmp_path / 'rgb.npz'}", image_size=16, channels=3)
    torch.manual_seed(0)
    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=3).state_dict(),
               tmp_path / "w.pt")
    teacher = load_teacher("torchvision:mobilenet_v3_small", weights=str(tmp_path / "w.pt"), num_classes=3,
                           input_shape=raw.input_shape)
    inputs = teacher_inputs(teacher, raw)
    assert inputs.preprocessing.name == "imagenet" and "default for torchvision" in inputs.source
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = teacher.module((raw.val_x - mean) / std)
    assert torch.allclose(teacher.logits(inputs.dataset.val_x), expected, atol=1e-5)


def test_the_small_image_stem_and_its_arch_string():
    from compressor.models.build import auto_stem, build_from_arch, parse_torchvision_arch

    small = build_from_arch("torchvision:resnet18:stem=small", 10, (3, 32, 32))
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    stock = build_from_arch("torchvision:resnet18", 10, (1, 32, 32))
    assert stock.conv1.kernel_size == (7, 7) and stock.conv1.in_channels == 1
    assert isinstance(stock.maxpool, torch.nn.MaxPool2d)
    assert (auto_stem((3, 28, 28)), auto_stem((3, 224, 224))) == ("small", "imagenet")
    assert parse_torchvision_arch("torchvision:resnet18:stem=small") == ("resnet18", "small")
    with pytest.raises(UserError, match=":stem=small"):
        parse_torchvision_arch("torchvision:resnet18:stride=1")


# ---------------------------------------------------------------- end to end


def _snippet(deploy_md: str) -> str:
    return re.search(r"```python\n(.*?)```", deploy_md, re.S).group(1)


def _run_snippet(bundle: Path, image: Path) -> str:
    (bundle / "predict.py").write_text(_snippet((bundle / "DEPLOY.md").read_text()))
    done = subprocess.run([sys.executable, "predict.py", str(image)], cwd=bundle, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
def test_deploy_snippet_runs_as_written_on_a_png_and_prints_the_models_class(tmp_path, quick_target):
    from targets import load_target

    from compressor.export import ExportConfig, export_bundle

    rng = np.random.default_rng(0)
    for name in ("apple", "pear", "plum"):
        for i in range(4):
            png(tmp_path / "data" / name / f"{i}.png", rng.integers(0, 255, (14, 11, 3), dtype=np.uint8))
    raw = load_dataset(f"imagefolder:{tmp_path / 'data'}", image_size=10, channels=3)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(6 * 8 * 8, 3)).eval()
    pre = raw.student_preprocessing()
    manifest = export_bundle(net, "test", raw, load_target(quick_target), tmp_path / "bundle",
                             ExportConfig(formats=("onnx",), profile_memory=False), preprocessing=pre)
    assert manifest["preprocessing"]["name"] == "none" and manifest["normalisation_in_graph"]["mean"] == list(pre.mean)
    assert manifest["class_names"] == ["apple", "pear", "plum"]
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "bundle" / "model.onnx")).metadata_props}
    assert from_metadata(props, "model.onnx").is_identity
    image = tmp_path / "query.png"
    pixels = rng.integers(0, 255, (21, 13, 4), dtype=np.uint8)  # RGBA, another size: the snippet resizes
    png(image, pixels, "RGBA")
    x = torch.from_numpy(np.asarray(Image.open(image).convert("RGB").resize((10, 10), Image.BILINEAR),
                                    np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = manifest["class_names"][int(net(pre.normalise(x)).argmax())]
    assert _run_snippet(tmp_path / "bundle", image) == expected


@pytest.mark.slow
def test_end_to_end_onnx_teacher_trained_on_raw_pixels(tmp_path, capfd, quick_target):
    """An ImageFolder of PNGs, an ONNX teacher trained on raw [0, 1] pixels (no metadata), compress with
    --teacher-preprocess none; the wrong preprocessing is reported low with the hint."""
    from compressor.models.onnx_export import export_onnx
    from compressor.spaces import build_model, spec_from_ref
    from compressor.train.distill import TrainConfig, train_student

    torch.set_num_threads(1)
    folder = write_digit_folder(tmp_path / "digits", per_class=40)
    raw = load_dataset(f"imagefolder:{folder}", image_size=16, channels=1)
    torch.manual_seed(0)
    teacher_net = build_model(spec_from_ref("zoo:plain:widths=8-16-32"), raw.input_shape, raw.num_classes)
    trained = train_student(teacher_net, raw, TrainConfig(epochs=10, seed=0, alpha=0.0, lr=0.05), evaluate_test=True)
    assert trained.val_accuracy > 0.6
    export_onnx(teacher_net, (1, *raw.input_shape), tmp_path / "teacher.onnx")
    common = ["--teacher", str(tmp_path / "teacher.onnx"), "--data", f"imagefolder:{folder}", "--image-size", "16",
              "--channels", "1", "--cache-dir", str(tmp_path / "cache")]

    for wrong in ("dataset", "imagenet"):
        code = cli.main(["distill", *common, "--teacher-preprocess", wrong, "--student", "zoo:plain:widths=8-8-8",
                         "--epochs", "1", "--out", str(tmp_path / f"distill-{wrong}")])
        err = capfd.readouterr().err
        assert code == 0
        assert f"teacher preprocessing: {wrong}" in err and "check --teacher-preprocess" in err
        low = json.loads((tmp_path / f"distill-{wrong}" / "result.json").read_text())["teacher_val_accuracy"]
        assert low < trained.val_accuracy - 0.3

    code = cli.main(["compress", *common, "--teacher-preprocess", "none", "--target", quick_target,
                     "--space", "zoo", "--trials", "1", "--family-size", "1", "--fidelities", "1", "--finalists", "1",
                     "--final-epochs", "10", "--formats", "onnx", "--profile-seconds", "0.2",
                     "--out", str(tmp_path / "run")])
    err = capfd.readouterr().err
    assert code == 0, err
    assert "teacher preprocessing: none: raw pixels / 255" in err and "check --teacher-preprocess" not in err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    teacher = report["teacher"]
    assert teacher["preprocessing"]["name"] == "none" and teacher["preprocessing_source"] == "--teacher-preprocess"
    assert teacher["val_accuracy"] == pytest.approx(trained.val_accuracy)
    assert report["student"]["test_accuracy"] >= teacher["test_accuracy"] - 0.08
    assert not report["warnings"]

    # The recommended artifact fed raw pixels, as DEPLOY.md says, predicts like the report.
    bundle = tmp_path / "run" / "artifacts"
    manifest = json.loads((bundle / "artifacts.json").read_text())
    assert manifest["class_names"] == [f"digit{c}" for c in range(10)]
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / manifest["recommended"]), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": raw.test_x.numpy()})[0]
    assert float((logits.argmax(1) == raw.test_y.numpy()).mean()) == pytest.approx(
        report["student"]["test_accuracy"], abs=1.5 / len(raw.test_y))
    image = folder / "digit3" / "0.png"
    x = np.asarray(Image.open(image).convert("L").resize((16, 16), Image.BILINEAR), np.float32)[None, None] / 255
    expected = manifest["class_names"][int(session.run(None, {"input": x})[0].argmax())]
    assert _run_snippet(bundle, image) == expected


@pytest.mark.slow
def test_train_teacher_adapts_the_stem_and_records_it_and_the_preprocessing(tmp_path, capfd):
    from compressor.models.checkpoint import load_checkpoint

    folder = write_digit_folder(tmp_path / "digits", per_class=4, classes=3)
    code = cli.main(["train-teacher", "--arch", "torchvision:resnet18", "--data", f"imagefolder:{folder}",
                     "--image-size", "16", "--channels", "1", "--epochs", "1", "--out", str(tmp_path / "t.pt")])
    err = capfd.readouterr().err
    assert code == 0 and "stem: small-image (3x3 stride-1 first conv, no max-pool) for 16 px" in err
    ckpt = load_checkpoint(tmp_path / "t.pt")
    assert ckpt.arch == "torchvision:resnet18:stem=small" and ckpt.preprocessing.name == "dataset"
    teacher = load_teacher(str(tmp_path / "t.pt"), num_classes=3, input_shape=(1, 16, 16))
    assert teacher.module.conv1.stride == (1, 1)
    raw = load_dataset(f"imagefolder:{folder}", image_size=16, channels=1)
    assert teacher_inputs(teacher, raw).preprocessing == ckpt.preprocessing
