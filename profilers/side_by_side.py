"""Side-by-side measurement: several models on one target, interleaved, with ratios and confidence intervals.

Why: on a shared or thermally throttled machine the absolute latency of one
model drifts by 10-25% between runs minutes apart, but two models measured in
the same rounds drift together, so their *ratio* is several times more stable.
This module measures models side by side and reports each one's ratio to a
chosen reference with a bootstrap confidence interval.

Python API::

    import profilers
    from targets import load_target

    result = profilers.compare(["student.onnx", "teacher.onnx"], load_target("cpu-1t"), reference=1)
    result.profiles[0]["latency_ms"]["p50"]      # each model's own Profile (raw milliseconds)
    result.latency[0]                            # Interval of its p50: value, low, high
    result.ratios[0]                             # Interval of p50(student) / p50(teacher)
    result.mode                                  # "interleaved" or "sequential"
    result.to_dict()                             # JSON, as `compressor profile A B --json` prints it

How it measures (`mode = "interleaved"`, ONNX Runtime targets): every model's
session is opened by the backend's own session code
(`profilers.backends.ort.pinned_sessions`: the target's session options, the
measuring thread and the runtime's threads pinned to `cpu_affinity`) inside one
process, and `interleave` runs them in rounds ``A B C A B C ...``, one timed
run of each model per round in a fixed order. Each timed run is preceded by
untimed runs of the same model (`settle_ms`: about 2.5 ms of them, at least
one, at most `MAX_SETTLE_RUNS`, counted from the warm-up's latencies): right
after another model, a model runs slower for several runs (measured with
tools/bench_profiler.py on one pinned core: mobilenet_v3_small at 64 px took
0.51 ms right after a ResNet-18 instead of 0.22 ms alone, and needed about 10
runs to recover; the tiny drift reference, 15% slow after one run, was within
2% after 5). With the settle runs, the timed runs agree with a model measured
alone, as a serving loop would see it. Settle runs count towards `seconds`.
Warm-up rounds come first (the target's
`warmup_runs`, and at least `stats.MIN_WARMUP_SECONDS` of timed warm-up); then
rounds continue until at least `min_rounds` (the target's `min_runs`) are done
and the runs (settle runs included) add up to `seconds`, or until `max_rounds`. The loop takes
a `timer(call) -> ms` (default: `perf_counter_ns` around the call), so tests
drive it with a synthetic clock and get exact, deterministic samples.

Statistics: each model's Profile is built from all its timed runs, exactly as
`profilers.measure` builds one (nearest-rank percentiles). The interval of a
model's latency at a percentile, and of its ratio to the reference, is a
*percentile bootstrap* (numpy, `seed`): rounds are resampled with replacement,
the *same* round indices for the model and the reference (a paired bootstrap,
which keeps what they shared in each round, drift included, in every
resample), the statistic is recomputed, e.g. ``p50(model[idx]) /
p50(reference[idx])`` for the ratio of medians, and the interval is the
``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled
values. Resamples: 2000, fewer for very long runs (at most 4 million resampled
values, at least 200). Rounds are treated as independent draws; slow drift
within one session makes successive rounds correlated, so the interval of an
*absolute* latency is too narrow when the machine drifts during the session,
while a ratio's is much less affected (both sides move together).

The quiet median: a p50 (of `latency`, and in `ratios`) is each model's median
over its *quiet* runs, those within `QUIET_TOLERANCE` (5%) of its lowest
`QUIET_LOW` (1%), or of its `QUIET_LOW_RANK`-th (5th) lowest run where a
session has fewer than 500; a p90 or p99 is of all runs. Why: a shared VM alternates
between a quiet state and slow ones that add a roughly fixed cost to every
call, not a factor (on a 2-core AMD EPYC VM, Zen 4: the one-op floor 0.0066 ->
0.021 ms, the drift reference 0.029 -> 0.059 ms, a plain 16-32-64 at 32 px
0.054 -> 0.082 ms, in spells of 0.1-2 s, at times for minutes). Both models of
a round share the state, but an added constant is no shared factor, so the
ratio of their medians over all runs followed the slow state's share of the
session: 16-32-64 over the reference measured 1.56 to 1.89 in 14 sessions of
one process (20% of its median), and budget verdicts near the line changed
from one session to the next. Over the quiet runs it measured 1.87 to 1.92
(2.8%; tools/bench_verdicts.py, BENCHMARKS.md). A session needs only one
quiet run in a hundred for it; anchored at the lowest 5% instead, sessions
with fewer quiet runs fell back to the slow ratio. In a session of fewer than
500 runs the lowest 1% is one to four runs, and a couple of runs faster than
the rest (a model's own spread, not a quiet state) would be the quiet runs by
themselves, so the anchor is never below the `QUIET_LOW_RANK`-th lowest run.
On the VM that changed little in real short sessions (12 of about 60 rounds,
tools/bench_verdicts.py: MobileNetV3-small over the reference spread 3.2%
against 2.6% anchored at the lowest alone, ResNet-18 18.1% against 22.9%);
MobileNetV3-small over ResNet-18 read 0.058-0.083 from one process to the
next (`compressor profile`, 7 runs) with either, an effect of the process
that no statistic of one session sees. On a quiet machine every
run is within 5% of the lowest and the quiet median is the median; a model the
slow state slows by less than 5% (one of a few milliseconds) keeps its slow
runs too. A tail percentile is left to all runs: the slow state is what it is
about. The Profile's own percentiles are of all runs.

Runtimes without in-process interleaving (`mode = "sequential"`: TensorRT,
eager torch, a remote agent) measure the models one after another with
`profilers.measure`; ratios are then of measurements taken at different times,
the bootstrap resamples each model's runs independently, and the result says
so in `mode` and `warnings`.

Memory: every Profile names what its `peak_memory_mb` means
(`peak_memory_meaning`, from the backend's `memory_meaning`); a memory ratio
is given only between figures of the same, non-empty meaning
(`memory_ratio`), and refused otherwise.

`latency_floor(target, input_shape)` measures a one-op model (a single Relu
on the input): the runtime's per-call cost on this machine, below which no
network can go and no budget can be met.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from profilers.errors import ProfileError
from profilers.profile import Profile
from profilers.stats import MIN_WARMUP_SECONDS, Timing, timing_warnings, summarize

__all__ = ["Comparison", "Interval", "Rounds", "bootstrap_interval", "compare", "interleave", "interleaves",
           "latency_floor", "memory_ratio", "statistic", "wall_timer"]

MODES = ("interleaved", "sequential")
PERCENTILE_FRACTIONS = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
# More rounds than this add nothing to a ratio's interval but cost bootstrap time and memory.
MAX_ROUNDS = 20_000
SETTLE_MS = 2.5
MAX_SETTLE_RUNS = 50
RESAMPLES = 2000
MAX_RESAMPLED_VALUES = 4_000_000
# The quiet runs of a model, of which a p50 is the median (module docstring, "The quiet median"): those within
# QUIET_TOLERANCE of its QUIET_LOW percentile, or of its QUIET_LOW_RANK-th lowest run where that is higher.
QUIET_LOW = 0.01
QUIET_LOW_RANK = 5
QUIET_TOLERANCE = 0.05


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval: `low <= value <= high`."""

    value: float
    low: float
    high: float

    def scaled(self, factor: float) -> Interval:
        return Interval(self.value * factor, self.low * factor, self.high * factor)

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass
class Rounds:
    """Timed samples of an interleaved loop: `samples_ms[r][i]` is model i's run in round r."""

    samples_ms: np.ndarray  # shape (rounds, models)
    stop_reason: str  # "rounds" (min_rounds done and `seconds` timed) | "max_runs"
    warmup_rounds: int
    seconds: float
    min_rounds: int

    def timing(self, index: int, stable_rel: float) -> Timing:
        """Model `index`'s runs as a `stats.Timing` (what `profile.build_profile` takes)."""
        samples = [float(x) for x in self.samples_ms[:, index]]
        timing = Timing(samples_ms=samples, stop_reason=self.stop_reason, seconds=float(sum(samples)) / 1000,
                        warmup_runs=self.warmup_rounds, min_runs=self.min_rounds, max_seconds=self.seconds,
                        stable_rel=stable_rel)
        timing.warnings = timing_warnings(timing, summarize(samples))
        return timing


def wall_timer(call: Callable[[], object]) -> float:
    """Run `call` once; its wall time in milliseconds."""
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) / 1e6


def interleave(calls: Sequence[Callable[[], object]], *, seconds: float, min_rounds: int, max_rounds: int,
               warmup_rounds: int, settle_ms: float = SETTLE_MS,
               timer: Callable[[Callable[[], object]], float] = wall_timer) -> Rounds:
    """Run `calls` in rounds (one timed run of each, in order, per round): warm-up rounds, then timed rounds.

    Args:
        calls: one callable per model, running it once.
        seconds: stop once the runs after warm-up (all models, settle runs included) add up to this
            and `min_rounds` are done.
        min_rounds, max_rounds: bounds on the timed rounds.
        warmup_rounds: untimed rounds first (continued until `MIN_WARMUP_SECONDS` of warm-up were timed).
        settle_ms: untimed runs of a model right before each of its timed runs, about this long
            (from its warm-up median; at least 1, at most `MAX_SETTLE_RUNS`; 0: none).
        timer: runs a call, returns its latency in ms; the only clock the loop reads (settle runs go
            through it too, and are discarded).
    """
    warmed, warm_ms = 0, 0.0
    warm: list[list[float]] = [[] for _ in calls]
    while warmed < warmup_rounds or warm_ms < MIN_WARMUP_SECONDS * 1000:
        for call, times in zip(calls, warm):
            times.append(timer(call))
            warm_ms += times[-1]
        warmed += 1
        if warm_ms >= seconds * 1000:
            break
    settle = [0 if settle_ms <= 0 else
              min(MAX_SETTLE_RUNS, max(1, math.ceil(settle_ms / max(float(np.median(t)), 1e-6)))) for t in warm]
    rows: list[list[float]] = []
    total_ms = 0.0
    stop = "max_runs"
    while len(rows) < max_rounds:
        row = []
        for call, runs in zip(calls, settle):
            for _ in range(runs):
                total_ms += timer(call)
            row.append(timer(call))
        rows.append(row)
        total_ms += sum(row)
        if len(rows) >= min_rounds and total_ms >= seconds * 1000:
            stop = "rounds"
            break
    return Rounds(samples_ms=np.asarray(rows, dtype=float), stop_reason=stop, warmup_rounds=warmed,
                  seconds=seconds, min_rounds=min_rounds)


def _nearest_rank(values: np.ndarray, q: float, axis: int = -1) -> np.ndarray:
    # inverted_cdf is the nearest-rank definition of profilers.stats.percentile (rank ceil(q * n)).
    return np.percentile(values, 100 * q, axis=axis, method="inverted_cdf")


def statistic(percentile: str) -> str:
    """What `compare` reports as a model's latency at `percentile` (module docstring, "The quiet median")."""
    if percentile == "p50":
        return (f"p50 of the quiet runs (within {100 * QUIET_TOLERANCE:g}% of the lowest {100 * QUIET_LOW:g}% "
                f"or {QUIET_LOW_RANK} runs)")
    return f"{percentile} of all runs"


def _quiet_rank(values: np.ndarray, q: float, axis: int = -1) -> np.ndarray:
    """The nearest-rank `q` percentile of the quiet runs along `axis`: those within `QUIET_TOLERANCE` of the
    `QUIET_LOW` percentile, or of the `QUIET_LOW_RANK`-th lowest run where that is higher (module docstring,
    "The quiet median")."""
    ordered = np.sort(values, axis=axis)
    n = ordered.shape[axis]
    anchor = min(max(math.ceil(round(QUIET_LOW * n, 9)), QUIET_LOW_RANK), n) - 1
    low = np.take(ordered, [anchor], axis=axis)
    # The quiet runs are the first `count` of the ordered ones.
    count = (ordered <= (1 + QUIET_TOLERANCE) * low).sum(axis=axis, keepdims=True)
    rank = np.maximum(np.ceil(q * count).astype(int) - 1, 0)
    return np.take_along_axis(ordered, rank, axis=axis).squeeze(axis)


def bootstrap_interval(numerator: Sequence[float], denominator: Sequence[float] | None = None, *, q: float = 0.5,
                       confidence: float = 0.95, seed: int = 0, paired: bool = True, quiet: bool = False) -> Interval:
    """Percentile-bootstrap interval of ``pq(numerator)`` or of ``pq(numerator) / pq(denominator)``.

    Args:
        numerator, denominator: per-round samples; paired samples have the same length and are
            resampled with the same indices (the interleaved case).
        q: the percentile as a fraction (0.5 for the median), nearest-rank.
        confidence: the interval's coverage, e.g. 0.95.
        seed: numpy seed of the resampling (the result is deterministic).
        paired: resample rounds jointly (True) or each side's runs independently (sequential runs).
        quiet: the percentile of each side's quiet runs (`_quiet_rank`), not of all its runs.
    """
    num = np.asarray(numerator, dtype=float)
    den = None if denominator is None else np.asarray(denominator, dtype=float)
    if num.size == 0 or (den is not None and den.size == 0):
        raise ValueError("bootstrap_interval needs samples on both sides")
    if paired and den is not None and den.size != num.size:
        raise ValueError("paired samples must have the same length")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    resamples = max(200, min(RESAMPLES, MAX_RESAMPLED_VALUES // max(num.size, 1)))
    rank = _quiet_rank if quiet else _nearest_rank
    idx = rng.integers(0, num.size, size=(resamples, num.size))
    stat = rank(num[idx], q, axis=1)
    point = float(rank(num, q))
    if den is not None:
        den_idx = idx if paired else rng.integers(0, den.size, size=(resamples, den.size))
        stat = stat / rank(den[den_idx], q, axis=1)
        point /= float(rank(den, q))
    tail = (1 - confidence) / 2
    low, high = np.quantile(stat, [tail, 1 - tail])
    return Interval(point, min(float(low), point), max(float(high), point))


def memory_ratio(profile: Profile, reference: Profile) -> float | None:
    """peak memory of `profile` / that of `reference`: None when either is unmeasured.

    Raises:
        ProfileError: the two figures mean different things (e.g. RSS of a process vs GPU memory).
    """
    meaning, other = profile.get("peak_memory_meaning"), reference.get("peak_memory_meaning")
    if meaning != other:
        raise ProfileError(f"peak memory of {profile['model']} ({meaning or 'not measured'}) and of "
                           f"{reference['model']} ({other or 'not measured'}) mean different things; "
                           "they are not compared")
    if profile.get("peak_memory_mb") is None or not reference.get("peak_memory_mb"):
        return None
    return profile["peak_memory_mb"] / reference["peak_memory_mb"]


@dataclass
class Comparison:
    """Models measured side by side on one target (see the module docstring)."""

    mode: str  # "interleaved" | "sequential"
    target: str
    percentile: str  # the statistic of `latency` and `ratios`: "p50", "p90" or "p99"
    confidence: float
    reference: int | None  # index of the reference model, None: no ratios
    rounds: int  # timed rounds (interleaved) or runs of the shortest measurement (sequential)
    seconds: float  # timed seconds, all models
    profiles: list[Profile]
    latency: list[Interval]  # each model's latency at `percentile` (what `statistic` says), ms
    ratios: list[Interval | None]  # each model / the reference at `percentile`
    memory_ratios: list[float | None]  # each model's peak memory / the reference's (same meaning only)
    warnings: list[str] = field(default_factory=list)
    samples_ms: list[np.ndarray] = field(default_factory=list, repr=False)  # per model, per round
    seed: int = 0

    @property
    def labels(self) -> list[str]:
        return [p["model"] for p in self.profiles]

    def ratio(self, index: int, other: int, percentile: str | None = None) -> Interval:
        """Interval of model `index`'s latency / model `other`'s, at `percentile` (default: the comparison's)."""
        percentile = percentile or self.percentile
        return bootstrap_interval(self.samples_ms[index], self.samples_ms[other], q=PERCENTILE_FRACTIONS[percentile],
                                  confidence=self.confidence, seed=self.seed, paired=self.mode == "interleaved",
                                  quiet=percentile == "p50")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "target": self.target,
            "percentile": self.percentile,
            "confidence": self.confidence,
            "reference": None if self.reference is None else self.labels[self.reference],
            "rounds": self.rounds,
            "seconds": self.seconds,
            "interval_method": "percentile bootstrap over rounds" + (", paired" if self.mode == "interleaved" else ""),
            "statistic": statistic(self.percentile),
            "models": [
                {"model": p["model"], "latency_ms": lat.to_dict(),
                 "ratio": None if ratio is None else ratio.to_dict(), "memory_ratio": mem, "profile": p}
                for p, lat, ratio, mem in zip(self.profiles, self.latency, self.ratios, self.memory_ratios)
            ],
            "warnings": list(self.warnings),
        }


def interleaves(target) -> bool:
    """Whether `target`'s runtime measures models interleaved in one process (else: one after another)."""
    import profilers

    return hasattr(profilers.backend(target.runtime), "measure_interleaved")


def compare(models: Sequence[Any], target, *, reference: int | None = 0, labels: Sequence[str | None] | None = None,
            input_shape: tuple[int, ...] | Sequence[tuple[int, ...]] | None = None, seconds: float | None = None,
            memory: bool = False,
            percentile: str = "p50", confidence: float = 0.95, seed: int = 0,
            timer: Callable[[Callable[[], object]], float] = wall_timer) -> Comparison:
    """Measure `models` side by side on `target`; each one's Profile, latency interval and ratio to `reference`.

    Args:
        models: .onnx paths, ONNX bytes or ModelProtos (torch modules for a `torch` target).
        target: a `targets.Target`; its `measure` settings give warm-up and the least rounds.
        reference: index of the model the ratios divide by; None for no ratios.
        labels: names in the Profiles (default: file names).
        input_shape: first input's shape, batch included (default: each model's, as `measure`); a list gives
            one shape per model (a teacher at 224 px beside a student at 64 px).
        seconds: timed seconds over all models (default: the target's `min_seconds` per model).
        memory: also measure each model's peak memory (a fresh process each).
        percentile: the statistic of the intervals and ratios ("p50", "p90", "p99").
        confidence: the intervals' coverage.
        seed: the bootstrap's seed.
        timer: how one run is timed (interleaved mode only).

    Raises:
        ProfileError: no models, a bad reference or percentile, or what `profilers.measure` refuses.
    """
    import profilers

    models = list(models)
    if not models:
        raise ProfileError("compare needs at least one model")
    if reference is not None and not 0 <= reference < len(models):
        raise ProfileError(f"reference {reference} is not one of the {len(models)} models")
    if percentile not in PERCENTILE_FRACTIONS:
        raise ProfileError(f"percentile must be one of {', '.join(PERCENTILE_FRACTIONS)}, got {percentile!r}")
    labels = list(labels) if labels is not None else [None] * len(models)
    if len(labels) != len(models):
        raise ProfileError(f"{len(labels)} labels for {len(models)} models")
    if input_shape is None or isinstance(input_shape[0], int):
        shapes = [input_shape] * len(models)
    else:
        shapes = [tuple(s) for s in input_shape]
    if len(shapes) != len(models):
        raise ProfileError(f"{len(shapes)} input shapes for {len(models)} models")
    runner = profilers.ready_backend(target, models)
    measure = target.measure
    total = seconds if seconds is not None else measure.min_seconds * len(models)
    if total <= 0:
        raise ProfileError(f"seconds must be positive, got {total}")
    q = PERCENTILE_FRACTIONS[percentile]
    warnings: list[str] = []
    if interleaves(target):
        mode = "interleaved"
        found: list[Rounds] = []

        def loop(calls):
            found.append(interleave(calls, seconds=total, min_rounds=measure.min_runs,
                                    max_rounds=min(measure.max_runs, MAX_ROUNDS), warmup_rounds=measure.warmup_runs,
                                    timer=timer))
            return [found[0].timing(i, measure.stable_rel) for i in range(len(calls))]

        profiles = runner.measure_interleaved(models, target, input_shapes=shapes, labels=labels, memory=memory,
                                              loop=loop)
        samples = [found[0].samples_ms[:, i] for i in range(len(models))]
        rounds = len(found[0].samples_ms)
    else:
        mode = "sequential"
        profiles = [profilers.measure(m, target, input_shape=shape, max_seconds=total / len(models),
                                      memory=memory, keep_samples=True, label=label)
                    for m, shape, label in zip(models, shapes, labels)]
        samples = [np.asarray(p.pop("latency_ms_samples"), dtype=float) for p in profiles]
        rounds = min(len(s) for s in samples)
        if len(models) > 1:
            warnings.append(f"the {target.runtime} runtime cannot interleave models in one process here: they were "
                            "measured one after another, so drift between their measurements is not cancelled")
    latency = [bootstrap_interval(s, q=q, confidence=confidence, seed=seed, quiet=percentile == "p50")
               for s in samples]
    result = Comparison(mode=mode, target=target.name, percentile=percentile, confidence=confidence,
                        reference=reference, rounds=rounds, seconds=float(sum(s.sum() for s in samples)) / 1000,
                        profiles=profiles, latency=latency, ratios=[None] * len(models),
                        memory_ratios=[None] * len(models), warnings=warnings, samples_ms=samples, seed=seed)
    if reference is not None:
        result.ratios = [result.ratio(i, reference) for i in range(len(models))]
        result.memory_ratios = [memory_ratio(p, profiles[reference]) for p in profiles]
    return result


def floor_model(input_shape: tuple[int, ...]):
    """The one-op ONNX model of `latency_floor`: a single Relu on a float input of `input_shape`."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])], "floor",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(input_shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def latency_floor(target, input_shape: tuple[int, ...], *, seconds: float | None = None,
                  percentile: str = "p50") -> Interval:
    """The runtime's per-call latency floor on `target`: a one-op model (Relu) on `input_shape`, in ms.

    Nothing the runtime serves can be faster than this on this machine (it is the cost of a call:
    argument conversion, output allocation, thread hand-off), so a latency budget below it cannot
    be met by any network.
    """
    model = floor_model(input_shape)
    if target.runtime == "torch":
        import torch

        model = torch.nn.ReLU()
    result = compare([model], target, reference=None, labels=["one-op model (Relu)"], input_shape=input_shape,
                     seconds=seconds, percentile=percentile)
    return result.latency[0]
