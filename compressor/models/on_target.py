"""The one measure-and-check step: networks -> ONNX -> side-by-side measurement on the target -> budget verdicts.

Every place that asks "does this network fit the target?" goes through this
module: the search's screening of each family member, the reachability check
before a search, the teacher's description, the hand-designed baseline's
choice of width and the final session at the end of `compress` (teacher,
student and baseline in one side-by-side measurement). One module means one
export path, one memory policy and one budget rule, so a student and its
baseline can never be judged by different code.

**Measurement.** `check_side_by_side` measures its models together with
`profilers.compare` (interleaved rounds in one process where the runtime
allows it; see `profilers.side_by_side`). `check_on_target` is the same for
one model.

**Drift correction.** A run keeps a `DriftReference`: a fixed tiny CNN
(`REFERENCE_ARCH`, built deterministically) whose latency was measured once
at the start of the run (`start_ms`). Each later check measures the reference
interleaved with its candidates, and a candidate's latency is reported raw
and corrected: ``corrected = raw * ref_start / ref_now``, computed as the
candidate/reference ratio (with its paired bootstrap interval) times
`start_ms`. Budget verdicts use the corrected figure, i.e. every candidate of
a run is judged in the machine's speed at the start of that run. What this
corrects: a slowdown or speed-up that affects the reference and the candidate
alike (CPU frequency and thermal state, a noisy neighbour on the same core,
a VM's steal time) and that happens between checks. What it cannot correct:
contention that affects the candidate more than the tiny reference (a
large model suffers more from cache or memory-bandwidth contention than one
that fits in L2), noise within one interleaved session beyond what the
interval shows, and a machine that was already slow when the run started
(the start is the yardstick). Where the runtime cannot interleave (TensorRT,
eager torch, a remote agent) no reference is used and figures are raw.

**Verdicts with confidence.** The latency judged is the one at the budget's
percentile, with its confidence interval (95%). A check is ``within`` when
the interval's upper bound is at or under the budget, ``over`` when its lower
bound is above it (or a memory or size budget is missed: those figures are
single values), and ``borderline`` otherwise. A borderline check is measured
again for `REMEASURE_FACTOR` times as long; if it is still borderline it is
decided by the point estimate, and `decided_by` says so.

**A first look** (`first_look`, the search's screening): the session is
first measured for that many seconds, and only when a model is borderline
there is it measured for the full `seconds` (then, still borderline, the
longer remeasure). Most screenings are not near the line (a proposal is
sized to 0.8x the budget), and their verdict is decided long before the
full measurement: on the 2-core AMD EPYC VM a screening's 0.6 s of
measuring was most of the ~0.8 s a member took, and on digits a family's
screening (two members, 1.6 s) took longer than its one-epoch training
(1.1-1.6 s). Each look is a fresh session, so a model judged borderline at
the first look gets a second, independent chance to be judged wrongly: the
first look's error adds to the full measurement's (at most 2x the 2.5% per
side of a 95% interval). A screening only decides which networks are
trained; what ships is judged again in the final session, measured in full.

**Memory policy.** Peak memory costs a fresh measuring process (about half a
second per model), so by default it is measured only when the target has a
memory budget to judge; callers that report the figure (the final session,
the teacher) ask for it explicitly.

**Latency floor.** `check_floor` measures the runtime's per-call floor (a
one-op model, `profilers.latency_floor`) and refuses a latency budget below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["Checked", "DriftReference", "REFERENCE_ARCH", "Session", "check_floor", "check_on_target",
           "check_side_by_side", "measurable"]

# The drift reference: the smallest plain CNN of the zoo space, a few microseconds to a few tenths of a
# millisecond on a CPU, so measuring it next to every candidate costs little.
REFERENCE_ARCH = "zoo:plain:widths=8-16-32"
REMEASURE_FACTOR = 3
CONFIDENCE = 0.95
VERDICTS = ("within", "over", "borderline")
FLOOR_SECONDS = 0.3


@dataclass
class Checked:
    """A model measured on a target and judged against its budgets.

    Attributes:
        profile: the Profile dict of the measurement (raw figures).
        violations: [(reason, relative overshoot)] of the budgets missed, judged on `latency_ms`; empty
            when all are met.
        verdict: "within" (the latency's upper confidence bound is at or under the budget and every other
            budget is met), "over" (its lower bound is above the budget, or another budget is missed) or
            "borderline" (the interval straddles the budget even after a longer measurement; `fits` then
            follows the point estimate, `decided_by` = "point estimate").
        latency_ms, latency_interval: the latency judged (budget percentile; drift-corrected when `drift`
            is set), ms, and its (low, high) confidence interval.
        raw_latency_ms: the same percentile as measured, uncorrected.
        drift: reference latency at the start of the run / now; None without a drift reference.
        budget_ratio, budget_ratio_interval: latency_ms / the latency budget and its interval; None
            without a latency budget.
        remeasured: an earlier measurement (the first look, or the full one) was borderline and this is a
            longer one.
        decided_by: "interval" or "point estimate".
        session: the side-by-side session the figures come from (`Session.describe`).
    """

    profile: dict[str, Any]
    violations: list[tuple[str, float]] = field(default_factory=list)
    verdict: str = "within"
    latency_ms: float | None = None
    latency_interval: tuple[float, float] | None = None
    raw_latency_ms: float | None = None
    drift: float | None = None
    budget_ratio: float | None = None
    budget_ratio_interval: tuple[float, float] | None = None
    remeasured: bool = False
    decided_by: str = "interval"
    session: dict[str, Any] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return not self.violations

    @property
    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.violations]

    @property
    def overshoot(self) -> float:
        """The largest relative overshoot (0.0 when every budget is met)."""
        return max((over for _, over in self.violations), default=0.0)

    @property
    def within_budget(self) -> bool | str:
        """True, False or "borderline": how report.json states the verdict."""
        return "borderline" if self.verdict == "borderline" else self.verdict == "within"

    def verdict_fields(self) -> dict[str, Any]:
        """The verdict as report.json stores it for a student, a baseline or the teacher."""
        return {"within_budget": self.within_budget, "verdict": self.verdict, "decided_by": self.decided_by,
                "fits": self.fits, "reasons": self.reasons, "latency_ms": self.latency_ms,
                "latency_interval": self.latency_interval, "raw_latency_ms": self.raw_latency_ms,
                "drift": self.drift, "budget_ratio": self.budget_ratio,
                "budget_ratio_interval": self.budget_ratio_interval, "remeasured": self.remeasured,
                "session": self.session.get("id")}


@dataclass(frozen=True)
class DriftReference:
    """The run's yardstick: `REFERENCE_ARCH` for one input shape, and its latency at the start of the run."""

    onnx: bytes = field(repr=False)
    label: str
    percentile: str
    start_ms: float

    @staticmethod
    def model_bytes(target, input_shape: tuple[int, ...], num_classes: int) -> bytes:
        """The reference network's ONNX bytes: weights seeded, so every build is the same network."""
        import torch

        from compressor.models.onnx_export import export_onnx
        from compressor.spaces import build_model, spec_from_ref

        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_model(spec_from_ref(REFERENCE_ARCH, seed=0), tuple(input_shape), num_classes)
            return export_onnx(model, (target.batch_size, *input_shape))

    @classmethod
    def start(cls, target, input_shape: tuple[int, ...], num_classes: int, *,
              seconds: float | None = None) -> DriftReference | None:
        """Measure the reference now (the run's start); None where the runtime cannot interleave."""
        import profilers

        if not profilers.interleaves(target):
            return None
        data = cls.model_bytes(target, input_shape, num_classes)
        percentile = target.budgets.latency_percentile
        measured = profilers.compare([data], target, reference=None, labels=[REFERENCE_ARCH], seconds=seconds,
                                     percentile=percentile)
        return cls(onnx=data, label=REFERENCE_ARCH, percentile=percentile, start_ms=measured.latency[0].value)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.label, "percentile": self.percentile, "start_ms": self.start_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], target, input_shape: tuple[int, ...],
                  num_classes: int) -> DriftReference:
        """The reference a run stored (its start figure), rebuilt for this process."""
        return cls(onnx=cls.model_bytes(target, input_shape, num_classes), label=data["arch"],
                   percentile=data["percentile"], start_ms=float(data["start_ms"]))


@dataclass
class Session:
    """One side-by-side measurement of several models, each judged: `checked[name]`."""

    id: str
    checked: dict[str, Checked]
    comparison: Any = field(repr=False)  # the last profilers.Comparison

    def index(self, name: str) -> int:
        return list(self.checked).index(name)

    def ratio(self, name: str, other: str, percentile: str = "p50") -> tuple[float, tuple[float, float]]:
        """(value, (low, high)) of `name`'s latency / `other`'s, measured in this session."""
        found = self.comparison.ratio(self.index(name), self.index(other), percentile)
        return found.value, (found.low, found.high)


def measurable(model, target, shape: tuple[int, ...]):
    """What the profilers measure for `model` on `target`: ONNX bytes for a module (the module itself for eager torch)."""
    if hasattr(model, "state_dict") and target.runtime != "torch":
        from compressor.models.onnx_export import export_onnx

        return export_onnx(model, shape)
    return model


def check_side_by_side(models: Mapping[str, Any], target, input_shape: tuple[int, ...], *,
                       input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                       reference: DriftReference | None = None, seconds: float | None = None,
                       first_look: float | None = None, memory: bool | None = None, name: str = "check",
                       timer=None) -> Session:
    """Measure `models` side by side on `target` (with the drift reference) and judge each against the budgets.

    Args:
        models: name -> torch.nn.Module (exported to ONNX here), ONNX bytes or an .onnx path.
        target: a `targets.Target` whose budgets decide the verdicts.
        input_shape: one sample's (C, H, W); the batch is the target's batch size.
        input_shapes: name -> one sample's (C, H, W) for models that take another input than `input_shape`
            (a teacher at its own size).
        reference: the run's drift reference; None judges raw figures.
        seconds: timed seconds of the session, all models (None: the target's `min_seconds` per model).
        first_look: timed seconds of a shorter first session whose verdicts stand when none is borderline
            (module docstring, "A first look"); None: the session is measured for `seconds` at once.
        memory: measure peak memory; None measures it only when the target has a memory budget.
        name: the session's id prefix in reports.
        timer: how one run is timed (`profilers.side_by_side.interleave`); None: the wall clock.

    Returns:
        The `Session`, with one `Checked` per model.
    """
    import time

    import profilers

    shape = (target.batch_size, *input_shape)
    names = list(models)
    shapes = [(target.batch_size, *(input_shapes or {}).get(n, input_shape)) for n in names]
    subjects = [measurable(models[n], target, s) for n, s in zip(names, shapes)]
    labels = list(names)
    ref_index = None
    if reference is not None and profilers.interleaves(target):
        subjects.append(reference.onnx)
        labels.append(reference.label)
        shapes.append(shape)
        ref_index = len(subjects) - 1
    if memory is None:
        memory = target.budgets.memory_mb is not None
    session_id = f"{name}-{time.strftime('%Y%m%dT%H%M%S')}"
    full = target.measure.min_seconds * len(subjects) if seconds is None else seconds
    looks = ([] if first_look is None or first_look >= full else [first_look]) + [full, REMEASURE_FACTOR * full]
    for look, look_seconds in enumerate(looks):
        last = look == len(looks) - 1
        comparison = profilers.compare(subjects, target, reference=ref_index, labels=labels, input_shape=shapes,
                                       seconds=look_seconds, memory=memory,
                                       percentile=target.budgets.latency_percentile, confidence=CONFIDENCE,
                                       **({} if timer is None else {"timer": timer}))
        described = _describe_session(session_id, comparison, reference, ref_index, look > 0)
        checked = {n: _judge(comparison, i, ref_index, reference, target.budgets, look > 0, last, described)
                   for i, n in enumerate(names)}
        if last or not any(c.verdict == "borderline" for c in checked.values()):
            break
    return Session(id=session_id, checked=checked, comparison=comparison)


def _describe_session(session_id: str, comparison, reference: DriftReference | None, ref_index: int | None,
                      remeasured: bool) -> dict[str, Any]:
    drift = None
    if ref_index is not None:
        drift = reference.start_ms / comparison.latency[ref_index].value
    return {"id": session_id, "mode": comparison.mode, "models": comparison.labels, "rounds": comparison.rounds,
            "seconds": comparison.seconds, "percentile": comparison.percentile,
            "confidence": comparison.confidence,
            "reference": None if ref_index is None else {**reference.to_dict(),
                                                         "now_ms": comparison.latency[ref_index].value},
            "drift": drift, "remeasured": remeasured, "warnings": comparison.warnings}


def latency_verdict(ratio) -> str:
    """The verdict on a latency from its interval over the budget (`profilers.Interval`; 1 is the budget):
    within when the upper bound is at or under it, over when the lower bound is above it, borderline otherwise."""
    return "over" if ratio.low > 1 else "borderline" if ratio.high > 1 else "within"


def _judge(comparison, index: int, ref_index: int | None, reference: DriftReference | None, budgets,
           remeasured: bool, last: bool, session: dict[str, Any]) -> Checked:
    import profilers

    profile = comparison.profiles[index]
    raw = comparison.latency[index]
    judged = raw if ref_index is None else comparison.ratios[index].scaled(reference.start_ms)
    violations = profilers.budget_violations(profile, budgets, latency_ms=judged.value)
    static_over = any(not reason.startswith("latency") for reason, _ in violations)
    ratio = None if budgets.latency_ms is None else judged.scaled(1 / budgets.latency_ms)
    verdict = "over" if static_over else "within" if ratio is None else latency_verdict(ratio)
    return Checked(
        profile=profile, violations=violations, verdict=verdict, latency_ms=judged.value,
        latency_interval=(judged.low, judged.high), raw_latency_ms=raw.value,
        drift=session["drift"], budget_ratio=None if ratio is None else ratio.value,
        budget_ratio_interval=None if ratio is None else (ratio.low, ratio.high), remeasured=remeasured,
        decided_by="point estimate" if verdict == "borderline" and last else "interval", session=session,
    )


def check_on_target(model, target, input_shape: tuple[int, ...], *, max_seconds: float | None = None,
                    first_look: float | None = None, memory: bool | None = None, label: str | None = None,
                    reference: DriftReference | None = None) -> Checked:
    """Measure `model` on `target` (beside the drift reference, if any) and judge it against the budgets.

    Args:
        model: a torch.nn.Module (exported to ONNX here), ONNX bytes or an .onnx path.
        target: a `targets.Target` whose budgets decide the verdict.
        input_shape: one sample's (C, H, W); the batch is the target's batch size.
        max_seconds: timed seconds of the measurement, reference included (None: the target's own).
        first_look: timed seconds of a first, shorter measurement whose verdict stands unless borderline.
        memory: measure peak memory; None measures it only when the target has a memory budget.
        label: the model's name in the Profile.
        reference: the run's drift reference; None judges the raw figure.

    Returns:
        A `Checked` with the profile, the verdict and the budgets it misses.
    """
    name = label or "model"
    return check_side_by_side({name: model}, target, input_shape, reference=reference, seconds=max_seconds,
                              first_look=first_look, memory=memory).checked[name]


def check_floor(target, input_shape: tuple[int, ...], *, reference_ms: float | None = None) -> float:
    """The runtime's per-call latency floor on `target` (ms); a latency budget below it is refused.

    `reference_ms`: the drift reference's start figure when the budget was given relative to it
    (`--latency-x-ref`), so the refusal names the multiple to exceed.

    Raises:
        UserError: the latency budget is under the floor, naming both.
    """
    import profilers

    from compressor.errors import UserError

    percentile = target.budgets.latency_percentile
    floor = profilers.latency_floor(target, (target.batch_size, *input_shape), seconds=FLOOR_SECONDS,
                                    percentile=percentile).value
    budget = target.budgets.latency_ms
    if budget is not None and budget < floor:
        advice = (f"set --latency-ms above {floor:.4g} ms" if reference_ms is None else
                  f"set --latency-x-ref above {floor / reference_ms:.3g} (the drift reference took "
                  f"{reference_ms:.4g} ms at the run's start)")
        raise UserError(f"latency budget {budget:.4g} ms {percentile} is below the runtime's per-call floor on "
                        f"{target.name}: a one-op model already takes {floor:.4g} ms there, so no network can meet "
                        f"it; {advice} (a few times the floor to leave room for a model)")
    return floor
