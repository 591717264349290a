"""A latency model of the run's target, calibrated on the run's own screenings.

Screening a candidate (build, ONNX export, a side-by-side measurement with the
drift reference) costs about a second; under a tight budget most proposals
used to be over it. This model predicts a candidate's latency from figures
that cost a few milliseconds, so the search can size a proposal to the budget
before measuring it (`compressor.search.fit`) and skip one that cannot fit.

**Features** (`network_features`): MACs, and among them the misaligned ones
(of convolutions whose channels are not multiples of `SIMD_LANES`, 16; see
below), parameters, activation elements (the
sum of every leaf module's output sizes: the memory traffic a small-image
CNN is bound by), leaf-module calls (the runtime's per-op overhead, which
dominates networks of a few hundred microseconds) and conv/linear layers
(depth), all from ONE forward pass of the built torch module at batch 1 with
hooks (MACs with `profilers.backends.torch_eager.count_macs`). From the module
rather than the ONNX export: on the 2-core dev VM the hooks took 3-26 ms per
network and the export 40-380 ms (plus ~25 ms of ONNX static analysis), so a
fit that predicts a few sizes stays far cheaper than one screening.

**Regressor**: an additive cost model, latency = c0 + c1 x MACs + c2 x
misaligned MACs + c3 x activations + c4 x ops with every c >= 0 (a per-call
overhead, compute, the premium of compute off the SIMD blocks, memory
traffic, a per-op overhead), fitted by scikit-learn's
`LinearRegression(positive=True)` on the relative error (weights 1/latency^2).
Chosen by measurement on 64 screened nago and zoo members on cpu-1t at 32 px
(`tools/bench_latency_model.py`, BENCHMARKS.md "Latency model"), fitted on the
first k screenings and asked about the rest, as a search uses it: at k = 8 /
16 / 32 it ranked with Kendall tau 0.93 / 0.91 / 0.93 and a median relative
error of 19 / 11 / 8%, against 0.67 / 0.65 / 0.80 and 50 / 51 / 34% for ridge
regression on log features and 0.75 / 0.76 / 0.82 and 34 / 30 / 19% for a
gradient-boosted tree on them (adding params and layers to the additive model
changed nothing: 19 / 11 / 9%). It also extrapolates, which a tree cannot: a
fit asks about sizes larger than any measured so far.

**Misaligned MACs.** Machines differ in what a MAC costs. On an AVX-512 Intel
Xeon (Sapphire Rapids), ONNX Runtime's blocked (NCHWc, 16 fp32 lanes)
convolutions take only channel counts that are multiples of 16; an 8- or
24-channel conv falls back to slower kernels: plain 24-24-24 ran 2.5x the
8-16-32 reference and 32-32-32, with 1.7x its MACs, 1.9x. With one MACs column
a digits-cluttered search there measured 10 of its 21 screenings over the
budget (48%; on the AVX2 AMD EPYC VM, 0%): the
model, calibrated on nago's first proposal, predicted plain CNNs with two or
three 8-channel convs at full resolution at 0.03 ms and they measured 0.05-0.07
ms. With misaligned MACs as a second column, its premium priced by the machine's
own screenings, the same run's 32 screenings (0.026-0.070 ms) are ranked with
Kendall tau 0.59 / 0.76 fitted on the first 8 / 16 (one column: 0.22 / 0.30;
`tools/bench_latency_model.py --from-run`). Where the two kinds cost the same
(AVX2 with 8-lane blocks: every width of the spaces is a multiple of 8) the fit
prices them alike; on random members spanning 0.05-5.6 ms the split (as two
columns) changes little (tau 0.89 / 0.88 / 0.89 against 0.88 / 0.89 / 0.88). Predictions are no
longer monotone in width (24 channels may be slower than 32); fit-to-budget's
search over a size ladder still lands on a size predicted under its goal next
to one predicted over it.

**Ranking vs absolute.** ReNAS (Xu et al. 2021) and CTNAS (Chen et al. 2021)
argue that a predictor only needs to *rank* architectures to steer a search.
Ordering is enough to pick the largest of a few sizes of one family (sizes of
one family are ordered by the model whatever its scale), but the fit also asks
"which sizes are under 0.8 x budget", an absolute question, and skipping a
proposal needs "far over budget" to be true in milliseconds. So the model is
used absolutely, with margins that keep its errors cheap: sizes aim at
`fill_fraction` of the budget (room for a ~20% error) and the real screening
still decides (`check_on_target`); a proposal is skipped unmeasured only when
even its smallest size is predicted over `LatencyModel.skip_factor` x the
budget (from the model's own residuals near the budget, within
[`NEAR_OVER`, `FAR_OVER`]) and the model has `MIN_SAMPLES` samples. The run
reports how good it was: Kendall's tau between predicted and measured latency
over its screenings (the ranking claim), the share of families predicted
feasible that were, and the skips.

**Units.** Where the run has a drift reference (`compressor.models.on_target`;
runtimes that interleave), the samples are kept in units of the reference's
latency at the start of the run that measured them (`unit_ms`), not in
milliseconds: a run's figures are all in its start's machine speed, and runs
started at different speeds (the dev VM's one-op floor read 0.0085-0.0180 ms
within one day) would otherwise calibrate each other off by that ratio; the
last round's shared millisecond calibration ranked with Kendall tau 0.05-0.21
and only 55-100% of its "predicted feasible" fitted (in reference units, the
next benchmark: 100% fitted, no screening over budget; BENCHMARKS.md,
"Budgets relative to the drift reference"). Predictions come back in
the asking run's milliseconds (units x its `unit_ms`). Without a reference the
unit is the millisecond.

**Calibration** persists per target fingerprint: the samples (features and
measured latency in the unit, JSON, never a pickle) under
`profilers.host.cache_root()/latency/<key>.json`, where the key hashes the
target's runtime settings (providers, threads, affinity, precision, batch,
optimisation level, the budget's percentile and statistic; not the budgets themselves, not
the name), the unit (the reference network, its percentile and the input it
was measured at, or milliseconds), the CPU model (`profilers.host.cpu_model`) and the runtime's own
description (its version). A later run on the same machine and runtime starts
calibrated; another CPU or runtime version starts empty, and a run that fits
to budget then measures `MIN_SAMPLES` sizes of its first proposal before it
fits anything (`compressor.search.fit.calibration_points`). Every screening of
the run adds its members; the file is rewritten atomically after each.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["FAR_OVER", "MIN_SAMPLES", "NEAR_OVER", "Features", "LatencyModel", "kendall_tau", "network_features",
           "reference_unit", "screening_summary", "target_key"]

SAMPLES_FORMAT = "compressor-latency-samples/3"
# Predictions are acted on (sizes fitted, proposals skipped) from this many screened members on.
MIN_SAMPLES = 8
# The most a skip threshold may be, as a factor of the budget (`LatencyModel.skip_factor`): at 1.5 most
# over-budget screenings of a fitted search were proposals predicted 1.15-1.45x over and measured over
# (BENCHMARKS.md, "Latency model and fit to budget").
FAR_OVER = 1.15
# The least it may be: a prediction under this share of the budget is always measured (see `skip_factor`).
NEAR_OVER = 0.8
# Skip when fewer than this share of the model's comparable predictions were measured at or under the budget.
SKIP_QUANTILE = 0.2
# Comparable predictions: samples predicted within this factor of the budget, either way.
NEAR_BUDGET = 2.0
# The newest samples kept per target: enough for any space, small enough to refit in milliseconds.
MAX_SAMPLES = 2000
# A floor for predictions (ms): the additive model cannot go below its overhead, but keep logs finite.
MIN_PREDICTED_MS = 1e-6
# Target settings that do not change how fast a network runs.
_NOT_SPEED = ("name", "description", "source", "budgets", "measure", "token_env", "timeout_s")


# The widest SIMD register of common CPUs holds 16 fp32 lanes (AVX-512); a conv whose channels are not a multiple
# of it cannot use the runtime's blocked kernels there (see the module docstring, "misaligned MACs").
SIMD_LANES = 16


@dataclass(frozen=True)
class Features:
    """What a network costs, as counted without measuring it (see the module docstring)."""

    macs: int
    params: int
    activations: int
    ops: int
    layers: int
    # The share of `macs` in convolutions whose channels are not a multiple of SIMD_LANES.
    misaligned_macs: int = 0

    def costs(self) -> np.ndarray:
        """The additive model's columns: one (the per-call overhead), MACs, misaligned MACs, activations, ops.

        Misaligned MACs are a second column on top of all MACs, so their non-negative coefficient is a
        premium: a misaligned MAC never costs less than an aligned one, and a calibration without any
        prices them alike (as the model did before it had the column).
        """
        return np.array([1.0, self.macs, self.misaligned_macs, self.activations, self.ops], dtype=float)


def network_features(model, input_shape: tuple[int, ...]) -> Features:
    """The features of a built torch module for one (C, H, W) input: one forward pass with hooks."""
    import torch

    from profilers.backends.torch_eager import count_macs, layer_macs

    counts = {"activations": 0, "ops": 0, "layers": 0, "misaligned_macs": 0}
    layer_types = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)

    def hook(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            counts["activations"] += output.numel()
            if isinstance(module, torch.nn.modules.conv._ConvNd) and not _aligned(module):
                counts["misaligned_macs"] += layer_macs(module, inputs, output)
        counts["ops"] += 1
        counts["layers"] += isinstance(module, layer_types)

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    was_training = model.training
    model.eval()
    try:
        macs = count_macs(model, torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return Features(macs=int(macs), params=sum(p.numel() for p in model.parameters()), **counts)


def _aligned(conv) -> bool:
    """Whether a conv's channels fill SIMD_LANES-wide blocks: its outputs, and its inputs unless they are an image's.

    A stem reading 1-4 image channels has its own kernels in blocked layouts (ONNX Runtime's NCHWc convolution
    takes a plain NCHW input there), so only its outputs count.
    """
    return conv.out_channels % SIMD_LANES == 0 and (conv.in_channels % SIMD_LANES == 0 or conv.in_channels <= 4)


def target_key(target, unit: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a calibration is valid for: the target's speed-relevant settings, the unit, the CPU and the runtime.

    `unit`: what the samples' latencies are measured in (`reference_unit`); None: milliseconds.
    """
    import profilers
    from profilers.host import cpu_model
    from profilers.side_by_side import statistic

    settings = {k: v for k, v in target.to_dict().items() if k not in _NOT_SPEED}
    settings["latency_percentile"] = target.budgets.latency_percentile
    # A p50 became the median of the quiet runs: a calibration measured as the median of all runs is another unit.
    settings["latency_statistic"] = statistic(target.budgets.latency_percentile)
    return {"target": settings, "unit": unit or "ms", "cpu": cpu_model(),
            "runtime": profilers.backend(target.runtime).describe()}


def reference_unit(reference, input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """The unit of a run with `reference` (an `on_target.DriftReference`): which network, percentile and input."""
    return {"reference": reference.label, "percentile": reference.percentile, "input_shape": list(input_shape),
            "num_classes": num_classes}


def _key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class LatencyModel:
    """The additive cost model (see the module docstring) over the samples of one target key.

    `samples` are (features, latency in units); `unit_ms` is this run's unit in milliseconds (1.0: the
    samples are milliseconds). `add` takes and `predict` returns milliseconds.
    """

    def __init__(self, key: dict[str, Any], path: Path | None = None,
                 samples: list[tuple[Features, float]] | None = None, unit_ms: float = 1.0) -> None:
        self.key = key
        self.path = path
        self.samples: list[tuple[Features, float]] = list(samples or [])
        self.unit_ms = float(unit_ms)
        self._fitted = None
        self._scale = None
        self._fitted_on = -1

    @classmethod
    def open(cls, target, cache_dir: str | os.PathLike | None = None, *, reference=None,
             input_shape: tuple[int, ...] = (), num_classes: int = 0) -> "LatencyModel":
        """The target's model with the samples this machine has stored for it (none when there are none).

        With the run's drift `reference` (and the input it is measured at) the samples are in its units.
        """
        from profilers.host import cache_root

        unit = None if reference is None else reference_unit(reference, input_shape, num_classes)
        key = target_key(target, unit)
        model = cls.load(key, cache_root(cache_dir) / "latency" / f"{_key_hash(key)}.json")
        if reference is not None:
            model.unit_ms = reference.start_ms
        return model

    @classmethod
    def load(cls, key: dict[str, Any], path: Path) -> "LatencyModel":
        """The samples at `path` if they were stored for `key`; an unreadable or foreign file starts empty."""
        samples = []
        try:
            data = json.loads(path.read_text())
            if data.get("format") == SAMPLES_FORMAT and data.get("key") == json.loads(json.dumps(key, default=str)):
                samples = [(Features(**s["features"]), float(s["latency"])) for s in data["samples"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            samples = []  # a corrupt cache costs a cold start, never the run
        return cls(key, path, samples)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": SAMPLES_FORMAT, "key": self.key,
                "samples": [{"features": asdict(f), "latency": v} for f, v in self.samples[-MAX_SAMPLES:]]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, default=str))
        os.replace(tmp, self.path)

    def add(self, features: Features, latency_ms: float, *, save: bool = True) -> None:
        """One measured network (milliseconds of this run); the model refits on its next prediction."""
        if latency_ms > 0 and math.isfinite(latency_ms):
            self.samples.append((features, float(latency_ms) / self.unit_ms))
            if save:
                self.save()

    @property
    def calibrated(self) -> bool:
        return len(self.samples) >= MIN_SAMPLES

    def skip_factor(self, budget_ms: float) -> float:
        """Skip a proposal whose smallest size is predicted over this x `budget_ms`: it would be measured over.

        From the model's own residuals rather than a fixed factor: the ratio
        measured / predicted of the samples predicted within `NEAR_BUDGET` x of
        the budget (all samples when fewer than `MIN_SAMPLES` are), and its
        `SKIP_QUANTILE` quantile q. A network predicted p is measured about p x
        ratio; it fits with a chance under `SKIP_QUANTILE` when p x q > budget,
        so the factor is 1 / q. Near the budget the model's error is not the
        median error over the whole space: small networks are bound by per-op
        overhead and noise, and a fixed 1.15 measured most families predicted
        0.9-1.15x over (BENCHMARKS.md). Clipped to [`NEAR_OVER`, `FAR_OVER`]:
        never more lenient than the fixed rule was, never skipping a family
        predicted under the fill goal a run uses by default (0.8), which a fit
        aims at. In-sample residuals (the model fitted on the same samples)
        understate its error a little; the quantile's margin covers that.
        """
        recent = self.samples[-MAX_SAMPLES:]
        predicted = self.predict([f for f, _ in recent])
        measured = np.array([v for _, v in recent]) * self.unit_ms
        near = (predicted >= budget_ms / NEAR_BUDGET) & (predicted <= budget_ms * NEAR_BUDGET)
        ratios = (measured / predicted)[near] if near.sum() >= MIN_SAMPLES else measured / predicted
        return float(np.clip(1.0 / np.quantile(ratios, SKIP_QUANTILE), NEAR_OVER, FAR_OVER))

    def predict(self, features: Sequence[Features]) -> np.ndarray:
        """Predicted latencies (ms of this run) of `features`; needs at least two samples."""
        if len(self.samples) < 2:
            raise ValueError("the latency model needs at least two measured networks to predict")
        if self._fitted_on != len(self.samples):
            from sklearn.linear_model import LinearRegression

            recent = self.samples[-MAX_SAMPLES:]
            X = np.array([f.costs() for f, _ in recent])
            y = np.array([v for _, v in recent])
            # Columns scaled to [0, 1] keep the non-negative least squares well conditioned.
            self._scale = np.maximum(X.max(axis=0), 1.0)
            self._fitted = LinearRegression(positive=True, fit_intercept=False).fit(X / self._scale, y,
                                                                                    sample_weight=1.0 / y**2)
            self._fitted_on = len(self.samples)
        X = np.array([f.costs() for f in features])
        return np.maximum(self._fitted.predict(X / self._scale) * self.unit_ms, MIN_PREDICTED_MS)


def kendall_tau(predicted: Sequence[float], measured: Sequence[float]) -> float | None:
    """Kendall's tau-b between two sequences (None with fewer than two pairs or no variation)."""
    if len(predicted) < 2:
        return None
    from scipy.stats import kendalltau

    tau = kendalltau(predicted, measured).statistic
    return None if tau is None or not math.isfinite(tau) else float(tau)


def screening_summary(records, budget_ms: float | None) -> dict[str, Any]:
    """How the latency model did over a run's proposals (records at the smallest fidelity), for report.json.

    `screenings`: proposals measured (not a warm start that reused the run's earlier verdict,
    `misc["screened"]`); `measured_in_full`: those of them with a member whose first look was
    borderline (`misc["measured_in_full"]`, compressor.models.on_target, "A first look");
    `over_budget_share`: the share of them over a budget; `fitted` / `skipped`: proposals resized and screened / recorded infeasible
    unmeasured (`misc["fit"]`; a repeat, resized to a network trained already, is neither); `calibration`: networks measured to calibrate a
    cold model (`misc["calibration"]`, not screenings); then, over the screenings made with a
    calibrated model (`misc["predicted"]`): `predicted`, their count;
    `kendall_tau` between the predicted and the measured family latency (the
    worst member's; a family stops at its first member over budget, so that is
    the worst one measured); `predicted_feasible`, those predicted at or under
    the budget, and `predicted_feasible_ok`, the share of them that fit.
    """
    def misc(rec, key: str) -> dict[str, Any]:
        return (rec.misc or {}).get(key) or {}

    skipped = sum(bool(misc(r, "fit").get("skipped")) for r in records)
    measured = [r for r in records if r.status in ("ok", "infeasible") and r.latency_ms is not None
                and not misc(r, "screened")]
    judged = [r for r in measured if "latency_ms" in misc(r, "predicted")]
    predicted = [misc(r, "predicted")["latency_ms"] for r in judged]
    feasible = [r for r, p in zip(judged, predicted) if budget_ms is not None and p <= budget_ms]
    return {
        "screenings": len(measured),
        "measured_in_full": sum(bool((r.misc or {}).get("measured_in_full")) for r in measured),
        "over_budget_share": (sum(r.status == "infeasible" for r in measured) / len(measured)) if measured else None,
        "fitted": sum(bool(misc(r, "fit")) and r.status != "repeat" for r in records) - skipped,
        "skipped": skipped,
        "calibration": sum(int((r.misc or {}).get("calibration", 0)) for r in records),
        "predicted": len(judged),
        "kendall_tau": kendall_tau(predicted, [r.latency_ms for r in judged]),
        "predicted_feasible": len(feasible),
        "predicted_feasible_ok": (sum(r.status == "ok" for r in feasible) / len(feasible)) if feasible else None,
    }
