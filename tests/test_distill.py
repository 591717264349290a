"""Distillation: KD loss, logits cache, reproducibility, NaN handling, augmentation policy, the CLI."""

from __future__ import annotations

import math

import pytest
import torch

from compressor.models.checkpoint import load_checkpoint, save_checkpoint
from compressor.data.datasets import load_dataset
from compressor.train.distill import LogitsCache, TrainConfig, evaluate_graded, kd_loss, predict, train_student
from compressor.models.build import build_from_arch
from compressor.models.teachers import load_teacher
from test_teachers import small_data, teacher_ckpt  # noqa: F401 - shared fixtures


def _softmax(v, tau):
    e = [math.exp(x / tau) for x in v]
    return [x / sum(e) for x in e]


def test_kd_loss_matches_hand_computation():
    s = [[1.0, 2.0, 0.5]]
    t = [[0.2, 3.0, -1.0]]
    y = [1]
    alpha, tau = 0.7, 2.0
    ce = -math.log(_softmax(s[0], 1.0)[1])
    p_t, p_s = _softmax(t[0], tau), _softmax(s[0], tau)
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    expected = (1 - alpha) * ce + alpha * tau * tau * kl
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), alpha=alpha, tau=tau)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    plain = kd_loss(torch.tensor(s), None, torch.tensor(y), alpha=alpha, tau=tau)
    assert float(plain) == pytest.approx(ce, rel=1e-5)


def test_kd_loss_hidden_labels_use_only_the_kd_term():
    s, t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    hidden = kd_loss(s, t, torch.tensor([-1, -1]), alpha=0.3, tau=1.0)
    kl_only = torch.nn.functional.kl_div(torch.log_softmax(s, 1), torch.log_softmax(t, 1), reduction="batchmean",
                                         log_target=True)
    assert float(hidden) == pytest.approx(float(kl_only), rel=1e-6)
    mixed = kd_loss(s, t, torch.tensor([0, -1]), alpha=0.3, tau=1.0)
    ce_first = torch.nn.functional.cross_entropy(s[:1], torch.tensor([0]))
    assert float(mixed) == pytest.approx(0.7 * float(ce_first) + 0.3 * float(kl_only), rel=1e-5)


def test_logits_cache_hit_miss_and_invalidation(tmp_path, small_data, teacher_ckpt):
    cache = LogitsCache(tmp_path / "cache")
    teacher = load_teacher(str(teacher_ckpt), num_classes=10, input_shape=small_data.input_shape)
    first = cache.get(teacher, small_data)
    assert (cache.hits, cache.misses) == (0, 1)
    again = cache.get(teacher, small_data)
    assert (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(first["train"], again["train"])
    assert torch.allclose(first["val"], teacher.logits(small_data.val_x))
    # a changed teacher (same architecture, other weights) is a miss
    ckpt = load_checkpoint(teacher_ckpt)
    ckpt.state_dict = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    save_checkpoint(tmp_path / "other.pt", ckpt)
    other = load_teacher(str(tmp_path / "other.pt"), num_classes=10, input_shape=small_data.input_shape)
    cache.get(other, small_data)
    assert cache.misses == 2
    # changed preprocessing is a miss too
    cache.get(teacher, load_dataset("digits", image_size=8, channels=1, seed=5))
    assert cache.misses == 3


@pytest.mark.slow
def test_training_is_reproducible_on_cpu(small_data):
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_from_arch("zoo:plain:widths=8-8-8", 10, small_data.input_shape)
        result = train_student(model, small_data, TrainConfig(epochs=1, seed=3, threads=1), evaluate_test=False)
        assert result.status == "ok" and result.epochs_run == 1 and len(result.loss_curve) == 1
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_graded_evaluation_gives_the_accuracy_and_the_cross_entropy_of_the_true_class():
    # A network that outputs fixed logits per image: its cross-entropy is computable by hand.
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0]])
    y = torch.tensor([0, 2, 2, 1])
    model = torch.nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(logits.T)
    x = torch.eye(4)
    accuracy, loss = evaluate_graded(model, x, y, batch_size=3)  # two batches
    expected = [-math.log(_softmax(row.tolist(), 1.0)[label]) for row, label in zip(logits, y.tolist())]
    # image 3 is a tie between classes 0 and 1: argmax takes class 0, wrong
    assert accuracy == pytest.approx(2 / 4)
    assert loss == pytest.approx(sum(expected) / 4, rel=1e-6)
    assert predict(model, x).tolist() == [0, 1, 2, 0]
    assert evaluate_graded(model, x[:0], y[:0]) == (0.0, math.inf) and predict(model, x[:0]).shape == (0,)


def test_training_reports_the_cross_entropy_beside_the_accuracy(small_data):
    torch.manual_seed(0)
    model = build_from_arch("zoo:plain:widths=8-8-8", 10, small_data.input_shape)
    result = train_student(model, small_data, TrainConfig(epochs=1, seed=0, threads=1), evaluate_test=False)
    assert (result.val_accuracy, result.val_loss) == pytest.approx(
        evaluate_graded(model, small_data.val_x, small_data.val_y))
    assert 0.0 < result.val_loss < math.inf


@pytest.mark.slow
def test_nan_loss_is_a_failed_result(small_data):
    import dataclasses

    broken = dataclasses.replace(small_data, train_x=small_data.train_x.clone())
    broken.train_x[:] = float("nan")
    model = build_from_arch("zoo:plain:widths=8-8-8", 10, small_data.input_shape)
    result = train_student(model, broken, TrainConfig(epochs=1, threads=1))
    assert result.status == "failed" and "non-finite loss" in result.reason


@pytest.mark.slow
def test_kd_from_cached_logits_trains(small_data, teacher_ckpt, tmp_path):
    teacher = load_teacher(str(teacher_ckpt), num_classes=10, input_shape=small_data.input_shape)
    logits = LogitsCache(tmp_path).get(teacher, small_data)
    torch.manual_seed(0)
    model = build_from_arch("zoo:plain:widths=8-16-16", 10, small_data.input_shape)
    result = train_student(model, small_data, TrainConfig(epochs=2, alpha=0.5, threads=1), teacher_logits=logits)
    assert result.status == "ok" and result.val_accuracy > 0.2  # well above chance (0.1) after two epochs


@pytest.mark.slow
def test_augmentation_runs_the_teacher_online(small_data, teacher_ckpt, tmp_path):
    from compressor.train.distill import shift_batch

    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    shifted = shift_batch(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape and not torch.equal(shifted, x)
    assert torch.equal(shift_batch(x, 0, torch.Generator()), x)
    teacher = load_teacher(str(teacher_ckpt), num_classes=10, input_shape=small_data.input_shape)
    logits = LogitsCache(tmp_path).get(teacher, small_data)
    config = TrainConfig(epochs=1, augment=True, threads=1)
    model = build_from_arch("zoo:plain:widths=8-8-8", 10, small_data.input_shape)
    with pytest.raises(ValueError, match="run it online"):
        train_student(model, small_data, config, teacher_logits=logits)
    result = train_student(model, small_data, config, teacher_logits=logits, teacher=teacher, evaluate_test=False)
    assert result.status == "ok" and result.epochs_run == 1


@pytest.mark.slow
def test_time_budget_stops_early(small_data):
    model = build_from_arch("zoo:plain:widths=8-8-8", 10, small_data.input_shape)
    result = train_student(model, small_data, TrainConfig(epochs=50, time_budget_s=0.0, threads=1))
    assert result.status == "ok" and result.epochs_run == 0 and len(result.loss_curve) == 1
    assert result.val_accuracy is not None


def _cli(capsys, *args) -> tuple[int, str]:
    """Run the real CLI entry point in-process (a subprocess would pay torch's import each time)."""
    from compressor.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_distill_cli_trains_and_saves_a_checkpoint(tmp_path, teacher_ckpt, capsys):
    code, err = _cli(capsys, "distill", "--teacher", str(teacher_ckpt), "--student", "zoo:plain:widths=8-8-8", "--data", "digits",
                "--image-size", "8", "--channels", "1", "--epochs", "1", "--cache-dir", str(tmp_path / "c"),
                "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    ckpt = load_checkpoint(tmp_path / "out" / "student.pt")
    assert ckpt.arch.startswith("{") and ckpt.meta["kd"] is True


@pytest.mark.parametrize("args, message", [
    (("distill", "--student", "zoo:plain", "--data", "nope", "--no-kd", "--out", "x"), "unknown dataset"),
    (("distill", "--student", "zoo:plain", "--epochs", "1", "--out", "x"), "--teacher is required"),
    (("train-teacher", "--arch", "torchvision:notanet", "--out", "x.pt", "--image-size", "8"), "unknown torchvision"),
    (("train-teacher", "--data", "npz:/no/such.npz", "--out", "x.pt"), "no such file"),
])
def test_cli_errors_are_one_line_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _cli(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
