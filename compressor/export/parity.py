"""Parity: does an exported artifact compute what the PyTorch model computes?

The reference is the PyTorch model's logits on a held-out split (the bundle
gates on the validation split and reports the test split); each artifact runs
the same inputs with its own runtime (`ort_logits`: ONNX
Runtime; `engine_logits`: the shipped TensorRT engine file, run by
`profilers.backends.trt`, which also built it). The figures are the largest
absolute logit difference, the mean one, top-1 agreement with PyTorch,
the artifact's accuracy and its drop from PyTorch's accuracy. `gate` turns the
figures into pass/fail: FP32 formats must match closely (logits and top-1),
reduced-precision formats may lose at most the configured accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from compressor.export.plan import FP32

# Inputs are fed in batches so a ResNet on a few thousand images stays within memory.
PARITY_BATCH = 64


def batches(x: np.ndarray, size: int = PARITY_BATCH) -> Iterator[np.ndarray]:
    for start in range(0, len(x), size):
        yield x[start : start + size]


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    """The PyTorch model's logits (float32) for `x`, computed in eval mode on the CPU."""
    import torch

    model = model.eval()
    outputs = []
    with torch.no_grad():
        for chunk in batches(x):
            outputs.append(model(torch.from_numpy(chunk)).float().numpy())
    return np.concatenate(outputs)


def ort_logits(path: str, x: np.ndarray, providers: Sequence[str] = ("CPUExecutionProvider",)) -> np.ndarray:
    """Run an ONNX file with ONNX Runtime on `x` and return its first output as float32."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=list(providers))
    input_name = session.get_inputs()[0].name
    outputs = [session.run(None, {input_name: chunk})[0] for chunk in batches(x)]
    return np.concatenate(outputs).astype(np.float32)


def engine_logits(path: str, x: np.ndarray) -> np.ndarray:
    """Run a serialised TensorRT engine file on `x` batch by batch and return its first output as float32."""
    from profilers.backends.trt import engine_outputs

    return np.concatenate(list(engine_outputs(Path(path).read_bytes(), batches(x))))


def figures(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Compare an artifact's logits with the reference logits.

    Returns:
        max_abs_diff, mean_abs_diff, top1_agreement, accuracy, reference_accuracy,
        accuracy_drop (reference minus artifact; negative when the artifact is better), samples.
    """
    if candidate.shape != reference.shape:
        raise ValueError(f"artifact output shape {candidate.shape} != PyTorch output shape {reference.shape}")
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    ref_top1 = reference.argmax(axis=1)
    cand_top1 = candidate.argmax(axis=1)
    reference_accuracy = float((ref_top1 == labels).mean())
    accuracy = float((cand_top1 == labels).mean())
    return {
        # nan (a broken artifact) must not compare as "small": report it as infinite.
        "max_abs_diff": float(np.nan_to_num(diff.max(), nan=np.inf)),
        "mean_abs_diff": float(np.nan_to_num(diff.mean(), nan=np.inf)),
        "top1_agreement": float((ref_top1 == cand_top1).mean()),
        "accuracy": accuracy,
        "reference_accuracy": reference_accuracy,
        "accuracy_drop": reference_accuracy - accuracy,
        "samples": int(len(labels)),
    }


def gate(fmt: str, parity: dict[str, Any], *, fp32_max_abs_diff: float, fp32_min_top1_agreement: float, max_accuracy_drop: float) -> dict[str, Any]:
    """Add `passed`, `gate` (the thresholds applied) and, on failure, `reason` to the figures.

    FP32 formats (onnx, ort) compute the same function as PyTorch, so they must
    match its logits to `fp32_max_abs_diff` and its top-1 choice on at least
    `fp32_min_top1_agreement` of the samples (near-ties may flip). INT8, FP16
    and TensorRT engines (which may use reduced precision) are judged by what a
    user loses: accuracy on the given split (validation, in the bundle) may drop by at most
    `max_accuracy_drop`.
    """
    failures = []
    if fmt in FP32:
        thresholds = {"max_abs_diff": fp32_max_abs_diff, "min_top1_agreement": fp32_min_top1_agreement}
        if not parity["max_abs_diff"] <= fp32_max_abs_diff:
            failures.append(f"max |diff| {parity['max_abs_diff']:.3g} > {fp32_max_abs_diff:g}")
        if parity["top1_agreement"] < fp32_min_top1_agreement:
            failures.append(f"top-1 agreement {parity['top1_agreement']:.2%} < {fp32_min_top1_agreement:.2%}")
    else:
        thresholds = {"max_accuracy_drop": max_accuracy_drop}
        if not np.isfinite(parity["max_abs_diff"]):
            failures.append("non-finite outputs")
        if parity["accuracy_drop"] > max_accuracy_drop + 1e-12:
            failures.append(
                f"accuracy drop {parity['accuracy_drop'] * 100:.2f} points "
                f"({parity['reference_accuracy']:.2%} -> {parity['accuracy']:.2%}) > {max_accuracy_drop * 100:g}"
            )
    result = {**parity, "passed": not failures, "gate": thresholds}
    if failures:
        result["reason"] = "; ".join(failures)
    return result
