"""Which artifact to ship: the fastest one that passed its parity gate and was profiled.

`recommend` reads only the manifest entries (format, status, parity, profile,
over_budget), so it is a pure function of measured figures: the same entries
always give the same choice, whatever machine measured them.
"""

from __future__ import annotations

from typing import Any

from targets import Target

from compressor.export.plan import FP32, REDUCED_PRECISION


def recommend(artifacts: list[dict[str, Any]], percentile: str = "p50") -> tuple[str | None, str]:
    """Mark the fastest artifact that passed its gate as recommended (in place).

    Artifacts within the target's budgets ("over_budget" empty or absent) come
    first: a faster file that misses the size budget loses to a slower one that
    fits; when none fits, the fastest is recommended and the reason says so.
    Among those, an INT8/FP16 artifact slower than the fastest FP32 one gets a
    note and is not a candidate: reduced precision that costs accuracy and buys
    no speed on this target is not worth shipping.

    Args:
        artifacts: artifact entries with "format", "status", "parity", "profile".
        percentile: the latency percentile compared ("p50", "p90", "p99").

    Returns:
        (the recommended file or None, a one-line explanation).
    """
    def latency(entry: dict[str, Any]) -> float:
        return float(entry["profile"]["latency_ms"][percentile])

    for entry in artifacts:
        entry["recommended"] = False
    measured = [a for a in artifacts if a.get("status") == "ok" and a["parity"]["passed"] and a.get("profile")]
    if not measured:
        return None, "no artifact both passed its parity gate and was profiled on the target"
    within = [a for a in measured if not a.get("over_budget")]
    pool = within or measured
    fp32 = [a for a in pool if a["format"] in FP32]
    baseline = min(fp32, key=latency) if fp32 else None
    candidates = []
    for entry in pool:
        if baseline is not None and entry["format"] in REDUCED_PRECISION and latency(entry) > latency(baseline):
            entry.setdefault("notes", []).append(
                f"slower than FP32 on this target ({latency(entry):.3g} ms vs {latency(baseline):.3g} ms "
                f"{percentile} for {baseline['file']}): not recommended"
            )
            continue
        candidates.append(entry)
    best = min(candidates, key=latency)
    best["recommended"] = True
    why = f"fastest artifact that passed its parity gate ({latency(best):.3g} ms {percentile})"
    if within and len(within) < len(measured):
        why = f"fastest artifact that passed its parity gate and meets the target's budgets ({latency(best):.3g} ms {percentile})"
    elif not within:
        why += f"; no artifact meets the target's budgets ({'; '.join(best['over_budget'])})"
    return best["file"], why


def over_budget(profile: dict[str, Any], target: Target) -> list[str]:
    """The target budgets a profiled artifact misses, each as a short phrase (empty: all met)."""
    import profilers

    return [reason for reason, _ in profilers.budget_violations(profile, target.budgets)]
