"""Accuracy-aware INT8: a few quantisation recipes, chosen by the CPU, all gated, the fastest passing one kept.

One static-QDQ recipe does not suit every CPU. x86 CPUs without VNNI
multiply-add u8 x s8 pairs into saturating 16-bit sums, so 8-bit weights can
overflow (a digits CNN lost 25 points at 8 bits and none at 7); with VNNI
(avx512_vnni, avx_vnni, amx_int8) or on ARM the products are summed in 32
bits, and 7-bit weights only throw precision away (a CPU with AVX-512 VNNI
lost 7 points with the 7-bit recipe). And MinMax calibration lets one
outlying activation stretch a tensor's scale; Percentile (99.999th) and
Entropy (KL) calibration clip it.

`recipe_set(flags, ...)` returns at most `MAX_RECIPES` recipes for the target,
most likely first, and why: the calibration methods MinMax, Percentile and
Entropy with per-channel weights, plus MinMax with per-tensor weights (other
kernels, sometimes faster), all with 7-bit weights where the CPU saturates and
8-bit ones where it does not. An unknown CPU (a remote target: its flags are
not readable from here) gets the safe 7-bit set. TensorRT takes only
symmetric 8-bit INT8, so its set is the three calibration methods, per channel.

The bundle builds every recipe of the set and gates each on the validation
split; the ones that pass are measured in the bundle's side-by-side session,
and `select_recipe` keeps one by this rule:

- only recipes that passed their gate are candidates;
- among them, those not measurably slower than the fastest (their latency
  ratio to it has a lower bound <= 1: the calibration method changes scales,
  not kernels, so such recipes often run the same graph at the same speed);
- among those, the smallest validation accuracy drop; ties go to the faster
  (point estimate), then to the earlier recipe in the set;
- unmeasured (a target that cannot be profiled here, or a TensorRT target,
  where the engine is built from the chosen recipe before the session and its
  speed does not depend on the calibration method): the smallest drop, ties
  to the earlier recipe;
- none passed: the recipe with the smallest drop is kept as a failed
  artifact, its figures shown.

Cost: one calibration and one validation pass per recipe (about a second
each for a small student on a CPU, tens of seconds for a ResNet at 224 px),
and one more model in the side-by-side session per passing recipe. The
histogram calibrators (Entropy, Percentile) keep every intermediate tensor of
every calibration batch in memory, so they use at most
`HISTOGRAM_CALIB_SAMPLES` of the calibration samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

CALIBRATIONS = ("minmax", "percentile", "entropy")
MAX_RECIPES = 4
HISTOGRAM_CALIB_SAMPLES = 64
# CPU flags whose integer dot-product instructions accumulate u8 x s8 products in 32 bits.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
X86_FLAGS = ("sse2", "avx", "avx2")
# The flags an INT8 entry records: what decides the recipe set, and the vector units behind the kernels.
RELEVANT_FLAGS = (*VNNI_FLAGS, "avx2", "avx512f", "avx512bw", "asimddp", "i8mm")


@dataclass(frozen=True)
class Int8Recipe:
    """How an INT8 QDQ model is calibrated and quantised.

    Attributes:
        calibration: "minmax", "percentile" or "entropy" (ONNX Runtime's calibration methods).
        per_channel: one weight scale per output channel (else one per tensor).
        reduce_range: 7-bit weights, which cannot saturate the 16-bit sums of x86 CPUs without VNNI.
    """

    calibration: str = "minmax"
    per_channel: bool = True
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")

    @property
    def name(self) -> str:
        return f"{self.calibration}-{'perchannel' if self.per_channel else 'pertensor'}-w{7 if self.reduce_range else 8}"

    def describe(self) -> str:
        return (f"{self.calibration} calibration, {'per-channel' if self.per_channel else 'per-tensor'} "
                f"{7 if self.reduce_range else 8}-bit weights")

    @classmethod
    def parse(cls, name: str) -> Int8Recipe:
        """The recipe named `name` (`CALIBRATION-perchannel|pertensor-w7|w8`, as `name` writes it).

        Raises:
            UserError: a name that is not of that form.
        """
        from compressor.errors import UserError

        parts = name.strip().lower().split("-")
        if len(parts) != 3 or parts[0] not in CALIBRATIONS or parts[1] not in ("perchannel", "pertensor") \
                or parts[2] not in ("w7", "w8"):
            raise UserError(f"unknown INT8 recipe {name!r}; write CALIBRATION-WEIGHTS-BITS with CALIBRATION one of "
                            f"{', '.join(CALIBRATIONS)}, WEIGHTS perchannel or pertensor, BITS w7 or w8 "
                            "(e.g. entropy-perchannel-w8)")
        return cls(parts[0], parts[1] == "perchannel", parts[2] == "w7")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "calibration": self.calibration, "per_channel": self.per_channel,
                "reduce_range": self.reduce_range}


@dataclass
class RecipeTrial:
    """One recipe built and gated: its gate figures, and its side-by-side figures once measured.

    Attributes:
        recipe: the recipe.
        label: the candidate's name in the side-by-side session (its file name).
        parity: the gate's figures on the validation split (`parity.gate`), None when it could not be built or run.
        error: why it could not be built or run.
        latency: (value, low, high) ms at the budget percentile from the session, None when not measured.
    """

    recipe: Int8Recipe
    label: str
    parity: dict[str, Any] | None = None
    error: str | None = None
    latency: tuple[float, float, float] | None = None
    ratio_to_fastest: tuple[float, float, float] | None = field(default=None)

    @property
    def passed(self) -> bool:
        return bool(self.parity and self.parity.get("passed"))

    @property
    def drop(self) -> float:
        return float("inf") if self.parity is None else float(self.parity["accuracy_drop"])

    def to_dict(self) -> dict[str, Any]:
        figures = None if self.parity is None else {
            k: self.parity.get(k) for k in ("accuracy", "reference_accuracy", "accuracy_drop", "top1_agreement",
                                            "max_abs_diff", "samples", "passed", "reason") if k in self.parity}
        interval = (lambda t: None if t is None else {"value": t[0], "low": t[1], "high": t[2]})
        return {**self.recipe.to_dict(), "passed": self.passed, "validation": figures, "error": self.error,
                "latency_ms": interval(self.latency), "ratio_to_fastest": interval(self.ratio_to_fastest)}


def has_vnni(flags: frozenset[str] | None) -> bool:
    return bool(flags) and any(f in flags for f in VNNI_FLAGS)


def recipe_set(flags: frozenset[str] | None, *, for_tensorrt: bool, machine: str = "") -> tuple[list[Int8Recipe], str]:
    """The recipes worth trying for a target, most likely first, and why this set.

    Args:
        flags: the target CPU's feature flags (`profilers.host.cpu_flags`), None when unknown (a remote device).
        for_tensorrt: the QDQ model feeds a TensorRT engine (symmetric 8-bit only).
        machine: `platform.machine()` of that CPU ("x86_64", "aarch64"); "" when unknown.
    """
    if for_tensorrt:
        return ([Int8Recipe(c, True, False) for c in CALIBRATIONS],
                "TensorRT takes symmetric 8-bit INT8 only: the calibration methods are tried, per-channel weights")
    x86 = machine.lower() in ("x86_64", "amd64", "i686", "x86") or bool(flags and any(f in flags for f in X86_FLAGS))
    if flags is None:
        seven, why = True, ("the target's CPU features are unknown here (remote device): 7-bit weights, "
                            "which no CPU's integer kernels saturate")
    elif not x86:
        seven, why = False, "ARM integer kernels accumulate in 32 bits: 8-bit weights cannot saturate"
    elif has_vnni(flags):
        found = sorted(f for f in VNNI_FLAGS if f in flags)
        seven, why = False, (f"the CPU has VNNI ({', '.join(found)}): u8 x s8 products are summed in 32 bits, so 8-bit "
                             "weights are safe and 7-bit ones would only lose precision")
    else:
        seven, why = True, ("x86 without VNNI sums u8 x s8 pairs into saturating 16-bit integers: 7-bit weights "
                            "(reduce_range) avoid the overflow")
    recipes = [Int8Recipe(c, True, seven) for c in CALIBRATIONS] + [Int8Recipe("minmax", False, seven)]
    return recipes[:MAX_RECIPES], why


Ratio = Callable[[str, str], tuple[float, float, float]]


def select_recipe(trials: Sequence[RecipeTrial], ratio: Ratio | None = None) -> tuple[RecipeTrial, str]:
    """Keep one recipe by the rule of the module docstring; `ratio(a, b)` is (value, low, high) of a's latency / b's.

    Trials are in the recipe set's order; `latency` is set on the measured ones (passing recipes, when the
    target was profiled). Sets `ratio_to_fastest` on the measured trials.

    Returns:
        (the trial kept, a one-line reason).
    """
    if not trials:
        raise ValueError("select_recipe needs at least one trial")
    order = {id(t): i for i, t in enumerate(trials)}
    passing = [t for t in trials if t.passed]
    if not passing:
        kept = min(trials, key=lambda t: (t.drop, order[id(t)]))
        return kept, f"no recipe passed the gate; {kept.recipe.name} lost the least accuracy on validation"
    measured = [t for t in passing if t.latency is not None]
    if ratio is None or len(measured) < len(passing) or not measured:
        kept = min(passing, key=lambda t: (t.drop, order[id(t)]))
        return kept, (f"{len(passing)} of {len(trials)} recipes passed; not measured side by side, so the most "
                      f"accurate on validation ({kept.drop * 100:.2f} points lost)")
    fastest = min(measured, key=lambda t: (t.latency[0], order[id(t)]))
    for t in measured:
        t.ratio_to_fastest = ratio(t.label, fastest.label)
    equivalent = [t for t in measured if t.ratio_to_fastest[1] <= 1]
    kept = min(equivalent, key=lambda t: (t.drop, t.latency[0], order[id(t)]))
    why = f"{len(passing)} of {len(trials)} recipes passed the validation gate; "
    if kept is fastest:
        why += f"{kept.recipe.name} is the fastest"
    else:
        value, low, high = kept.ratio_to_fastest
        why += (f"{kept.recipe.name} is not measurably slower than the fastest, {fastest.recipe.name} "
                f"(x{value:.3f} [{low:.3f}, {high:.3f}]), and lost less accuracy")
    if len(equivalent) > 1:
        why += f" ({len(equivalent)} recipes indistinguishable in speed; the most accurate of them kept)"
    return kept, why
