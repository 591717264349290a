"""The student's training recipe: ONE definition shared by the search, the final student and the baseline.

A claim "the searched student beats the baseline" is only fair when both are
trained on equal terms. Everything but the knobs a proposal carries (learning
rate, KD weight α and temperature τ) comes from the run's `SearchConfig` here:
the batch size, the epochs (`final_epochs` for a final training, a fidelity
for a short one), the trainer's schedule (`train_student`: SGD with Nesterov
momentum, cosine learning rate, weight decay, gradient clipping; its
`TrainConfig` defaults), one thread, no augmentation (the cached teacher
logits belong to un-augmented images) and the run's seed for the data order.
Weight initialisation is seeded with the architecture's seed
(`ArchSpec.seed`) right before the network is built, so the same spec and
recipe give the same trained weights.

The search's evaluator trains every family member with it (at a fidelity),
`compressor.pipeline.compress._final_training` trains the winner with it and
`compressor.pipeline.baselines` trains (and tunes) the baseline with it; the
baseline's report carries `recipe_fields` of its final `TrainConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from compressor.search.config import SearchConfig

# The knobs a proposal (or the baseline's tuning) decides; everything else is the recipe.
KNOB_FIELDS = {"lr": "lr", "kd_alpha": "alpha", "kd_tau": "tau"}


def _recipe(config: SearchConfig, epochs: int | None, time_budget_s: float | None) -> dict[str, Any]:
    return {"epochs": config.final_epochs if epochs is None else epochs, "seed": config.seed,
            "batch_size": config.batch_size, "threads": 1, "time_budget_s": time_budget_s}


def train_config(config: SearchConfig, knobs: Mapping[str, float], *, epochs: int | None = None,
                 time_budget_s: float | None = None):
    """The `TrainConfig` of a student trained under `config` with `knobs` (lr, kd_alpha, kd_tau).

    Args:
        epochs: None for a final training (`config.final_epochs`), else a short one's fidelity.
        time_budget_s: the trainer's time budget (a trial timeout), or None.
    """
    from compressor.train.distill import TrainConfig

    return TrainConfig(**_recipe(config, epochs, time_budget_s),
                       **{field: float(knobs[name]) for name, field in KNOB_FIELDS.items()})


def recipe_fields(config: SearchConfig) -> dict[str, Any]:
    """What a report states of a final training's recipe: its `TrainConfig` without the knobs."""
    from compressor.train.distill import TrainConfig

    skip = set(KNOB_FIELDS.values()) | {"time_budget_s"}
    train = TrainConfig(**_recipe(config, None, None))
    return {k: v for k, v in dataclasses.asdict(train).items() if k not in skip}


def save_trained(path, model, spec, dataset, meta: dict[str, Any]) -> None:
    """Save a network trained by `train_spec` as a compressor checkpoint: weights, ArchSpec, input contract, `meta`."""
    from compressor.models.checkpoint import Checkpoint, save_checkpoint

    save_checkpoint(path, Checkpoint(state_dict=model.state_dict(), arch=spec.to_json(),
                                     num_classes=dataset.num_classes, input_shape=dataset.input_shape,
                                     meta=meta, preprocessing=dataset.preprocessing))


def train_spec(spec, dataset, train, teacher_logits: dict | None, *, evaluate_test: bool,
               init_seed: int | None = None):
    """Build `spec` (weights seeded with `init_seed`, by default `spec.seed`) and train it with `train`; returns
    (model, TrainResult)."""
    import torch

    from compressor.spaces import build_model
    from compressor.train.distill import train_student

    torch.manual_seed(spec.seed if init_seed is None else init_seed)
    model = build_model(spec, dataset.input_shape, dataset.num_classes)
    return model, train_student(model, dataset, train, teacher_logits=teacher_logits, evaluate_test=evaluate_test)
