"""`compressor demo`: the main job end to end on the bundled digits data.

1. A ResNet-18 teacher is trained on digits at 32 px with light augmentation
   (random shifts), or reused from the cache (`$COMPRESSOR_CACHE/demo/` or
   `~/.cache/compressor/demo/`), keyed by everything that shapes it.
2. It is profiled on the target (`cpu-1t`: one ONNX Runtime thread on one
   pinned core) side by side with the search space's smallest network. The
   latency budget is a fraction of the teacher's p50 (1/20), but never below
   `floor_multiple` (2.5x) the smallest network's p50: on a fast CPU 1/20 of
   a ResNet-18 approaches the runtime's per-call floor, where nearly every
   proposal is over budget and the verdicts are decided by noise. The memory
   budget is a fraction of the teacher's peak memory (1/2). The demo prints
   which rule set the budget and why.
3. `compressor.pipeline.compress.compress` searches (TPE, successive halving), trains
   its finalists and, with `baseline=True`, the best hand-designed student at
   the same budget (compressor.pipeline.baselines: tuned and trained on the student's terms),
   ships the best of them on validation (compressor.pipeline.finalists: the
   baseline's own network when no searched finalist beats it), exports the
   bundle and writes the report.
4. The summary compares teacher, searched student and baseline side by side
   and checks the goals (accuracy within 0.5 point of the teacher, >= 100x
   fewer parameters, >= 10x lower p50, at least as accurate as the baseline).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compressor.search.config import SearchConfig
from profilers import host


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("runs/demo")
    target: str = "cpu-1t"
    image_size: int = 32
    teacher_arch: str = "torchvision:resnet18"
    teacher_epochs: int = 15
    trials: int = 24
    family_size: int = 2
    fidelities: tuple[int, ...] = (1, 3)
    final_epochs: int = 20
    latency_fraction: float = 1 / 20
    floor_multiple: float = 2.5  # the latency budget is at least this times the smallest network's p50
    profile_seconds: float = SearchConfig.profile_seconds
    memory_fraction: float = 1 / 2
    seed: int = 0
    cache_dir: Path | None = None
    quiet: bool = False


def demo_teacher(config: DemoConfig, dataset, say) -> Path:
    """The cached demo teacher's checkpoint, trained first if absent."""
    import torch

    from compressor.models.checkpoint import Checkpoint, save_checkpoint
    from compressor.train.distill import TrainConfig, train_student
    from compressor.models.build import build_from_arch

    key = hashlib.sha256(json.dumps([config.teacher_arch, dataset.identity, config.teacher_epochs, config.seed,
                                     "augment", "bs32-lr0.05"]).encode()).hexdigest()[:12]
    path = host.cache_root(config.cache_dir) / "demo" / f"teacher-{config.teacher_arch.split(':')[-1]}-{key}.pt"
    if path.is_file():
        say(f"teacher: reusing {path}")
        return path
    say(f"teacher: training {config.teacher_arch} for {config.teacher_epochs} epochs with random shifts "
        "(cached for the next run)")
    torch.manual_seed(config.seed)
    model = build_from_arch(config.teacher_arch, dataset.num_classes, dataset.input_shape)
    result = train_student(model, dataset, TrainConfig(epochs=config.teacher_epochs, seed=config.seed, augment=True,
                                                      alpha=0.0, lr=0.05, batch_size=32),
                           evaluate_test=True)
    if result.status != "ok":
        raise RuntimeError(f"teacher training failed: {result.reason}")
    save_checkpoint(path, Checkpoint(model.state_dict(), config.teacher_arch, dataset.num_classes, dataset.input_shape,
                                     meta={"val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
                                           "epochs": config.teacher_epochs, "seconds": result.seconds,
                                           "data_split": dataset.split_identity},
                                     preprocessing=dataset.preprocessing))
    say(f"teacher: test accuracy {100 * result.test_accuracy:.2f}% after {result.seconds:.0f} s")
    return path


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the demo; returns the run's report with the baseline and the goal checks added."""
    from targets import load_target

    from compressor.cli.console import err_console
    from compressor.data.datasets import load_dataset
    from compressor.pipeline.compress import DataOptions, compress
    from compressor.pipeline.report import write_report
    from compressor.models.teachers import load_teacher

    def say(text: str) -> None:
        if not config.quiet:
            err_console.print(f"[bold]demo[/]: {text}")

    started = time.time()
    raw = load_dataset("digits", image_size=config.image_size, channels=3, seed=config.seed)
    # The teacher trains on the training split's statistics and its checkpoint records them.
    dataset = raw.normalised(raw.student_preprocessing())
    teacher_path = demo_teacher(config, dataset, say)
    teacher = load_teacher(str(teacher_path), num_classes=dataset.num_classes, input_shape=dataset.input_shape)
    target = load_target(config.target)
    run_dir = Path(config.out)
    previous = _previous_budgets(run_dir)
    if previous:
        # The run exists: keep its budgets (a re-measured teacher would differ by noise and the
        # resume would be refused as a different configuration).
        latency_ms, memory_mb = previous["latency_ms"], previous["memory_mb"]
        say(f"continuing {run_dir} with its budgets: {latency_ms:.3f} ms p50, {memory_mb:.1f} MiB")
    else:
        latency_ms, memory_mb, why = demo_budgets(config, teacher, dataset, target)
        say(why)
    result = compress(str(teacher_path), out=run_dir, data="digits", target=target, latency_ms=latency_ms,
                      memory_mb=memory_mb, data_options=DataOptions(image_size=config.image_size, channels=3,
                                                                    seed=config.seed),
                      resume=(run_dir / "trials.sqlite").exists(), quiet=config.quiet, cache_dir=config.cache_dir,
                      trials=config.trials, family_size=config.family_size, fidelities=config.fidelities,
                      final_epochs=config.final_epochs, seed=config.seed, profile_seconds=config.profile_seconds,
                      baseline=True)
    report = result.report
    report["goals"] = goal_checks(report)
    report["demo"] = {"seconds": time.time() - started, "config": {k: str(v) for k, v in asdict(config).items()}}
    write_report(run_dir, report, result.records)
    return report


def demo_budgets(config: DemoConfig, teacher, dataset, target) -> tuple[float, float | None, str]:
    """(latency budget ms, memory budget MiB, why): teacher and smallest network measured side by side."""
    from compressor.models.on_target import check_side_by_side
    from compressor.search.config import SearchConfig
    from compressor.spaces import get_space

    space = get_space(SearchConfig().space)
    smallest = space.build(space.sample(space.smallest_params(), config.seed), dataset.input_shape,
                           dataset.num_classes)
    shape = (target.batch_size, *dataset.input_shape)
    session = check_side_by_side({"teacher": teacher.onnx_bytes(shape), "smallest": smallest}, target,
                                 dataset.input_shape, memory=True, name="demo-budget")
    teacher_profile = session.checked["teacher"].profile
    teacher_p50 = teacher_profile["latency_ms"]["p50"]
    smallest_p50 = session.checked["smallest"].profile["latency_ms"]["p50"]
    fraction = teacher_p50 * config.latency_fraction
    floor = smallest_p50 * config.floor_multiple
    memory_mb = (teacher_profile["peak_memory_mb"] or 0) * config.memory_fraction or None
    measured = (f"teacher p50 on {target.name} {teacher_p50:.3f} ms, the smallest {space.name} network's "
                f"{smallest_p50:.4f} ms (side by side)")
    if fraction >= floor:
        why = (f"{measured} -> latency budget {fraction:.3f} ms p50 = {config.latency_fraction:.3g} of the teacher "
               f"(>= {config.floor_multiple:g}x the smallest network, {floor:.4f} ms)")
        latency_ms = fraction
    else:
        why = (f"{measured} -> latency budget {floor:.4f} ms p50 = {config.floor_multiple:g}x the smallest network, "
               f"because {config.latency_fraction:.3g} of the teacher ({fraction:.4f} ms) is too close to this "
               "runtime's floor for a search to find room (most candidates would be over budget by noise)")
        latency_ms = floor
    return latency_ms, memory_mb, why + f"; memory budget {memory_mb or 0:.1f} MiB"


def _previous_budgets(run_dir: Path) -> dict[str, Any] | None:
    """The budgets of an existing run in `run_dir`, if there is one."""
    from compressor.search.store import TrialStore

    if not (run_dir / "trials.sqlite").is_file():
        return None
    store = TrialStore(run_dir / "trials.sqlite")
    try:
        fingerprint = store.get_meta("fingerprint")
    finally:
        store.close()
    return fingerprint["target"]["budgets"] if fingerprint else None


def goal_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The demo's claims, each with the measured figures and whether it holds."""
    teacher, student = report["teacher"], report["student"]
    from compressor.pipeline.report import trained_baselines, verdict_text

    baseline = next(iter(trained_baselines(report)), None)
    gap = 100 * (teacher["test_accuracy"] - student["test_accuracy"])
    param_ratio = teacher["params"] / max(1, student["params"])
    speedup = report["speedup_p50"]  # teacher / student from the final side-by-side session
    behind = f"{gap:.2f} points behind" if gap > 0 else f"{-gap:.2f} points ahead"
    checks = [
        {"goal": "test accuracy within 0.5 point of the teacher", "value": behind, "met": gap <= 0.5},
        {"goal": ">= 100x fewer parameters", "value": f"{param_ratio:.0f}x", "met": param_ratio >= 100},
        {"goal": ">= 10x lower p50 latency on the target", "value": f"{speedup:.1f}x", "met": speedup >= 10},
    ]
    budgets = report["budgets"]
    if budgets.get("latency_ms") and "within_budget" in student:
        checks.append({"goal": "student within the budget in the final side-by-side session",
                       "value": verdict_text(student), "met": student["within_budget"] is True})
    if baseline:
        diff = 100 * (student["test_accuracy"] - baseline["test_accuracy"])
        same = baseline.get("at_same_budget", True)
        checks.append({"goal": "at least as accurate as the best hand-designed student "
                               + ("at the same budget" if same else "(which is over the budget)"),
                       "value": f"{diff:+.2f} points vs {baseline['name']}"
                                + (" (the student is the baseline's network)" if student.get("source") == "baseline"
                                   else ""), "met": diff >= 0})
    return checks
