"""Which node operations should the `nago` space search? Each op at equal latency, trained a few epochs with KD.

Under a tight latency budget the search fits each proposal's width to the
budget before screening it (`compressor.search.fit.fit_to_budget`), so a cheap
op gets a wider network. This measures whether a cheap op still learns worse
at equal latency. Per seed and op, `--proposals` generators are drawn with
hyperopt's random sampler from the space's own hyperopt space with the op
fixed; each is fitted to `--fill` x the budget with the real `fit_to_budget`
and a `LatencyModel` (calibrated here by measuring, then fed every measured
candidate, as a search does), and drawing goes on until one is predicted
within the budget (most random graphs are too large for a tight budget at
any width: "drawn" counts how many it took, the op's share of the space that
fits). The candidate is measured with `check_on_target`; one within the
budget is trained `--epochs` epochs with KD (the search's recipe at its
default lr / α / τ, the seed as training seed) from a plain-CNN teacher
(`bench_students.bench_teacher`, cached).

The budget is `--budget-x` x the p50 of the space's smallest generator
(every knob at its cheapest) built with `--budget-op`, measured with the
drift reference, as `compressor.pipeline.demo.demo_budgets` sets its floor.
The op is an argument so that the budget does not move with the ops the
space searches: avgpool3x3, the default, was the space's cheapest op when
the figures in BENCHMARKS.md were measured. Every buildable op
is measured, not only those the space searches (`nago.NODE_OPS`).
One thread; progress on stderr; the table on stdout.

    .venv/bin/python tools/bench_nago_ops.py --data digits-cluttered --seeds 0,1,2 --proposals 3
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def bench_space(ops):
    """The nago space with its op knob widened to `ops` (so ops the space no longer searches can be measured)."""
    from compressor.spaces.nago import NagoSpace

    space = NagoSpace()
    space.knobs = tuple(dataclasses.replace(k, choices=tuple(ops), default=ops[0], retired=()) if k.name == "op" else k
                        for k in space.knobs)
    return space


def calibrate(space, model, data, target, reference, say) -> None:
    """The latency model's first samples: per op, the smallest generator at two widths and two random ones."""
    from hyperopt.pyll import stochastic

    from compressor.models.on_target import check_on_target
    from compressor.search.fit import size_ladder
    from compressor.search.latency_model import network_features

    rng = np.random.default_rng(999)
    for op in next(k for k in space.knobs if k.name == "op").choices:
        ladder = size_ladder(space, {**space.smallest_params(), "op": op})
        drawn = [size_ladder(space, {**stochastic.sample(space.hyperopt_space(), rng=rng), "op": op})[0]
                 for _ in range(2)]
        for arch in (ladder[0], ladder[len(ladder) // 3], *drawn):
            net = space.build(space.sample(arch, 0), data.input_shape, data.num_classes)
            checked = check_on_target(net, target, data.input_shape, reference=reference, memory=False)
            model.add(network_features(net, data.input_shape), checked.latency_ms, save=False)
    say(f"latency model: {len(model.samples)} measured networks")


def propose(space, op: str, seed: int, fit, budget_ms: float, max_draws: int):
    """The first random generator with `op` (hyperopt's random sampler) whose fitted size is predicted within budget.

    Returns (the `Fit`, draws), or (None, draws) when none of `max_draws` is.
    """
    from hyperopt.pyll import stochastic

    rng = np.random.default_rng(seed)
    for draws in range(1, max_draws + 1):
        fitted = fit({**stochastic.sample(space.hyperopt_space(), rng=rng), "op": op})
        if fitted.predicted_ms <= budget_ms:
            return fitted, draws
    return None, max_draws


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits-cluttered", help="digits or digits-cluttered (32 px, grey)")
    parser.add_argument("--seeds", default="0,1,2", help="sample seeds (also the training seeds)")
    parser.add_argument("--proposals", type=int, default=3, help="candidates within budget per seed and op")
    parser.add_argument("--attempts", type=int, default=6, help="candidates measured per seed and op at most")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per network")
    parser.add_argument("--max-draws", type=int, default=200, help="random generators drawn per proposal at most")
    parser.add_argument("--budget-x", type=float, default=2.5, help="latency budget = this x the smallest network's p50")
    parser.add_argument("--budget-op", default="avgpool3x3", help="the op of the smallest generator that sets the budget")
    parser.add_argument("--fill", type=float, default=0.8, help="fit each proposal to this share of the budget")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--ops", default=None, help="comma-separated ops (default: every buildable op)")
    args = parser.parse_args()

    import torch

    from bench_students import TEACHER_ARCH, bench_setup
    from compressor.models.on_target import check_on_target
    from compressor.search.config import SearchConfig, kd_knobs
    from compressor.search.fit import fit_to_budget
    from compressor.search.latency_model import FAR_OVER, LatencyModel, network_features, target_key
    from compressor.search.recipe import train_config
    from compressor.spaces.nago import NODE_OPS, NagoSpace
    from compressor.train.distill import logits_accuracy, train_student
    from profilers.host import cpu_model

    torch.set_num_threads(1)
    started = time.time()

    def say(text: str) -> None:
        print(f"[{time.time() - started:5.0f} s] {text}", file=sys.stderr, flush=True)

    ops = tuple(args.ops.split(",")) if args.ops else NODE_OPS
    space = bench_space(ops)
    data, logits, cpu, reference = bench_setup(args.data, args.teacher_epochs)
    smallest_params = {**NagoSpace().smallest_params(), "op": args.budget_op}
    smallest = space.build(NagoSpace().sample(smallest_params, 0), data.input_shape, data.num_classes)
    smallest_ms = check_on_target(smallest, cpu, data.input_shape, reference=reference, memory=False).latency_ms
    budget = args.budget_x * smallest_ms
    target = cpu.with_budgets(latency_ms=budget)
    say(f"smallest nago generator ({smallest_params['op']}, width {smallest_params['base_width']}, "
        f"{smallest_params['channel_ratios']}) p50 {smallest_ms:.4f} ms -> budget {budget:.4f} ms")
    model = LatencyModel(target_key(target))
    calibrate(space, model, data, target, reference, say)
    config = SearchConfig()
    knobs = {k.name: k.default for k in kd_knobs()}
    rows = {op: [] for op in ops}
    for seed in (int(s) for s in args.seeds.split(",")):
        for op_index, op in enumerate(ops):
            def predict(arch):
                net = space.build(space.sample(arch, seed), data.input_shape, data.num_classes)
                return float(model.predict([network_features(net, data.input_shape)])[0])

            def fit(arch):
                return fit_to_budget(space, arch, predict, budget_ms=budget, fraction=args.fill, far_over=FAR_OVER)

            rng_seed, found = 10_000 * seed + 100 * op_index, 0
            for index in range(args.attempts):
                if found == args.proposals:
                    break
                fitted, draws = propose(space, op, rng_seed + index, fit, budget, args.max_draws)
                if fitted is None:
                    say(f"seed {seed} {op}: no generator of {draws} drawn is predicted within budget")
                    continue
                spec = space.sample(fitted.arch, seed)
                net = space.build(spec, data.input_shape, data.num_classes)
                checked = check_on_target(net, target, data.input_shape, reference=reference, memory=False)
                model.add(network_features(net, data.input_shape), checked.latency_ms, save=False)
                row = {"seed": seed, "draws": draws, "width": fitted.arch["base_width"],
                       "ratio": checked.latency_ms / budget, "params": int(checked.profile["params"]),
                       "fits": checked.fits, "val": None}
                if checked.fits:
                    torch.manual_seed(seed)
                    net = space.build(spec, data.input_shape, data.num_classes)
                    train = dataclasses.replace(train_config(config, knobs, epochs=args.epochs), seed=seed)
                    row["val"] = float(train_student(net, data, train, teacher_logits=logits,
                                                     evaluate_test=False).val_accuracy)
                rows[op].append(row)
                found += checked.fits
                val = "-" if row["val"] is None else f"{100 * row['val']:.1f}%"
                say(f"seed {seed} {op} #{index} ({draws} drawn): width {row['width']}, {row['params']:,} params, "
                    f"p50 {row['ratio']:.2f}x budget, {'within' if row['fits'] else 'over'}, val {val}")

    print(f"\n{cpu_model()}; {args.data}, 32 px grey; teacher {TEACHER_ARCH} ({args.teacher_epochs} epochs): test "
          f"{100 * logits_accuracy(logits['test'], data.test_y):.2f}%; cpu-1t budget {budget:.4f} ms p50 = "
          f"{args.budget_x:g}x the smallest nago generator with {args.budget_op} ({smallest_ms:.4f} ms); "
          f"fitted to {args.fill:g} of it; "
          f"seeds {args.seeds}, {args.proposals} candidates per seed and op; "
          f"{args.epochs} epochs KD (lr {knobs['lr']:g}, α {knobs['kd_alpha']:g}, τ {knobs['kd_tau']:g}); "
          f"{time.time() - started:.0f} s\n")
    print("| op | within budget / measured | val acc (mean ± std) | per-seed mean val acc | p50 / budget | params (median) | "
          "base width (median) | drawn per candidate (median) |\n|---|---:|---:|---|---:|---:|---:|---:|")
    for op, measured in rows.items():
        ok = [r for r in measured if r["fits"]]
        vals = [r["val"] for r in ok]
        per_seed = []
        for seed in sorted({r["seed"] for r in measured}):
            seed_vals = [r["val"] for r in ok if r["seed"] == seed]
            per_seed.append(f"{100 * statistics.mean(seed_vals):.1f}%" if seed_vals else "-")
        acc = (f"{100 * statistics.mean(vals):.1f}% ± {100 * statistics.pstdev(vals):.1f}" if vals else "-")
        ratio = statistics.mean(r["ratio"] for r in ok) if ok else float("nan")
        params = statistics.median(r["params"] for r in ok) if ok else 0
        width = statistics.median(r["width"] for r in ok) if ok else 0
        drawn = statistics.median(r["draws"] for r in measured) if measured else 0
        print(f"| {op} | {len(ok)}/{len(measured)} | {acc} | {', '.join(per_seed)} | {ratio:.2f} | {params:,.0f} | "
              f"{width:g} | {drawn:g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
