"""Does a short training rank families as the final training does? The search's fidelities against `--final-epochs`.

The search ranks families after short trainings (its fidelities, 1 and 3
epochs by default) and sends the best few to the final training. That is only
as good as the short trainings' ranking of what the long one would give. This
tool takes the distinct families a stored run (or several, `bench_search`'s
strategies of one cell) trained at a fidelity, retrains each one's first
member with the knobs the search gave it at every `--epochs` value (same
recipe as the search: `compressor.search.recipe`, batch 16, one thread, the
run's seed), and prints, per short training, Kendall's tau with the longest
training's validation accuracy of three rankings: by the short training's
validation accuracy (what the search ranked by before), by its validation
cross-entropy (lower first: `TrainResult.val_loss`, what the search ranks
by, `TrialRecord.score`) and by its soft accuracy, the arithmetic mean
probability of the true class. The last two are graded scores: after one epoch every family is
far from its final accuracy, and they may tell apart families that the count
of images right does not. Also what the families each ranks first reach in the long
training. Trainings run in `--workers` processes (accuracy does not depend
on the machine's load; nothing here is timed).

    .venv/bin/python tools/bench_fidelity.py runs/bench_search/digits-cluttered/split0/labels0.1/* \
        --data digits-cluttered --split-seed 0 --label-fraction 0.1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def families(run_dirs: list[Path], fidelity: int) -> list[dict]:
    """The distinct families trained at `fidelity` in `run_dirs`: arch, member seed and knobs, in proposal order."""
    from compressor.search.store import TrialStore
    from compressor.spaces import get_space

    space = get_space("all")
    seen, found = set(), []
    for run_dir in run_dirs:
        store = TrialStore(run_dir / "trials.sqlite")
        try:
            for r in store.records():
                if r.status != "ok" or r.fidelity != fidelity:
                    continue
                arch = space.validate_params(r.params["arch"])
                key = json.dumps(arch, sort_keys=True, default=str)
                if key not in seen:
                    seen.add(key)
                    found.append({"arch": arch, "seed": r.seeds[0], "lr": r.params["lr"],
                                  "kd_alpha": r.params["kd_alpha"], "kd_tau": r.params["kd_tau"]})
        finally:
            store.close()
    return found


def train_all(job: tuple) -> dict[str, dict[int, float]]:
    """One family's validation accuracy ("acc") and cross-entropy ("nll") after each number of epochs (a worker process)."""
    family, args = job
    import torch

    from bench_search import student_data
    from compressor.search import recipe
    from compressor.search.config import SearchConfig
    from compressor.spaces import get_space

    torch.set_num_threads(1)
    data, logits = student_data(args.data, args.split_seed, args.label_fraction, args.teacher_epochs, args.cache)
    spec = get_space("all").sample(family["arch"], family["seed"])
    config = SearchConfig(space="all", seed=args.seed)
    out = {"acc": {}, "nll": {}, "p_true": {}}
    for epochs in args.epochs:
        train = recipe.train_config(config, family, epochs=epochs)
        model, result = recipe.train_spec(spec, data, train, logits, evaluate_test=False)
        ok = result.status == "ok"
        out["acc"][epochs] = result.val_accuracy if ok else 0.0
        out["nll"][epochs] = result.val_loss if ok else math.inf
        with torch.inference_mode():
            p_true = torch.softmax(model.eval()(data.val_x), 1).gather(1, data.val_y[:, None]).mean()
        out["p_true"][epochs] = float(p_true) if ok else 0.0
    return out


def describe(arch: dict) -> str:
    """A family's arch params in a few words."""
    if arch.get("family") == "plain":
        return ("plain " + "-".join(str(arch[f"width_{i}"]) for i in (1, 2, 3)) + " convs "
                + "-".join(str(arch[f"convs_{i}"]) for i in (1, 2, 3)))
    if arch.get("space") == "nago":
        return (f"nago {arch['op']} base width {arch['base_width']}, nodes "
                f"{arch['top_nodes']}-{arch['mid_nodes']}-{arch['bottom_nodes']}")
    return arch.get("family", "?") + " " + ", ".join(f"{k}={v}" for k, v in arch.items() if k not in ("space", "family"))


def main() -> int:
    from scipy.stats import kendalltau

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (RUN_DIR/trials.sqlite) of one cell")
    parser.add_argument("--data", default="digits-cluttered")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--label-fraction", type=float, default=1.0)
    parser.add_argument("--fidelity", type=int, default=3, help="families the runs trained at this fidelity")
    parser.add_argument("--epochs", default="1,3,6,15", help="the trainings compared; the last is the reference")
    parser.add_argument("--teacher-epochs", type=int, default=15, help="bench_search's teacher (cached)")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_search/cache"))
    parser.add_argument("--seed", type=int, default=0, help="the runs' training seed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_fidelity.json"),
                        help="every training's accuracies, kept as they finish and reused")
    args = parser.parse_args()
    args.epochs = [int(e) for e in args.epochs.split(",")]
    found = families([r for r in args.runs if (r / "trials.sqlite").is_file()], args.fidelity)
    if len(found) < 3:
        sys.exit(f"{len(found)} families trained at fidelity {args.fidelity} in those runs; need 3 or more")
    print(f"{len(found)} families, trainings of {args.epochs} epochs", file=sys.stderr, flush=True)
    # Every family's accuracies are kept as they come (a rerun, or one after a crash, trains only the others).
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(args.out.read_text()) if args.out.is_file() else {}
    keys = [json.dumps([f, args.data, args.split_seed, args.label_fraction, args.epochs, "acc+nll"], sort_keys=True)
            for f in found]
    todo = [(f, args) for f, key in zip(found, keys) if key not in done]
    with ProcessPoolExecutor(args.workers) as pool:
        for key, result in zip([k for k in keys if k not in done], pool.map(train_all, todo)):
            done[key] = {m: {str(e): v for e, v in values.items()} for m, values in result.items()}
            args.out.write_text(json.dumps(done))
    accuracies = [{int(e): v for e, v in done[key]["acc"].items()} for key in keys]
    losses = [{int(e): v for e, v in done[key]["nll"].items()} for key in keys]
    p_true = [{int(e): v for e, v in done[key]["p_true"].items()} for key in keys]
    longest = args.epochs[-1]
    final = [a[longest] for a in accuracies]
    print(f"\n| short training | ranked by | Kendall τ with {longest} epochs' accuracy | its top 3 after {longest} epochs (val %) |")
    print("|---|---|---:|---|")
    for epochs in args.epochs[:-1]:
        for name, score in (("accuracy", [a[epochs] for a in accuracies]),
                            ("cross-entropy", [-min(loss[epochs], 1e9) for loss in losses]),
                            ("soft accuracy", [p[epochs] for p in p_true])):
            top = sorted(range(len(found)), key=lambda i: -score[i])[:3]
            print(f"| {epochs} epochs | {name} | {kendalltau(score, final)[0]:.2f} | "
                  f"{', '.join(f'{100 * final[i]:.1f}' for i in top)} |")
    print(f"\nbest after {longest} epochs: {100 * max(final):.1f}%, median {100 * statistics.median(final):.1f}%\n")
    print("| family | lr, KD α, τ | " + " | ".join(f"{e} ep" for e in args.epochs) + " |")
    print("|---|---|" + "---:|" * len(args.epochs))
    for i in sorted(range(len(found)), key=lambda i: -final[i]):
        f = found[i]
        print(f"| {describe(f['arch'])} | {f['lr']:.3f}, {f['kd_alpha']:.2f}, {f['kd_tau']:.2f} | "
              + " | ".join(f"{100 * accuracies[i][e]:.1f}" for e in args.epochs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
