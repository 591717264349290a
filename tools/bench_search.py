"""Does the search earn its place? Searched students against the fair, tuned baseline at equal time.

For each split seed, dataset and label regime (a *cell*):

* a teacher (a plain 32-64-128 CNN trained with cross-entropy on every label
  of the split, cached by dataset identity, so each split seed has its own and
  every regime and strategy share it);
* one latency budget per cell, relative to the run's drift reference
  (`compress --latency-x-ref`): `--floor-multiple` (2.5, the demo's floor
  rule) x the p50 of the space's smallest network on cpu-1t, as a multiple of
  the drift reference (zoo:plain 8-16-32) measured side by side with it and a
  one-op model (the runtime's floor) when the cell starts, the median of
  three such sessions (one can fall in a slow spell). Every run then
  judges each candidate by its ratio to the reference measured beside it, so
  the strategies of a cell face the same budget whatever the machine's speed
  when each runs. Budgets in milliseconds did not: on the 2-core dev VM the
  one-op floor read 0.0085-0.0180 ms within one day, and budgets measured
  minutes before each run of one cell came out 0.0623-0.1366 ms. At 2x the
  smallest network, on a CPU without AVX-512, the smallest plain CNN of the
  baseline's ladder (8-16-32) sat at 0.92-1.06x the budget, so whether there
  was a baseline at all was the machine's drift's call; at 2.5x it sits near
  0.85x;
* one `compress --baseline` run per strategy with the same wall-clock
  (`--search-minutes`), the same teacher, data, space, fidelities and final
  epochs, its `--finalists` searched families and its own fair baseline
  (compressor.pipeline.baselines: the widest plain CNN within the budget,
  lr/KD tuned in `--tuning` one-epoch evaluations, the student's recipe) each
  filled, tuned and trained in full, the best on validation shipped
  (compressor.pipeline.finalists). "vs baseline" pairs the student with the
  baseline of its own run (same budget, same session); "search alone" is the
  best searched finalist on validation, what the run would ship without
  `--baseline`; the latency model's calibration is shared through one cache
  directory, so only the very first run of the benchmark starts cold.

Every piece is stored under `--out` and reused when the tool runs again (a
search resumes; a finished one is not run again), so the benchmark can be run
across sessions, a few cells at a time (`--split-seeds 0`, then `1 2`). The
summary covers whatever is finished: per dataset, regime and strategy the test
accuracy mean +- std over split seeds beside the baseline's, the difference,
the share of screenings over budget, trained families per hour of search,
the distinct networks each search trained (and its repeats, not trained),
the share of the search's wall-clock spent training (the strategy's own time
between evaluations included) and the latency model's Kendall tau
and the share of "predicted feasible" that fit. A second table says what each
strategy found itself, warm starts aside (every strategy starts from the same
ones, and when all ship one the shipped student cannot tell them apart): its
best network's validation accuracy at the highest fidelity and, where one was
a finalist, after the full training.

    .venv/bin/python tools/bench_search.py --data digits-cluttered --strategies tpe,trade,random --split-seeds 0 1 2
    .venv/bin/python tools/bench_search.py --data digits --strategies tpe --split-seeds 0 1 2 --search-minutes 2
    .venv/bin/python tools/bench_search.py --summary   # the tables of everything finished under --out
    .venv/bin/python tools/bench_search.py --rechoose  # those runs' finalists chosen again by today's rule
    .venv/bin/python tools/bench_search.py ... --refinish  # the same runs finished again by today's code
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
BUDGET_SESSIONS = 3


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


def student_data(data_ref: str, split_seed: int, label_fraction: float, teacher_epochs: int, cache: Path):
    """A cell's data as its students train on it (normalised, `label_fraction` of the labels) and its teacher's
    logits (the cached teacher of `teacher_checkpoint`)."""
    from compressor.data.datasets import load_dataset
    from compressor.models.teachers import load_teacher, teacher_inputs
    from compressor.train.distill import LogitsCache

    raw = load_dataset(data_ref, image_size=IMAGE_SIZE, channels=CHANNELS, seed=split_seed,
                       label_fraction=label_fraction)
    data = raw.normalised(raw.student_preprocessing())
    path, _ = teacher_checkpoint(data_ref, split_seed, teacher_epochs, cache)
    teacher = load_teacher(str(path), num_classes=data.num_classes, input_shape=data.input_shape)
    return data, LogitsCache(cache).get(teacher, teacher_inputs(teacher, raw).dataset)


def cell_budget(path: Path, data_ref: str, split_seed: int, space_name: str, multiple: float) -> dict:
    """A cell's latency budget: `multiple` x the space's smallest network, as a multiple of the drift reference.

    Measured in `BUDGET_SESSIONS` sessions (each side by side: the smallest network, the reference and the
    one-op floor), the median ratio kept, and stored. One session can fall in a slow spell that moves the
    ratio itself: of 35 budgets measured in one session on the dev VM, 34 put the smallest network at
    0.745-0.802x the reference and one, whose reference read 0.0414 ms against 0.0277-0.0287, at 0.569x.
    """
    found = read_json(path)
    if found is not None:
        return found
    from compressor.data.datasets import load_dataset
    from compressor.models.on_target import DriftReference, check_side_by_side
    from compressor.spaces import get_space
    from profilers.side_by_side import floor_model
    from targets import load_target

    raw = load_dataset(data_ref, image_size=IMAGE_SIZE, channels=CHANNELS, seed=split_seed)
    space = get_space(space_name)
    smallest = space.build(space.sample(space.smallest_params(), 0), raw.input_shape, raw.num_classes)
    target = load_target("cpu-1t")
    floor = floor_model((1, *raw.input_shape)).SerializeToString()
    reference = DriftReference.model_bytes(target, raw.input_shape, raw.num_classes)
    sessions = []
    for index in range(BUDGET_SESSIONS):
        session = check_side_by_side({"smallest": smallest, "reference": reference, "floor": floor}, target,
                                     raw.input_shape, memory=False, name=f"bench-budget-{index}")
        sessions.append({"smallest_x_reference": session.ratio("smallest", "reference")[0],
                         "floor_x_reference": session.ratio("floor", "reference")[0],
                         "reference_ms": session.checked["reference"].profile["latency_ms"]["p50"]})
    smallest_x_ref, floor_x_ref, reference_ms = (statistics.median(one[key] for one in sessions) for key in
                                                 ("smallest_x_reference", "floor_x_reference", "reference_ms"))
    budget = {"latency_x_reference": multiple * smallest_x_ref, "smallest_x_reference": smallest_x_ref,
              "floor_x_reference": floor_x_ref, "reference_ms": reference_ms, "multiple": multiple,
              "sessions": sessions, "space": space_name, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(path, budget)
    spread = ", ".join(f"{one['smallest_x_reference']:.3f}" for one in sessions)
    log(f"  smallest {space_name} network {smallest_x_ref:.3f}x the drift reference (median of {spread}; "
        f"reference {reference_ms:.4f} ms now), runtime floor {floor_x_ref:.3f}x -> budget "
        f"{budget['latency_x_reference']:.3f}x the reference")
    return budget


def cell_search(run_dir: Path, teacher: Path, data_ref: str, split_seed: int, fraction: float,
                latency_x_reference: float, strategy: str, args, cache: Path) -> dict:
    """One strategy's `compress` run in a cell (resumed if stored): its report."""
    done = read_json(run_dir / "report.json")
    if done is not None and done.get("student") is not None and not args.refinish:
        return done
    from compressor.pipeline.compress import DataOptions, compress

    strategy, _, space = strategy.partition("@")
    started = time.time()
    result = compress(str(teacher), out=run_dir, data=data_ref, target="cpu-1t",
                      latency_x_reference=latency_x_reference,
                      data_options=DataOptions(image_size=IMAGE_SIZE, channels=CHANNELS, seed=split_seed,
                                               label_fraction=fraction),
                      trials=args.max_trials, search_minutes=args.search_minutes, strategy=strategy,
                      space=space or args.space, family_size=args.family_size, fidelities=tuple(args.fidelities),
                      final_epochs=args.final_epochs, tuning_trials=args.tuning, finalists=args.finalists,
                      fill_fraction=args.fill_fraction, seed=args.seed, export=False, quiet=True, baseline=True,
                      resume=(run_dir / "trials.sqlite").exists(), cache_dir=str(cache))
    log(f"  {strategy}: {time.time() - started:.0f} s")
    return result.report


def run_cells(args) -> None:
    out, cache = Path(args.out), Path(args.out) / "cache"
    for split_seed in args.split_seeds:
        for data_ref in args.data:
            teacher, _ = teacher_checkpoint(data_ref, split_seed, args.teacher_epochs, cache)
            for fraction in args.label_fractions:
                cell = out / data_ref / f"split{split_seed}" / f"labels{fraction:g}"
                if any(cell.glob("*.budget.json")):
                    sys.exit(f"{cell} holds runs at budgets in milliseconds (an earlier version of this tool); "
                             "give another --out, keeping its cache/ if you like")
                log(f"cell {data_ref} split {split_seed} labels {fraction:g}")
                # The order rotates with the split seed so no strategy always runs first (on the coldest cache).
                order = args.strategies[split_seed % len(args.strategies):] + args.strategies[:split_seed % len(args.strategies)]
                budget = cell_budget(cell / "budget.json", data_ref, split_seed, args.space, args.floor_multiple)
                for strategy in order:
                    report = cell_search(cell / strategy, teacher, data_ref, split_seed, fraction,
                                         budget["latency_x_reference"], strategy, args, cache)
                    student, baseline = report.get("student") or {}, own_baseline(report) or {}
                    log(f"  {strategy}: {arch_name(student.get('arch', 'no student'))} test "
                        f"{100 * (student.get('test_accuracy') or 0):.2f}%, its baseline {baseline.get('arch')} "
                        f"{100 * (baseline.get('test_accuracy') or 0):.2f}%")


def own_baseline(report: dict) -> dict | None:
    """The fair baseline a `compress --baseline` run trained beside its search, if it trained."""
    from compressor.pipeline.report import trained_baselines

    return next(iter(trained_baselines(report)), None)


def collect(out: Path) -> dict:
    """Every finished run under `out`: {(data, fraction): {strategy: [run, ...]}}, each run with its own baseline."""
    table: dict = {}
    for report_path in sorted(out.glob("*/split*/labels*/*/report.json")):
        run_dir = report_path.parent
        cell, strategy = run_dir.parent, run_dir.name
        data_ref, split_seed = cell.parent.parent.name, int(cell.parent.name[len("split"):])
        report = read_json(report_path)
        baseline = own_baseline(report)
        if report.get("student") is None or baseline is None:
            continue
        search, student = report["search"], report["student"]
        figures = search_figures(run_dir / "trials.sqlite", search["space"])
        networks, wall_seconds, train_seconds = figures["networks"], figures["wall"], figures["train"]
        hours = wall_seconds / 3600
        model = search["latency_model"]
        searched = [f for f in student.get("finalists", []) if f["source"] == "search"]
        alone = max(searched, key=lambda f: f["val_accuracy"]) if searched else student
        found = max((f for f in searched if f["proposal"] not in figures["warm"]), key=lambda f: f["val_accuracy"],
                    default=None)
        table.setdefault((data_ref, cell.name[len("labels"):]), {}).setdefault(strategy, []).append({
            "split": split_seed, "budget_ms": report["budgets"]["latency_ms"],
            "budget_x_ref": report["budgets"].get("latency_x_reference"), "test": student["test_accuracy"],
            "val": student["val_accuracy"], "baseline_test": baseline["test_accuracy"],
            "baseline_val": baseline["val_accuracy"], "baseline_arch": baseline["arch"],
            "baseline_fits": baseline.get("at_same_budget"),
            "arch": f"{arch_name(student['arch'])} ({student['params']:,} params)", "meets": student.get("meets_budget"),
            "over_budget": model["over_budget_share"], "screenings": model["screenings"],
            "skipped": model["skipped"], "trained": search["trained"], "repeats": search.get("repeats", 0),
            "networks": networks, "per_hour": search["trained"] / hours if hours else None,
            "train_fraction": train_seconds / wall_seconds if wall_seconds else None, "tau": model["kendall_tau"],
            "predicted_ok": model["predicted_feasible_ok"], "seconds": search["seconds"],
            "alone_test": alone["test_accuracy"], "shipped_baseline": student.get("source") == "baseline",
            "found_screen_val": figures["found_val"], "warm_screen_val": figures["warm_val"],
            "found_val": found and found["val_accuracy"], "found_test": found and found["test_accuracy"]})
    return table


def search_figures(path: Path, space_name: str) -> dict:
    """A run's search read from its trial store, so that runs of earlier code, whose reports lack these, count the
    same way: `networks` it trained at its smallest fidelity (earlier code trained some twice), its `wall`-clock
    (meta `search_seconds`, the strategy's proposing included: the bench runs one worker), the seconds its
    evaluations spent training (`train`), and what the strategy itself found: the `warm` starts' proposal ids
    and the best validation accuracy at the highest fidelity of a proposal that is not one (`found_val`) and of
    one that is (`warm_val`). Every strategy starts from the same warm starts, so only `found_val` tells the
    strategies apart when they ship the same warm start."""
    from compressor.search.fit import network_key
    from compressor.search.store import TrialStore
    from compressor.search.strategies import is_warm_start
    from compressor.spaces import get_space

    space, store = get_space(space_name), TrialStore(path)
    try:
        records, wall = store.records(), float(store.get_meta("search_seconds") or 0.0)
    finally:
        store.close()
    first, top = min(r.fidelity for r in records), max(r.fidelity for r in records)
    networks = {network_key(space, r.params["arch"]) for r in records if r.fidelity == first and r.status == "ok"}
    best = {warm: max((r.val_accuracy for r in records if r.fidelity == top and r.status == "ok"
                       and is_warm_start(r) == warm), default=None) for warm in (False, True)}
    return {"networks": len(networks), "wall": wall, "train": sum(r.train_s for r in records),
            "warm": {r.proposal for r in records if is_warm_start(r)}, "found_val": best[False], "warm_val": best[True]}


def _networks(run: dict) -> str:
    return f"{run['networks']} ({run['repeats']})"


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
        print(f"\n#### {data_ref}, labels {fraction}\n")
        print("| strategy | split seeds | budgets (ms p50, cpu-1t) | its baseline: test acc % | student: test acc % "
              "(mean ± std) | vs baseline (points) | student val acc % | search alone: test acc % (vs baseline) | "
              "baseline shipped | over budget | skipped unmeasured | trained families / hour | "
              "networks trained (repeats not trained) | time training | Kendall τ | predicted feasible that fit |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for strategy, runs in sorted(row.items()):
            runs = sorted(runs, key=lambda r: r["split"])
            paired = [r["test"] - r["baseline_test"] for r in runs]
            alone = [r["alone_test"] - r["baseline_test"] for r in runs]
            budgets = ", ".join(f"{r['budget_ms']:.4f}" + (f" ({r['budget_x_ref']:.2f}x ref)" if r["budget_x_ref"] else "")
                                for r in runs)
            print(f"| {strategy} | {', '.join(str(r['split']) for r in runs)} | "
                  f"{budgets} | "
                  f"{_mean_std([r['baseline_test'] for r in runs])} | {_mean_std([r['test'] for r in runs])} | "
                  f"{100 * statistics.mean(paired):+.2f} ({', '.join(f'{100 * d:+.2f}' for d in paired)}) | "
                  f"{_mean_std([r['val'] for r in runs])} | "
                  f"{_mean_std([r['alone_test'] for r in runs])} ({100 * statistics.mean(alone):+.2f}) | "
                  f"{sum(bool(r['shipped_baseline']) for r in runs)}/{len(runs)} | "
                  f"{_pct(_median(r['over_budget'] for r in runs))} | "
                  f"{_median(r['skipped'] for r in runs) or 0:.0f} | {_median(r['per_hour'] for r in runs) or 0:.0f} | "
                  f"{', '.join(map(_networks, runs))} | "
                  f"{_pct(_median(r['train_fraction'] for r in runs))} | "
                  f"{(_median(r['tau'] for r in runs) or float('nan')):.2f} | "
                  f"{_pct(_median(r['predicted_ok'] for r in runs))} |")
        print_found(row)
        for strategy, runs in sorted(row.items()):
            print(f"\n{strategy} winners: " + "; ".join(
                f"split {r['split']}: {r['arch']} ({100 * r['test']:.2f}%; baseline {arch_name(r['baseline_arch'])}"
                f"{'' if r['baseline_fits'] is not False else ', over budget'})"
                for r in sorted(runs, key=lambda r: r["split"])))


def print_found(row: dict) -> None:
    """What each strategy found itself, per split: the best validation accuracy at the highest fidelity of a
    network that is not a warm start (beside the warm starts' best), and its best such finalist after the full
    training (validation and test), where one was a finalist."""
    def per_split(runs, key):
        return ", ".join("-" if r[key] is None else f"{100 * r[key]:.2f}" for r in runs)

    print("\n| strategy | found, highest fidelity: val acc % (per split) | warm starts there | "
          "found, trained in full: val acc % | its test acc % | shipped: test acc % |")
    print("|---|---:|---:|---:|---:|---:|")
    for strategy, runs in sorted(row.items()):
        runs = sorted(runs, key=lambda r: r["split"])
        print(f"| {strategy} | {per_split(runs, 'found_screen_val')} | {per_split(runs, 'warm_screen_val')} | "
              f"{per_split(runs, 'found_val')} | {per_split(runs, 'found_test')} | {per_split(runs, 'test')} |")


def rechoose(out: Path) -> None:
    """Every finished run under `out` with its finalists chosen again by today's `finalists.choose`.

    Each finalist's validation predictions come from its checkpoint (the split rebuilt from the run's place under
    `out`), so a rule changed after the runs is measured on the same trained networks, at no training cost.
    """
    from compressor.data.datasets import load_dataset
    from compressor.models.build import model_from_checkpoint
    from compressor.models.checkpoint import load_checkpoint
    from compressor.pipeline.finalists import choose
    from compressor.train.distill import predict

    splits: dict = {}
    table: dict = {}
    for report_path in sorted(out.glob("*/split*/labels*/*/report.json")):
        run_dir = report_path.parent
        cell = run_dir.parent
        data_ref, split_seed = cell.parent.parent.name, int(cell.parent.name[len("split"):])
        fraction = float(cell.name[len("labels"):])
        student = (read_json(report_path) or {}).get("student") or {}
        finalists = student.get("finalists") or []
        if not any(f["source"] == "baseline" for f in finalists):
            continue
        key = (data_ref, split_seed, fraction)
        if key not in splits:
            raw = load_dataset(data_ref, image_size=IMAGE_SIZE, channels=CHANNELS, seed=split_seed,
                               label_fraction=fraction)
            splits[key] = raw.normalised(raw.student_preprocessing())
        data = splits[key]
        candidates = []
        for f in finalists:
            name = "baseline.pt" if f["source"] == "baseline" else f"finalists/p{f['proposal']}-f{f['fidelity']}.pt"
            wrong = predict(model_from_checkpoint(load_checkpoint(run_dir / name)), data.val_x) != data.val_y
            candidates.append({**f, "val_wrong": [int(i) for i in wrong.nonzero().flatten()]})
        now = candidates[choose(candidates, len(data.val_y))]
        was = next(f for f in finalists if f["chosen"])
        baseline = next(f for f in finalists if f["source"] == "baseline")
        table.setdefault((data_ref, cell.name[len("labels"):]), {}).setdefault(run_dir.name, []).append(
            (split_seed, was, now, baseline))
    for (data_ref, fraction), row in sorted(table.items()):
        print(f"\n#### {data_ref}, labels {fraction}: shipped vs its baseline (test points), as chosen then and now\n")
        print("| strategy | as chosen (mean; per split) | today's rule (mean; per split) | shipped now |")
        print("|---|---:|---:|---|")
        for strategy, runs in sorted(row.items()):
            runs.sort(key=lambda r: r[0])
            then = [100 * (was["test_accuracy"] - base["test_accuracy"]) for _, was, _, base in runs]
            now = [100 * (chosen["test_accuracy"] - base["test_accuracy"]) for _, _, chosen, base in runs]
            print(f"| {strategy} | {statistics.mean(then):+.2f} ({', '.join(f'{d:+.2f}' for d in then)}) | "
                  f"{statistics.mean(now):+.2f} ({', '.join(f'{d:+.2f}' for d in now)}) | "
                  f"{', '.join(f'split {seed}: ' + chosen['name'] for seed, _, chosen, _ in runs)} |")


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
                        help="lr/KD evaluations at one epoch of the baseline's tuning and of each finalist's")
    parser.add_argument("--finalists", type=int, default=2, help="searched families trained in full per run")
    parser.add_argument("--fill-fraction", type=float, default=0.8,
                        help="the share of the budget each proposal is fitted to (compress --fill-fraction)")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--floor-multiple", type=float, default=2.5,
                        help="the budget: this x the space's smallest network's p50, as a multiple of the drift "
                        "reference measured beside it when a cell starts")
    parser.add_argument("--seed", type=int, default=0, help="the training and search seed of every run")
    parser.add_argument("--out", default="runs/bench_search")
    parser.add_argument("--summary", action="store_true", help="only print the tables of what is finished")
    parser.add_argument("--refinish", action="store_true",
                        help="resume the finished runs too, so today's finishing applies to their searches (which "
                        "are not run again: their time is spent): new finalists trained, the final session and the "
                        "choice made again")
    parser.add_argument("--rechoose", action="store_true",
                        help="only choose again among the finalists of every finished run, by today's rule, and "
                        "print what it ships against what was shipped")
    args = parser.parse_args()
    args.strategies = args.strategies.split(",")
    args.fidelities = [int(x) for x in args.fidelities.split(",")]

    if args.rechoose:
        rechoose(Path(args.out))
        return 0
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
