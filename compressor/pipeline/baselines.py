"""The hand-designed baseline every claim about a searched student is measured against.

What an expert would write for a small image task under a latency budget: a
plain conv-BN-ReLU stack (the zoo's `plain` family). Of a few standard widths,
the largest one that meets the target's budgets is taken (measured on the
target, like every candidate of the search), then trained with the same
teacher and the same epochs as the searched student, with KD and without
(plain cross-entropy); the better of the two on the validation split is the
baseline — "the best hand-designed student at the same budget".

Widths are judged by `check_on_target` with the run's drift reference, so a
width passes by the same rule as a searched candidate (its latency's upper
confidence bound under the budget, or a borderline one decided after a longer
measurement). When even the narrowest width misses the budget, it is still
trained (`meets_budget: false`) and the report does not call it "at the same
budget"; `compress` then judges the trained baseline again in its final
side-by-side session with the student (`at_same_budget` in report.json).
"""

from __future__ import annotations

from typing import Any

PLAIN_WIDTHS = ("8-16-32", "12-24-48", "16-32-64", "24-48-96", "32-64-128")


def hand_designed_baseline(teacher, dataset, target, *, latency_ms: float | None = None,
                           memory_mb: float | None = None, size_mb: float | None = None,
                           epochs: int = 15, teacher_logits: dict | None = None, seed: int = 0,
                           cache_dir=None, reference=None) -> dict[str, Any]:
    """Pick, train and measure the best plain CNN that meets the budgets.

    Args:
        teacher: a compressor.models.teachers.Teacher.
        dataset: a compressor.data.datasets.Dataset.
        target: a preset name, TOML path or targets.Target; budget arguments override its budgets.
        epochs: training epochs (use the searched student's final epochs).
        teacher_logits: the logits cache's dict (computed if None, on the teacher's own inputs:
            compressor.models.teachers.teacher_inputs with its recorded or default preprocessing).
        reference: the run's drift reference (compressor.models.on_target.DriftReference), or None.

    Returns:
        {"name", "arch", "status": "ok", "val_accuracy", "test_accuracy", "params", "macs", "profile",
        "meets_budget", "kd", "epochs"}; when both trainings fail, {"name", "arch", "status": "failed",
        "reason", "meets_budget", "epochs"}.
    """
    import torch
    from targets import Target, load_target

    from compressor.models.on_target import check_on_target
    from compressor.models.teachers import teacher_inputs
    from compressor.spaces import build_model, spec_from_ref
    from compressor.train.distill import LogitsCache, TrainConfig, train_student

    if not isinstance(target, Target):
        target = load_target(target)
    target = target.with_budgets(latency_ms=latency_ms, memory_mb=memory_mb, size_mb=size_mb)
    chosen = None
    for widths in PLAIN_WIDTHS:
        spec = spec_from_ref(f"zoo:plain:widths={widths}", seed=seed)
        model = build_model(spec, dataset.input_shape, dataset.num_classes)
        fits = check_on_target(model, target, dataset.input_shape, label=f"plain {widths}", reference=reference).fits
        if chosen is None or fits:
            chosen = (widths, spec, fits)
        if not fits:
            break
    widths, spec, fits = chosen
    if teacher_logits is None:
        teacher_logits = LogitsCache(cache_dir).get(teacher, teacher_inputs(teacher, dataset).dataset)
    best, reasons = None, []
    for kd in (True, False):
        torch.manual_seed(seed)
        model = build_model(spec, dataset.input_shape, dataset.num_classes)
        result = train_student(model, dataset, TrainConfig(epochs=epochs, seed=seed, threads=1),
                               teacher_logits=teacher_logits if kd else None, evaluate_test=True)
        if result.status != "ok":
            reasons.append(f"{'with' if kd else 'without'} KD: {result.reason}")
        elif best is None or result.val_accuracy > best[1].val_accuracy:
            best = (kd, result, model)
    described = {"name": f"plain CNN {widths}", "arch": f"zoo:plain:widths={widths}", "meets_budget": fits,
                 "epochs": epochs}
    if best is None:
        return {**described, "status": "failed", "reason": "; ".join(reasons)}
    kd, result, model = best
    final_profile = check_on_target(model, target, dataset.input_shape, memory=True, label=described["name"],
                                    reference=reference).profile
    return {
        **described,
        "status": "ok",
        "kd": kd,
        "val_accuracy": result.val_accuracy,
        "test_accuracy": result.test_accuracy,
        "params": int(final_profile["params"]),
        "macs": int(final_profile["macs"]),
        "profile": final_profile,
    }
