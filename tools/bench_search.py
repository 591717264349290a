"""Does the search earn its place? Searched students against the fair, tuned baseline at equal time.

For each split seed, dataset and label regime (a *cell*):

* a teacher (a plain 32-64-128 CNN trained with cross-entropy on every label
  of the split, cached by dataset identity, so each split seed has its own and
  every regime and strategy share it);
* one latency budget per split seed: `--floor-multiple` (2) x the p50 of the
  space's smallest network on cpu-1t, measured side by side with a one-op model
  (the runtime's per-call floor) in this run, the demo's floor rule;
* the fair baseline (compressor.pipeline.baselines: the widest plain CNN within
  the budget, lr/KD tuned in `--tuning` one-epoch evaluations, the student's
  recipe for `--final-epochs`), once per cell; the searched winner gets the
  same tuning (`--tuning-trials`) and its width filled by measurement
  (compressor.pipeline.finish) before its final training;
* one `compress --baseline` run per strategy with the same wall-clock
  (`--search-minutes`), the same teacher, data, budget, space, fidelities and
  final epochs, its `--finalists` searched families and its own baseline
  trained in full and the best on validation shipped
  (compressor.pipeline.finalists); "search alone" is the best searched
  finalist on validation, what the run would ship without `--baseline`; the
  latency model's calibration is shared through one cache directory, so only
  the very first run of the benchmark starts cold.

Every piece is stored under `--out` and reused when the tool runs again (a
search resumes; a finished one is not run again), so the benchmark can be run
across sessions, a few cells at a time (`--split-seeds 0`, then `1 2`). The
summary covers whatever is finished: per dataset, regime and strategy the test
accuracy mean +- std over split seeds beside the baseline's, the difference,
the share of screenings over budget, trained families per hour of search,
the share of search time spent training and the latency model's Kendall tau
and the share of "predicted feasible" that fit.

    .venv/bin/python tools/bench_search.py --data digits-cluttered --strategies tpe,trade,random --split-seeds 0 1 2
    .venv/bin/python tools/bench_search.py --data digits --strategies tpe --split-seeds 0 1 2 --search-minutes 2
    .venv/bin/python tools/bench_search.py --summary   # the tables of everything finished under --out
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

IMAGE_SIZE, CHANNELS = 32, 1


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)


def teacher_checkpoint(data_ref: str, split_seed: int, epochs: int, cache: Path) -> tuple[Path, float]:
    """The cell's teacher (trained on every label of the split, cached) and its test accuracy."""
    from bench_students import TEACHER_ARCH, bench_teacher

    from compressor.data.datasets import load_dataset
    from compressor.models.teachers import teacher_inputs
    from compressor.train.distill import LogitsCache, logits_accuracy

    raw = load_dataset(data_ref, image_size=IMAGE_SIZE, channels=CHANNELS, seed=split_seed)
    data = raw.normalised(raw.student_preprocessing())
    teacher = bench_teacher(data, epochs, cache)
    logits = LogitsCache(cache).get(teacher, teacher_inputs(teacher, raw).dataset)
    log(f"{data_ref} split {split_seed}: teacher {TEACHER_ARCH} ({epochs} epochs) test "
        f"{100 * logits_accuracy(logits['test'], data.test_y):.2f}%")
    return Path(teacher.ref), logits_accuracy(logits["test"], data.test_y)


def cell_budget(path: Path, data_ref: str, split_seed: int, space_name: str, multiple: float) -> dict:
    """The latency budget of a split seed: `multiple` x the space's smallest network, measured beside the floor."""
    found = read_json(path)
    if found is not None:
        return found
    from compressor.data.datasets import load_dataset
    from compressor.models.on_target import check_side_by_side
    from compressor.spaces import get_space
    from profilers.side_by_side import floor_model
    from targets import load_target

    raw = load_dataset(data_ref, image_size=IMAGE_SIZE, channels=CHANNELS, seed=split_seed)
    space = get_space(space_name)
    smallest = space.build(space.sample(space.smallest_params(), 0), raw.input_shape, raw.num_classes)
    target = load_target("cpu-1t")
    floor = floor_model((1, *raw.input_shape)).SerializeToString()
    session = check_side_by_side({"smallest": smallest, "floor": floor}, target, raw.input_shape, memory=False,
                                 name="bench-budget")
    smallest_ms = session.checked["smallest"].profile["latency_ms"]["p50"]
    floor_ms = session.checked["floor"].profile["latency_ms"]["p50"]
    budget = {"latency_ms": multiple * smallest_ms, "smallest_ms": smallest_ms, "floor_ms": floor_ms,
              "multiple": multiple, "space": space_name}
    write_json(path, budget)
    log(f"{data_ref} split {split_seed}: smallest {space_name} network {smallest_ms:.4f} ms, runtime floor "
        f"{floor_ms:.4f} ms -> budget {budget['latency_ms']:.4f} ms p50 on cpu-1t")
    return budget


def cell_baseline(path: Path, teacher: Path, data_ref: str, split_seed: int, fraction: float, latency_ms: float,
                  args, cache: Path) -> dict:
    """The fair baseline of a cell (compressor.pipeline.baselines), trained once and stored."""
    found = read_json(path)
    if found is not None:
        return found
    from compressor.data.datasets import load_dataset
    from compressor.models.on_target import DriftReference
    from compressor.models.teachers import load_teacher, teacher_inputs
    from compressor.pipeline.baselines import hand_designed_baseline, open_tuning_store
    from compressor.search.config import SearchConfig
    from compressor.train.distill import LogitsCache
    from targets import load_target

    raw = load_dataset(data_ref, image_size=IMAGE_SIZE, channels=CHANNELS, seed=split_seed, label_fraction=fraction)
    data = raw.normalised(raw.student_preprocessing())
    model = load_teacher(str(teacher), num_classes=data.num_classes, input_shape=data.input_shape)
    logits = LogitsCache(cache).get(model, teacher_inputs(model, raw).dataset)
    target = load_target("cpu-1t").with_budgets(latency_ms=latency_ms)
    reference = DriftReference.start(target, data.input_shape, data.num_classes)
    config = SearchConfig(trials=args.tuning, fidelities=tuple(args.fidelities[:1]), final_epochs=args.final_epochs,
                          seed=args.seed)
    started = time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    store = open_tuning_store(path.with_suffix(".sqlite"), args.seed)
    try:
        result = hand_designed_baseline(data, target, config, logits, store=store, reference=reference, say=log)
    finally:
        store.close()
    result["seconds"] = time.time() - started
    write_json(path, result)
    return result


def cell_search(run_dir: Path, teacher: Path, data_ref: str, split_seed: int, fraction: float, latency_ms: float,
                strategy: str, args, cache: Path) -> dict:
    """One strategy's `compress` run in a cell (resumed if stored): its report."""
    done = read_json(run_dir / "report.json")
    if done is not None and done.get("student") is not None:
        return done
    from compressor.pipeline.compress import DataOptions, compress

    strategy, _, space = strategy.partition("@")
    started = time.time()
    result = compress(str(teacher), out=run_dir, data=data_ref, target="cpu-1t", latency_ms=latency_ms,
                      data_options=DataOptions(image_size=IMAGE_SIZE, channels=CHANNELS, seed=split_seed,
                                               label_fraction=fraction),
                      trials=args.max_trials, search_minutes=args.search_minutes, strategy=strategy,
                      space=space or args.space, family_size=args.family_size, fidelities=tuple(args.fidelities),
                      final_epochs=args.final_epochs, tuning_trials=args.tuning, finalists=args.finalists,
                      seed=args.seed, export=False, quiet=True, baseline=True,
                      resume=(run_dir / "trials.sqlite").exists(), cache_dir=str(cache))
    log(f"  {strategy}: {time.time() - started:.0f} s")
    return result.report


def run_cells(args) -> None:
    out, cache = Path(args.out), Path(args.out) / "cache"
    for split_seed in args.split_seeds:
        for data_ref in args.data:
            teacher, _ = teacher_checkpoint(data_ref, split_seed, args.teacher_epochs, cache)
            base = out / data_ref / f"split{split_seed}"
            budget = cell_budget(base / "budget.json", data_ref, split_seed, args.space, args.floor_multiple)
            for fraction in args.label_fractions:
                cell = base / f"labels{fraction:g}"
                log(f"cell {data_ref} split {split_seed} labels {fraction:g}: budget {budget['latency_ms']:.4f} ms")
                baseline = cell_baseline(cell / "baseline.json", teacher, data_ref, split_seed, fraction,
                                         budget["latency_ms"], args, cache)
                log(f"  baseline {baseline.get('arch')}: test {100 * (baseline.get('test_accuracy') or 0):.2f}%")
                # The order rotates with the split seed so no strategy always runs first (on the coldest cache).
                order = args.strategies[split_seed % len(args.strategies):] + args.strategies[:split_seed % len(args.strategies)]
                for strategy in order:
                    report = cell_search(cell / strategy, teacher, data_ref, split_seed, fraction,
                                         budget["latency_ms"], strategy, args, cache)
                    student = report.get("student") or {}
                    log(f"  {strategy}: {arch_name(student.get('arch', 'no student'))} test "
                        f"{100 * (student.get('test_accuracy') or 0):.2f}%")


def collect(out: Path) -> dict:
    """Every finished cell under `out`: {(data, fraction): {"baseline": [...], strategy: [...]}} by split seed."""
    table: dict = {}
    for budget_path in sorted(out.glob("*/split*/budget.json")):
        data_ref, split_seed = budget_path.parent.parent.name, int(budget_path.parent.name[len("split"):])
        budget = read_json(budget_path)
        for cell in sorted(budget_path.parent.glob("labels*")):
            baseline = read_json(cell / "baseline.json")
            if baseline is None or baseline.get("status") != "ok":
                continue
            row = table.setdefault((data_ref, cell.name[len("labels"):]), {})
            row.setdefault("baseline", []).append({"split": split_seed, "test": baseline["test_accuracy"],
                                                    "val": baseline["val_accuracy"], "arch": baseline["arch"],
                                                    "budget": budget})
            for report_path in sorted(cell.glob("*/report.json")):
                report = read_json(report_path)
                if report.get("student") is None:
                    continue
                search, student = report["search"], report["student"]
                hours = search["seconds"] / 3600
                model = search["latency_model"]
                searched = [f for f in student.get("finalists", []) if f["source"] == "search"]
                alone = max(searched, key=lambda f: f["val_accuracy"]) if searched else student
                row.setdefault(report_path.parent.name, []).append({
                    "split": split_seed, "test": student["test_accuracy"], "val": student["val_accuracy"],
                    "arch": f"{arch_name(student['arch'])} ({student['params']:,} params)", "meets": student.get("meets_budget"),
                    "over_budget": model["over_budget_share"], "screenings": model["screenings"],
                    "skipped": model["skipped"], "trained": search["trained"],
                    "per_hour": search["trained"] / hours if hours else None,
                    "train_fraction": search["train_fraction"], "tau": model["kendall_tau"],
                    "predicted_ok": model["predicted_feasible_ok"], "seconds": search["seconds"],
                    "alone_test": alone["test_accuracy"], "shipped_baseline": student.get("source") == "baseline"})
    return table


def arch_name(arch) -> str:
    """A spec in a few words: nago's operation and widths, a zoo family's knobs."""
    if isinstance(arch, str):
        return arch
    if arch.get("space") == "nago":
        resolved = arch["resolved"]
        return f"nago {resolved['op']} {'-'.join(map(str, resolved['widths']))}"
    knobs = ",".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in arch.get("params", {}).items())
    return f"{arch.get('space')}:{knobs}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * std:.2f}"


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def print_summary(table: dict) -> None:
    for (data_ref, fraction), row in sorted(table.items()):
        base = row["baseline"]
        base_mean = statistics.mean(b["test"] for b in base)
        splits = ", ".join(str(b["split"]) for b in base)
        budgets = ", ".join(f"{b['budget']['latency_ms']:.4f}" for b in base)
        print(f"\n#### {data_ref}, labels {fraction}: split seeds {splits}; budgets {budgets} ms p50 (cpu-1t)\n")
        print("| student | n | test acc % (mean ± std) | vs baseline (points) | val acc % | search alone: test acc % "
              "(vs baseline) | baseline shipped | over budget | skipped unmeasured | trained families / hour | "
              "time training | Kendall τ | predicted feasible that fit |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| fair baseline ({', '.join(sorted({b['arch'] for b in base}))}) | {len(base)} | "
              f"{_mean_std([b['test'] for b in base])} | | {_mean_std([b['val'] for b in base])} | | | | | | | | |")
        for strategy, runs in sorted(row.items()):
            if strategy == "baseline":
                continue
            splits = {r["split"] for r in runs}
            paired = [r["test"] - b["test"] for r in runs for b in base if b["split"] == r["split"]]
            diff = statistics.mean(paired) if paired else statistics.mean(r["test"] for r in runs) - base_mean
            alone = [r.get("alone_test", r["test"]) - b["test"] for r in runs for b in base if b["split"] == r["split"]]
            print(f"| {strategy} | {len(splits)} | {_mean_std([r['test'] for r in runs])} | {100 * diff:+.2f} | "
                  f"{_mean_std([r['val'] for r in runs])} | "
                  f"{_mean_std([r.get('alone_test', r['test']) for r in runs])} ({100 * statistics.mean(alone or [0]):+.2f}) | "
                  f"{sum(bool(r.get('shipped_baseline')) for r in runs)}/{len(runs)} | "
                  f"{_pct(_median(r['over_budget'] for r in runs))} | "
                  f"{_median(r['skipped'] for r in runs) or 0:.0f} | {_median(r['per_hour'] for r in runs) or 0:.0f} | "
                  f"{_pct(_median(r['train_fraction'] for r in runs))} | "
                  f"{(_median(r['tau'] for r in runs) or float('nan')):.2f} | "
                  f"{_pct(_median(r['predicted_ok'] for r in runs))} |")
        for strategy, runs in sorted(row.items()):
            if strategy != "baseline":
                print(f"\n{strategy} winners: " + "; ".join(f"split {r['split']}: {r['arch']} "
                                                            f"({100 * r['test']:.2f}%)" for r in runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["digits-cluttered"])
    parser.add_argument("--strategies", default="tpe,trade,random",
                        help="comma-separated; STRATEGY@SPACE runs a strategy on another space than --space")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label-fractions", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--search-minutes", type=float, default=3.0, help="wall-clock search time of every run")
    parser.add_argument("--max-trials", type=int, default=200, help="a cap the time budget should reach first")
    parser.add_argument("--space", default="all")
    parser.add_argument("--family-size", type=int, default=2)
    parser.add_argument("--fidelities", default="1,3")
    parser.add_argument("--final-epochs", type=int, default=15)
    parser.add_argument("--tuning", type=int, default=16,
                        help="lr/KD evaluations at one epoch of the baseline's tuning and of the winner's")
    parser.add_argument("--finalists", type=int, default=2, help="searched families trained in full per run")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--floor-multiple", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0, help="the training and search seed of every run")
    parser.add_argument("--out", default="runs/bench_search")
    parser.add_argument("--summary", action="store_true", help="only print the tables of what is finished")
    args = parser.parse_args()
    args.strategies = args.strategies.split(",")
    args.fidelities = [int(x) for x in args.fidelities.split(",")]

    if not args.summary:
        import torch

        torch.set_num_threads(1)
        run_cells(args)
    table = collect(Path(args.out))
    write_json(Path(args.out) / "summary.json", {f"{d} labels {f}": row for (d, f), row in table.items()})
    print_summary(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
