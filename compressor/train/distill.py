"""Knowledge distillation: the loss, the teacher-logits cache and the trainer.

Loss (Hinton): `(1-α)·CE(y, s) + α·τ²·KL(softmax(t/τ) || softmax(s/τ))`. A
sample whose label is hidden (`y = -1`, the `--label-fraction` transfer-set
case) contributes only the KD term; CE is averaged over the labelled samples.
Without teacher logits the loss is plain cross-entropy (the `--no-kd`
baseline).

Teacher-logits cache: the teacher's logits on every split are computed once
per (teacher content hash, identity of the teacher's input tensors — source,
split, the teacher's size and channels and its preprocessing) and stored under `$COMPRESSOR_CACHE/logits/` (default
`~/.cache/compressor/logits/`), written atomically and read back with
`torch.load(weights_only=True)`. A changed teacher or dataset is a new key, so
stale logits are never used. With the cache, a KD epoch costs what a plain
cross-entropy epoch costs: no teacher forward pass, and the teacher's soft
targets and their entropy are computed once per run so that the KL term is
one soft-target cross-entropy per step (KL(p||q) = H(p, q) - H(p)).

Augmentation policy: cached logits belong to un-augmented images, so when
`augment` is on and a teacher is given, the teacher runs *online* on each
augmented batch (exact, slower); augmentation with cached logits only is
refused. The search trains without augmentation and always uses the cache.

Trainer: in-memory tensors, a seeded permutation per epoch (no DataLoader
workers), SGD with Nesterov momentum and a cosine learning-rate schedule,
weight decay, CUDA + AMP when a GPU is present. Same seed, same initial
weights, CPU -> same trained weights. A NaN/inf loss stops the run with a
failed result and the reason; a time budget stops it early with status ok
and fewer `epochs_run`.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profilers import host

CACHE_VERSION = "logits-v1"


def kd_loss(student_logits, teacher_logits, targets, *, alpha: float, tau: float):
    """The KD loss of the module docstring; `teacher_logits=None` gives plain cross-entropy."""
    teacher = None if teacher_logits is None else SoftTargets.from_logits(teacher_logits, tau)
    return kd_step_loss(student_logits, teacher, targets, alpha=alpha, tau=tau)


@dataclass
class SoftTargets:
    """The teacher's probabilities at temperature τ and their per-sample entropy.

    KL(p || q) = H(p, q) - H(p): the cross-entropy with soft targets is one
    fused op, and the entropy H(p) is a constant computed once per run from
    the cached logits. Both keep a KD step as cheap as a cross-entropy step.
    """

    probs: Any
    entropy: Any

    @classmethod
    def from_logits(cls, logits, tau: float) -> "SoftTargets":
        import torch

        log_probs = torch.log_softmax(logits.float() / tau, dim=1)
        probs = log_probs.exp()
        return cls(probs=probs, entropy=-(probs * log_probs).sum(1))

    def select(self, index, device) -> "SoftTargets":
        return SoftTargets(probs=self.probs[index].to(device), entropy=self.entropy[index].to(device))


def kd_step_loss(student_logits, teacher: SoftTargets | None, targets, *, alpha: float, tau: float,
                 all_labelled: bool | None = None):
    """`kd_loss` with the teacher's soft targets already computed (`all_labelled`: no label is hidden)."""
    import torch.nn.functional as F

    if all_labelled:
        ce = F.cross_entropy(student_logits, targets)
        has_labels = True
    else:
        labelled = targets >= 0
        has_labels = bool(labelled.any())
        ce = F.cross_entropy(student_logits[labelled], targets[labelled]) if has_labels else None
    if teacher is None:
        return ce if has_labels else student_logits.sum() * 0.0
    kl = (F.cross_entropy(student_logits / tau, teacher.probs) - teacher.entropy.mean()) * (tau * tau)
    if not has_labels:
        return kl
    return (1.0 - alpha) * ce + alpha * kl


class LogitsCache:
    """Teacher logits per (teacher, dataset), on disk."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = host.cache_root(root)
        self.hits = 0
        self.misses = 0

    def path(self, teacher, dataset) -> Path:
        key = hashlib.sha256(f"{CACHE_VERSION}|{teacher.content_hash}|{dataset.identity}".encode()).hexdigest()[:32]
        return self.root / "logits" / f"{key}.pt"

    def get(self, teacher, dataset) -> dict[str, Any]:
        """{"train", "val", "test"} logits, computed and stored on a miss."""
        import torch

        path = self.path(teacher, dataset)
        if path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                if all(k in data and len(data[k]) == len(getattr(dataset, f"{k}_x")) for k in ("train", "val", "test")):
                    self.hits += 1
                    return data
            except Exception:  # noqa: BLE001 - a corrupt cache entry is recomputed, never trusted
                pass
        self.misses += 1
        data = {split: teacher.logits(getattr(dataset, f"{split}_x")) for split in ("train", "val", "test")}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(data, tmp)
        os.replace(tmp, path)
        return data


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (SGD + Nesterov, cosine schedule)."""

    epochs: int = 10
    lr: float = 0.1
    weight_decay: float = 5e-4
    batch_size: int = 32
    alpha: float = 0.5
    tau: float = 4.0
    seed: int = 0
    time_budget_s: float | None = None
    augment: bool = False
    shift_px: int = 3
    device: str = "auto"
    # The KD term's gradient grows with τ (τ²·KL): clipping keeps high-τ, high-lr proposals trainable.
    clip_grad_norm: float | None = 2.0
    # Tiny students train fastest on one thread: PyTorch's per-op threading overhead exceeds their work.
    threads: int | None = None


@dataclass
class TrainResult:
    status: str
    reason: str = ""
    val_accuracy: float | None = None
    # The mean cross-entropy of the true class on validation: graded where accuracy counts images (how sure the
    # network is, not only whether its top class is right); the search ranks short trainings by it
    # (compressor.search.store.TrialRecord.score says why).
    val_loss: float | None = None
    test_accuracy: float | None = None
    loss_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    epochs_run: int = 0


def logits_accuracy(logits, y) -> float:
    """Top-1 accuracy (fraction) of precomputed logits (N, classes) against labels y (N,)."""
    return float((logits.argmax(1) == y).float().mean()) if len(y) else 0.0


def predict(model, x, batch_size: int = 512):
    """The top-1 class `model` predicts for each image of `x` (a CPU tensor of N labels), in eval mode."""
    import torch

    return _log_probabilities(model, x, batch_size).argmax(1) if len(x) else torch.zeros(0, dtype=torch.long)


def _log_probabilities(model, x, batch_size: int):
    """`model`'s log-softmax over the classes for each image of `x` (at least one; a CPU tensor N x classes), in eval mode."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        return torch.cat([torch.log_softmax(model(x[start:start + batch_size].to(device)).float(), 1).cpu()
                          for start in range(0, len(x), batch_size)])


def evaluate(model, x, y, batch_size: int = 512) -> float:
    """Top-1 accuracy (fraction) of `model` on (x, y), in eval mode."""
    return evaluate_graded(model, x, y, batch_size)[0]


def evaluate_graded(model, x, y, batch_size: int = 512) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy of the true class) of `model` on (x, y), in eval mode.

    The cross-entropy is `TrainResult.val_loss`'s: +inf where it is not finite; (0, +inf) on no images.
    """
    if not len(x):
        return 0.0, math.inf
    log_probabilities = _log_probabilities(model, x, batch_size)
    accuracy = int((log_probabilities.argmax(1) == y).sum()) / len(x)
    loss = float(-log_probabilities.gather(1, y[:, None]).mean())
    return accuracy, loss if math.isfinite(loss) else math.inf


def train_student(model, dataset, config: TrainConfig, *, teacher_logits: dict | None = None, teacher=None,
                  evaluate_test: bool = True, progress=None) -> TrainResult:
    """Train `model` on `dataset` with KD from `teacher_logits` (or online `teacher`), or plain CE.

    Args:
        model: a torch.nn.Module (initialised by the caller).
        dataset: a compressor.data.datasets.Dataset.
        config: TrainConfig.
        teacher_logits: the LogitsCache dict; used when augmentation is off.
        teacher: a compressor.models.teachers.Teacher, run online on augmented batches.
        evaluate_test: also measure test accuracy.
        progress: called as progress(epoch, epochs, mean_loss, seconds) after each epoch.

    Returns:
        A TrainResult (status "failed" with the reason on a non-finite loss).
    """
    import torch

    if config.threads is None:
        return _train(model, dataset, config, teacher_logits, teacher, evaluate_test, progress)
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(model, dataset, config, teacher_logits, teacher, evaluate_test, progress)
    finally:
        torch.set_num_threads(previous)


def _train(model, dataset, config, teacher_logits, teacher, evaluate_test, progress) -> TrainResult:
    import torch

    started = time.perf_counter()
    if config.augment and teacher_logits is not None and teacher is None and config.alpha > 0:
        raise ValueError("augmentation with cached teacher logits is not supported: pass the teacher to run it online")
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if config.device == "auto" else config.device))
    model.to(device)
    use_kd = config.alpha > 0 and (teacher is not None or teacher_logits is not None)
    online = use_kd and (config.augment or teacher_logits is None)
    generator = torch.Generator().manual_seed(config.seed)
    x_all, y_all = dataset.train_x, dataset.train_y
    soft_all = SoftTargets.from_logits(teacher_logits["train"], config.tau) if use_kd and not online else None
    all_labelled = bool((y_all >= 0).all())
    n = len(x_all)
    steps_per_epoch = max(1, n // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    result = TrainResult(status="ok")
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        epoch_loss, batches = 0.0, 0
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            x = x_all[index]
            if config.augment:
                x = shift_batch(x, config.shift_px, generator)
            y = y_all[index].to(device)
            if online:
                soft = SoftTargets.from_logits(teacher.logits(x), config.tau).select(slice(None), device)
            else:
                soft = soft_all.select(index, device) if soft_all is not None else None
            x = x.to(device)
            with torch.autocast(device.type, enabled=amp):
                loss = kd_step_loss(model(x).float(), soft, y, alpha=config.alpha, tau=config.tau,
                                              all_labelled=all_labelled)
            if not torch.isfinite(loss):
                result.status = "failed"
                result.reason = f"non-finite loss ({float(loss.detach())}) at epoch {epoch + 1}, step {step + 1}"
                result.seconds = time.perf_counter() - started
                result.epochs_run = epoch
                return result
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            epoch_loss += float(loss.detach())
            batches += 1
            if config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s:
                break
        result.loss_curve.append(epoch_loss / max(1, batches))
        if progress is not None:
            progress(epoch + 1, config.epochs, result.loss_curve[-1], time.perf_counter() - started)
        if batches == steps_per_epoch:
            result.epochs_run = epoch + 1
        if config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s:
            break
    result.val_accuracy, result.val_loss = evaluate_graded(model, dataset.val_x, dataset.val_y)
    if evaluate_test:
        result.test_accuracy = evaluate(model, dataset.test_x, dataset.test_y)
    model.cpu().eval()
    result.seconds = time.perf_counter() - started
    return result


def shift_batch(x, max_shift: int, generator):
    """Random integer shifts of up to `max_shift` px per image, zero-padded (light augmentation for digits)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = dx[:, None] + torch.arange(w)[None, :]
    batch = torch.arange(n)[:, None, None]
    # padded[b, :, rows[b], cols[b]] for every b, as one advanced-indexing gather
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
