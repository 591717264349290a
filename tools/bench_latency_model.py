"""Which latency model: screen random nago and zoo members on cpu-1t, then fit candidates on the first k and rank the rest.

Members are drawn with hyperopt's random sampler over each space (alternating
nago and zoo), built for 32 px RGB inputs, featurised with
`latency_model.network_features` and measured with `check_on_target` (0.6 s,
beside a drift reference, as screening does). Candidates, each fitted on the
first k screenings and asked about the others (how a search uses it): the
additive cost model `LatencyModel` uses, ridge regression on log features to
log latency, a gradient-boosted tree on the same, and the additive model with
params and layers added. Printed: Kendall tau and median relative error.

    .venv/bin/python tools/bench_latency_model.py --members 64
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=64)
    args = parser.parse_args()

    from scipy.stats import kendalltau
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from compressor.search.latency_model import LatencyModel
    from profilers.host import cpu_model

    samples = screened_members(args.members)
    y = np.array([ms for _, ms in samples])
    logs = np.array([np.log1p([f.macs, f.params, f.activations, f.ops, f.layers]) for f, _ in samples])
    every = np.array([[1.0, f.macs, f.params, f.activations, f.ops, f.layers] for f, _ in samples])

    def log_model(make):
        return lambda k: np.exp(make().fit(logs[:k], np.log(y[:k])).predict(logs[k:]))

    def additive_all(k):
        scale = every[:k].max(axis=0)
        fitted = LinearRegression(positive=True, fit_intercept=False).fit(every[:k] / scale, y[:k],
                                                                          sample_weight=1 / y[:k] ** 2)
        return fitted.predict(every[k:] / scale)

    candidates = {
        "additive (LatencyModel)": lambda k: LatencyModel({}, None, samples[:k]).predict([f for f, _ in samples[k:]]),
        "ridge on logs": log_model(lambda: make_pipeline(StandardScaler(), Ridge(alpha=1.0))),
        "gradient-boosted tree on logs": log_model(
            lambda: GradientBoostingRegressor(n_estimators=100, max_depth=2, random_state=0)),
        "additive + params, layers": additive_all,
    }
    print(f"{cpu_model()}; {len(samples)} members, {y.min():.4f}..{y.max():.4f} ms")
    print("| model | " + " | ".join(f"k={k}: tau, median rel. error" for k in (8, 16, 32)) + " |")
    print("|---|---|---|---|")
    for name, predict in candidates.items():
        cells = []
        for k in (8, 16, 32):
            predicted = predict(k)
            cells.append(f"{kendalltau(predicted, y[k:]).statistic:.2f}, {100 * np.median(np.abs(predicted / y[k:] - 1)):.0f}%")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
