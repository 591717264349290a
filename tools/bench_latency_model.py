"""Which latency model: screen random nago and zoo members on cpu-1t, then fit candidates on the first k and rank the rest.

Members are drawn with hyperopt's random sampler over each space (alternating
nago and zoo), built for 32 px RGB inputs, featurised with
`latency_model.network_features` and measured with `check_on_target` (0.6 s,
beside a drift reference, as screening does). Candidates, each fitted on the
first k screenings and asked about the others (how a search uses it): the
additive cost model `LatencyModel` uses (a premium for misaligned MACs), the same
with one MACs column (the model before that split), ridge regression on log features to
log latency, a gradient-boosted tree on the same, and the additive model with
params and layers added. Printed: Kendall tau and median relative error.

    .venv/bin/python tools/bench_latency_model.py --members 64
    .venv/bin/python tools/bench_latency_model.py --from-run runs/bench_search/digits-cluttered/split0/labels0.1/tpe
    .venv/bin/python tools/bench_latency_model.py --plain-widths 8-8-8 8-16-32 16-16-16 24-24-24 32-32-32

`--from-run` asks the same question of a search's own screenings, which sit
near its budget: a far narrower range than random members span, where
ranking is harder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def screened_members(count: int) -> list:
    import torch
    from hyperopt.pyll import stochastic

    from compressor.models.on_target import DriftReference, check_on_target
    from compressor.search.latency_model import network_features
    from compressor.spaces import get_space
    from targets import load_target

    torch.set_num_threads(1)
    shape, target = (3, 32, 32), load_target("cpu-1t")
    reference = DriftReference.start(target, shape, 10)
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        space = get_space("nago" if i % 2 == 0 else "zoo")
        model = space.build(space.sample(stochastic.sample(space.hyperopt_space(), rng), i), shape, 10)
        features = network_features(model, shape)
        samples.append((features, check_on_target(model, target, shape, max_seconds=0.6, reference=reference).latency_ms))
    return samples


def run_screenings(run_dir: Path, shape: tuple[int, ...]) -> list:
    """The members a search run screened, in its order: rebuilt from their ArchSpecs, with their measured p50."""
    import json
    import sqlite3

    import torch

    from compressor.search.latency_model import network_features
    from compressor.spaces import ArchSpec, build_model

    torch.set_num_threads(1)
    db = sqlite3.connect(f"file:{run_dir / 'trials.sqlite'}?mode=ro", uri=True)
    samples = []
    for archs, profiles in db.execute("select archs, profiles from trials where fidelity = 1 and misc not like "
                                      "'%\"screened\"%' order by id"):
        for arch, profile in zip(json.loads(archs or "[]"), json.loads(profiles or "[]")):
            model = build_model(ArchSpec.from_json(arch), shape, 10)
            samples.append((network_features(model, shape), profile["latency_ms"]["p50"]))
    return samples


def plain_widths_side_by_side(widths: list[str], seconds: float) -> int:
    """Plain CNNs (`W1-W2-W3`, or `W1-W2-W3:C1-C2-C3` with C convs per stage) measured side by side on cpu-1t at
    32 px gray: p50 over the drift reference."""
    import torch

    from compressor.models.on_target import DriftReference, check_side_by_side
    from compressor.search.latency_model import network_features
    from compressor.spaces import build_model, spec_from_ref
    from profilers.host import cpu_model
    from targets import load_target

    torch.set_num_threads(1)
    shape, target = (1, 32, 32), load_target("cpu-1t")
    def ref(item: str) -> str:
        width, _, convs = item.partition(":")
        return f"zoo:plain:widths={width}" + (f",convs={convs}" if convs else "")

    models = {w: build_model(spec_from_ref(ref(w), seed=0), shape, 10) for w in widths}
    models["reference"] = DriftReference.model_bytes(target, shape, 10)
    session = check_side_by_side(models, target, shape, seconds=seconds, memory=False, name="plain-widths")
    print(f"{cpu_model()}; {session.comparison.rounds} interleaved rounds")
    print("| plain widths[:convs] | MACs | misaligned MACs | p50 / reference (95% interval) |")
    print("|---|---:|---:|---:|")
    for w in widths:
        f = network_features(models[w], shape)
        ratio, (low, high) = session.ratio(w, "reference")
        print(f"| {w} | {f.macs:,} | {f.misaligned_macs:,} | {ratio:.2f}x ({low:.2f}-{high:.2f}) |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--from-run", type=Path, metavar="RUN_DIR",
                        help="instead of random members, the members a search run screened (near its budget), "
                             "in the order it screened them")
    parser.add_argument("--input-shape", default="1,32,32", help="C,H,W of --from-run's data (bench_search's: 1,32,32)")
    parser.add_argument("--plain-widths", nargs="+", metavar="W1-W2-W3[:C1-C2-C3]",
                        help="instead: these plain CNNs side by side with the drift reference (what a MAC costs "
                             "at each channel count on this machine)")
    parser.add_argument("--seconds", type=float, default=20.0, help="--plain-widths: timed seconds of the session")
    args = parser.parse_args()
    if args.plain_widths:
        return plain_widths_side_by_side(args.plain_widths, args.seconds)

    from scipy.stats import kendalltau
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from compressor.search.latency_model import LatencyModel
    from profilers.host import cpu_model

    samples = run_screenings(args.from_run, tuple(int(x) for x in args.input_shape.split(","))) if args.from_run else screened_members(args.members)
    y = np.array([ms for _, ms in samples])
    logs = np.array([np.log1p([f.macs, f.params, f.activations, f.ops, f.layers]) for f, _ in samples])
    every = np.array([[1.0, f.macs, f.params, f.activations, f.ops, f.layers] for f, _ in samples])
    one_mac_column = np.array([[1.0, f.macs, f.activations, f.ops] for f, _ in samples])

    def log_model(make):
        return lambda k: np.exp(make().fit(logs[:k], np.log(y[:k])).predict(logs[k:]))

    def additive(columns):
        def predict(k):
            scale = np.maximum(columns[:k].max(axis=0), 1.0)
            fitted = LinearRegression(positive=True, fit_intercept=False).fit(columns[:k] / scale, y[:k],
                                                                              sample_weight=1 / y[:k] ** 2)
            return fitted.predict(columns[k:] / scale)
        return predict

    candidates = {
        "additive (LatencyModel)": lambda k: LatencyModel({}, None, samples[:k]).predict([f for f, _ in samples[k:]]),
        "ridge on logs": log_model(lambda: make_pipeline(StandardScaler(), Ridge(alpha=1.0))),
        "gradient-boosted tree on logs": log_model(
            lambda: GradientBoostingRegressor(n_estimators=100, max_depth=2, random_state=0)),
        "additive + params, layers": additive(every),
        "additive, one MACs column (before the SIMD alignment split)": additive(one_mac_column),
    }
    print(f"{cpu_model()}; {len(samples)} members, {y.min():.4f}..{y.max():.4f} ms")
    # Fitted on the first k, asked about at least 8 others (a run's screenings may be few).
    ks = [k for k in (8, 16, 32) if k <= len(samples) - 8]
    print("| model | " + " | ".join(f"k={k}: tau, median rel. error" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    for name, predict in candidates.items():
        cells = []
        for k in ks:
            predicted = predict(k)
            cells.append(f"{kendalltau(predicted, y[k:]).statistic:.2f}, {100 * np.median(np.abs(predicted / y[k:] - 1)):.0f}%")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
