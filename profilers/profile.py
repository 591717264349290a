"""The Profile contract, and assembling it from a backend's measurements.

A Profile is what every measurement returns, locally or from a device's agent:
a JSON-serialisable dict whose keys and types `Profile` (a TypedDict) fixes,
with the latency block `LatencyStats` and the `MeasurementInfo` block nested
in it. Reports, the search and `compressor profile --json` read these keys.

Latency is milliseconds per batch; throughput is inputs per second at the
median latency (batch size * 1000 / p50). Warnings from the timing loop,
static analysis and the backend are merged, in that order. `environment` is
open-ended: host facts (`profilers.host.environment`) plus what the backend
adds (runtime version, providers, threads, affinity), and from a remote
device `device` (its fingerprint) and `agent` (queue wait, start and end
times, URL).
"""

from __future__ import annotations

from typing import Any, TypedDict

from profilers.stats import Timing, summarize

__all__ = ["LatencyStats", "MeasurementInfo", "Profile", "budget_violations", "build_profile"]


class LatencyStats(TypedDict):
    """Latency over the timed runs, milliseconds per batch; percentiles are nearest-rank (`profilers.stats`)."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float  # sample standard deviation
    min: float
    max: float
    cv: float  # std / mean
    n: int  # timed runs


class MeasurementInfo(TypedDict):
    """How the timing loop ran."""

    warmup_runs: int
    timed_seconds: float
    stop_reason: str  # "stable" | "max_seconds" | "max_runs"; side by side (`profilers.compare`) also "rounds"
    percentiles: str  # "nearest-rank"


class _ProfileFields(TypedDict):
    target: str  # the target's name
    runtime: str  # the backend that ran the model
    model: str  # its label: file name, torchvision:ARCH, ...
    input_shape: list[int]  # the first input's shape, batch included
    latency_ms: LatencyStats
    throughput_per_s: float | None  # inputs per second at p50
    peak_memory_mb: float | None  # None when not measured (see the backend)
    # What the figure means on this runtime (`profilers.memory_meaning`); None where the runtime measures none.
    # Figures of different meanings are never compared.
    peak_memory_meaning: str | None
    model_size_mb: float
    params: int
    macs: int
    environment: dict[str, Any]
    measurement: MeasurementInfo
    warnings: list[str]


class Profile(_ProfileFields, total=False):
    """One measurement of a model on a target; `latency_ms_samples` only when asked for (`keep_samples`)."""

    latency_ms_samples: list[float]


def build_profile(
    *,
    target,
    runtime: str,
    label: str,
    input_shape: tuple[int, ...],
    timing: Timing,
    peak_memory_mb: float | None,
    peak_memory_meaning: str | None,
    static: dict,
    environment: dict,
    warnings: list[str] | None = None,
    keep_samples: bool = False,
) -> Profile:
    """The Profile (JSON-serialisable).

    Args:
        target: the `targets.Target` measured on.
        runtime: the backend that ran the model.
        label: how the model is named in reports (file name, torchvision:ARCH, ...).
        input_shape: the first input's shape, batch included.
        timing: the raw samples and stop reason from `time_adaptively`.
        peak_memory_mb: the backend's peak-memory figure, or None when not measured.
        peak_memory_meaning: what that figure means on this runtime (the backend's `memory_meaning`).
        static: `static_analysis` output (params, macs, model_size_mb).
        environment: the backend's environment block.
        warnings: backend-specific caveats.
        keep_samples: also return the raw samples under "latency_ms_samples".
    """
    latency = summarize(timing.samples_ms)
    batch = input_shape[0] if input_shape else 1
    all_warnings = list(timing.warnings)
    if static.get("unresolved_mac_nodes"):
        all_warnings.append(
            f"MACs leave out {static['unresolved_mac_nodes']} node(s) whose shapes inference could not resolve"
        )
    all_warnings += warnings or []
    profile: Profile = {
        "target": target.name,
        "runtime": runtime,
        "model": label,
        "input_shape": [int(d) for d in input_shape],
        "latency_ms": latency,
        "throughput_per_s": batch * 1000.0 / latency["p50"] if latency["p50"] > 0 else None,
        "peak_memory_mb": peak_memory_mb,
        "peak_memory_meaning": peak_memory_meaning,
        "model_size_mb": static["model_size_mb"],
        "params": static["params"],
        "macs": static["macs"],
        "environment": environment,
        "measurement": {
            "warmup_runs": timing.warmup_runs,
            "timed_seconds": round(timing.seconds, 4),
            "stop_reason": timing.stop_reason,
            "percentiles": "nearest-rank",
        },
        "warnings": all_warnings,
    }
    if keep_samples:
        profile["latency_ms_samples"] = list(timing.samples_ms)
    return profile


def budget_violations(profile: Profile, budgets, latency_ms: float | None = None) -> list[tuple[str, float]]:
    """The budgets a Profile misses: [(reason, relative overshoot)], empty when every budget is met.

    Args:
        profile: a Profile dict (latency at `budgets.latency_percentile`, peak memory, file size).
        budgets: a `targets.Budgets`; None fields are unconstrained, and an unmeasured memory is not judged.
        latency_ms: the latency to judge instead of the profile's own (a drift-corrected figure).
    """
    out = []
    if budgets.latency_ms is not None:
        value = profile["latency_ms"][budgets.latency_percentile] if latency_ms is None else latency_ms
        if value > budgets.latency_ms:
            out.append((f"latency {budgets.latency_percentile} {value:.3f} ms > budget {budgets.latency_ms:.3g} ms",
                        value / budgets.latency_ms - 1))
    memory = profile.get("peak_memory_mb")
    if budgets.memory_mb is not None and memory is not None and memory > budgets.memory_mb:
        out.append((f"peak memory {memory:.1f} MiB > budget {budgets.memory_mb:.3g} MiB", memory / budgets.memory_mb - 1))
    size = profile.get("model_size_mb")
    if budgets.size_mb is not None and size is not None and size > budgets.size_mb:
        out.append((f"size {size:.3f} MiB > budget {budgets.size_mb:.3g} MiB", size / budgets.size_mb - 1))
    return out
