"""Latency statistics and the adaptive timing loop every backend shares.

A backend hands `time_adaptively` a `run_once()` that runs the model once and
returns how long that took in milliseconds (wall clock with
`time.perf_counter_ns` on CPU, CUDA events on a GPU). The loop warms up
untimed, then times run after run until all of these hold: at least
`min_runs` samples, at least `min_seconds` spent, and the median moved by at
most `stable_rel` since the previous check; or until `max_seconds` or
`max_runs` is reached, whichever comes first. Checks happen at geometrically
spaced sample counts so that the loop stays cheap for sub-millisecond models.

Percentiles use the nearest-rank convention: p is the sample at rank
ceil(p * n) of the sorted samples, so every percentile reported is a latency
that was really observed, and p50 <= p90 <= p99 <= max by construction.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from profilers.profile import LatencyStats

__all__ = ["HIGH_CV", "Timing", "percentile", "summarize", "time_adaptively", "timing_warnings"]

# trtexec warns above 2.5% CV of GPU compute; CPU timings on a busy host are noisier,
# and the issue sets the bar at 5%.
HIGH_CV = 0.05
# First runs allocate buffers and warm caches and the CPU clock; a few fast runs
# of a tiny model are not enough, so the warm-up also lasts at least this long.
MIN_WARMUP_SECONDS = 0.1
# p99 from fewer samples than this is just the slowest run or two.
P99_MIN_SAMPLES = 100


@dataclass
class Timing:
    """Raw samples of one measurement and why sampling stopped."""

    samples_ms: list[float]
    stop_reason: str  # "stable" | "max_seconds" | "max_runs"
    seconds: float
    warmup_runs: int
    min_runs: int
    max_seconds: float
    stable_rel: float
    warnings: list[str] = field(default_factory=list)


def percentile(sorted_samples: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted samples (p in (0, 1])."""
    rank = max(1, math.ceil(p * len(sorted_samples)))
    return sorted_samples[rank - 1]


def summarize(samples_ms: list[float]) -> LatencyStats:
    """The `latency_ms` block of the Profile contract (`profilers.profile.LatencyStats`).

    Args:
        samples_ms: raw per-run latencies in milliseconds (at least one).

    Returns:
        {"p50","p90","p99","mean","std","min","max","cv","n"}; std is the sample
        standard deviation, cv = std / mean.
    """
    if not samples_ms:
        raise ValueError("summarize() needs at least one sample")
    ordered = sorted(samples_ms)
    mean = statistics.fmean(ordered)
    std = statistics.stdev(ordered) if len(ordered) > 1 else 0.0
    return {
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "mean": mean,
        "std": std,
        "min": ordered[0],
        "max": ordered[-1],
        "cv": std / mean if mean > 0 else 0.0,
        "n": len(ordered),
    }


def time_adaptively(run_once: Callable[[], float], measure, max_seconds: float | None = None) -> Timing:
    """Warm up, then sample `run_once()` until the median is stable or a cap is hit.

    Args:
        run_once: runs the model once, returns its latency in ms.
        measure: a `targets.Measurement` (warm-up, min runs/seconds, caps, stability).
        max_seconds: overrides `measure.max_seconds` (the time cap of the timed phase).

    Returns:
        A `Timing` with every sample kept.
    """
    cap = measure.max_seconds if max_seconds is None else max_seconds
    min_seconds = min(measure.min_seconds, cap)
    warmup_start = time.perf_counter()
    warmup_runs = 0
    while warmup_runs < measure.warmup_runs or time.perf_counter() - warmup_start < MIN_WARMUP_SECONDS:
        run_once()
        warmup_runs += 1
        if time.perf_counter() - warmup_start >= cap:
            break

    samples: list[float] = []
    next_check = measure.min_runs
    last_median: float | None = None
    start = time.perf_counter()
    while True:
        samples.append(run_once())
        n = len(samples)
        elapsed = time.perf_counter() - start
        if n >= measure.max_runs:
            stop = "max_runs"
            break
        if elapsed >= cap:
            stop = "max_seconds"
            break
        if n >= next_check:
            median = statistics.median(samples)
            stable = last_median is not None and abs(median - last_median) <= measure.stable_rel * last_median
            last_median = median
            next_check = n + max(10, n // 4)
            if stable and elapsed >= min_seconds:
                stop = "stable"
                break
    timing = Timing(
        samples_ms=samples,
        stop_reason=stop,
        seconds=time.perf_counter() - start,
        warmup_runs=warmup_runs,
        min_runs=measure.min_runs,
        max_seconds=cap,
        stable_rel=measure.stable_rel,
    )
    timing.warnings = timing_warnings(timing, summarize(samples))
    return timing


def timing_warnings(timing: Timing, latency: LatencyStats) -> list[str]:
    """Plain-language caveats about a measurement a person should not over-trust."""
    warnings = []
    if latency["cv"] > HIGH_CV:
        warnings.append(
            f"high variability: cv {latency['cv']:.1%} > {HIGH_CV:.0%}; other programs may be "
            "competing for the CPU (pin the target with cpu_affinity, or re-run on a quiet machine)"
        )
    if timing.stop_reason == "max_seconds":
        if latency["n"] < timing.min_runs:
            warnings.append(
                f"only {latency['n']} runs within max_seconds={timing.max_seconds:g} "
                f"(min_runs {timing.min_runs}); raise --max-seconds for firmer percentiles"
            )
        else:
            warnings.append(
                f"median not stable to {timing.stable_rel:.0%} within max_seconds={timing.max_seconds:g}"
            )
    if latency["n"] < P99_MIN_SAMPLES:
        warnings.append(f"p99 from {latency['n']} samples (< {P99_MIN_SAMPLES}) is close to the maximum")
    return warnings
