"""Which artifact to ship: the fastest one that passed its parity gate, on the bundle's side-by-side figures.

`recommend` reads only the manifest entries (format, status, parity, latency,
ratio_to_fp32, over_budget), so it is a pure function of measured figures:
the same entries always give the same choice, whatever machine measured them.
Every latency and ratio in those entries comes from the bundle's one
side-by-side session (`bundle.ArtifactBuilder.measure`), so two artifacts are
never compared across measurements taken minutes apart, and "slower" is
decided with the ratio's confidence interval, not with two point estimates.
"""

from __future__ import annotations

from typing import Any

from compressor.export.plan import FORMATS, FP32, REDUCED_PRECISION


def slower_than(entry: dict[str, Any], fp32_file: str) -> bool | None:
    """Whether `entry` is measurably slower than the FP32 artifact `fp32_file`: the lower bound of its latency
    ratio to it is above 1. None when the session gave no such ratio."""
    ratio = (entry.get("ratio_to_fp32") or {}).get(fp32_file)
    return None if ratio is None else ratio["low"] > 1


# How much faster than a simpler file the fastest must be, beyond the session's interval, to replace it: the ratio of
# one pair of models moved 2.3% across five sessions while each session's 95% interval was about 1% wide
# (BENCHMARKS.md, "Profiler: side-by-side measurement"), so a smaller lead is not one the next export would see.
SPEED_MARGIN = 0.03


def simplest_tied(fastest: dict[str, Any], candidates: list[dict[str, Any]]) -> tuple[dict[str, Any], dict | None]:
    """The candidate to ship in place of `fastest`: the first FP32 candidate, in `FORMATS` order, that `fastest` does
    not lead by `SPEED_MARGIN` (the upper bound of its latency ratio to it at least 1 - `SPEED_MARGIN`), with that
    ratio; `fastest` itself, and None, when there is none.

    Why: the plain `model.onnx` and `model.ort.onnx` of one student were recommended in turn from one export to the
    next by their point estimates, x0.989 [0.989, 0.990] in one session and x1.003 [1.002, 1.003] in another: an
    ORT-optimised or reduced-precision file is worth shipping only for a speed the next session would also see.
    Ratios are measured only against FP32 files, so only those can be preferred.
    """
    rank = {fmt: i for i, fmt in enumerate(FORMATS)}
    simpler = sorted((c for c in candidates if c["format"] in FP32 and rank[c["format"]] < rank[fastest["format"]]),
                     key=lambda c: rank[c["format"]])
    for entry in simpler:
        ratio = (fastest.get("ratio_to_fp32") or {}).get(entry["file"])
        if ratio is not None and ratio["high"] >= 1 - SPEED_MARGIN:
            return entry, ratio
    return fastest, None


def recommend(artifacts: list[dict[str, Any]]) -> tuple[str | None, str]:
    """Mark the fastest artifact that passed its gate as recommended (in place).

    Artifacts within the target's budgets (`over_budget` empty: the verdict of
    `compressor.models.on_target`, a borderline latency decided by its point
    estimate after a longer measurement) come first: a faster file that misses
    the size budget loses to a slower one that fits; when none fits, the
    fastest is recommended and the reason says so. Among those, an INT8/FP16
    artifact measurably slower than the fastest FP32 one (`slower_than`: its
    latency ratio's lower bound above 1) gets a note and is not a candidate:
    reduced precision that costs accuracy and buys no speed on this target is
    not worth shipping. One whose interval contains 1 is not slower; it stays
    a candidate, with a note. The fastest candidate (latency point estimate at
    the budget percentile) is recommended, unless it is not faster than a
    simpler FP32 candidate by more than `SPEED_MARGIN` beyond the ratio's
    interval (`simplest_tied`): then the simpler one is.

    Args:
        artifacts: artifact entries with "format", "status", "parity", and, when measured, "latency"
            ({percentile, value, low, high}) and "ratio_to_fp32" ({fp32 file: {value, low, high}}).

    Returns:
        (the recommended file or None, a one-line explanation).
    """
    def latency(entry: dict[str, Any]) -> float:
        return float(entry["latency"]["value"])

    for entry in artifacts:
        entry["recommended"] = False
    measured = [a for a in artifacts if a.get("status") == "ok" and a["parity"]["passed"] and a.get("latency")]
    if not measured:
        return None, "no artifact both passed its parity gate and was profiled on the target"
    percentile = measured[0]["latency"]["percentile"]
    within = [a for a in measured if not a.get("over_budget")]
    pool = within or measured
    fp32 = [a for a in pool if a["format"] in FP32]
    baseline = min(fp32, key=latency) if fp32 else None
    candidates = []
    for entry in pool:
        ratio = None if baseline is None else (entry.get("ratio_to_fp32") or {}).get(baseline["file"])
        if ratio is not None and entry["format"] in REDUCED_PRECISION:
            figure = (f"x{ratio['value']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}] the {percentile} of "
                      f"{baseline['file']}")
            if slower_than(entry, baseline["file"]):
                entry.setdefault("notes", []).append(f"slower than FP32 on this target ({figure}): not recommended")
                continue
            if ratio["low"] <= 1 <= ratio["high"]:
                entry.setdefault("notes", []).append(
                    f"speed not distinguishable from FP32 on this target ({figure}): not counted as slower")
        candidates.append(entry)
    fastest = min(candidates, key=latency)
    best, tie = simplest_tied(fastest, candidates)
    best["recommended"] = True
    sifted = within and len(within) < len(measured)
    measured_at = f"{latency(best):.3g} ms {percentile}, side by side"
    why = f"fastest artifact that passed its parity gate{' and meets the budgets' if sifted else ''} ({measured_at})"
    if tie is not None:
        why = (f"simplest of the fastest artifacts that passed their parity gates{' and meet the budgets' if sifted else ''} "
               f"({measured_at}; "
               f"{fastest['file']} x{tie['value']:.3f} [{tie['low']:.3f}, {tie['high']:.3f}] of it: not faster "
               f"by {SPEED_MARGIN:.0%})")
    if not within:
        why += f"; no artifact meets the target's budgets ({'; '.join(best['over_budget'])})"
    return best["file"], why
