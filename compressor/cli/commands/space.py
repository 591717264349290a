"""`compressor space`: list student spaces, show their knobs, sample and draw a member.

    compressor space list
    compressor space show nago
    compressor space sample nago --seed 3 --input-shape 1x3x32x32 --out net.json --plot net.png
    compressor space sample zoo --set family=resnet --set depths=1-1-1-1
    compressor space sample net.json --plot net.png      # inspect a saved ArchSpec

torch is imported only by `sample` (through the builders).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from compressor.cli.common import parse_shape, positive_int
from compressor.cli.console import console, print_json, print_table
from compressor.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "space",
        help="student spaces: list, show knobs, sample a member (ArchSpec JSON, params/MACs, plot)",
        description="Inspect the student spaces the search explores. `sample` draws one member of a "
        "family (params + seed), builds it for an input shape, prints its parameters and MACs and "
        "can save the ArchSpec (--out) and draw its graphs (--plot).",
    )
    parser.add_argument("action", choices=["list", "show", "sample"], help="what to do")
    parser.add_argument("name", nargs="?", help="space name (nago, zoo), a reference such as zoo:resnet:width=16, or an ArchSpec JSON file")
    parser.add_argument("--seed", type=int, default=0, help="family seed (default 0): another seed, another member of the same family")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KNOB=VALUE",
        help="set a knob (repeatable); dashed lists fill numbered knobs, e.g. depths=1-1-1-1",
    )
    parser.add_argument("--params", metavar="JSON", help="knob values as a JSON object (applied before --set)")
    parser.add_argument("--random", action="store_true", help="draw the knob values at random from the space's hyperopt space (seeded by --seed)")
    parser.add_argument("--input-shape", default="1x3x32x32", help="input shape NxCxHxW or CxHxW (default 1x3x32x32)")
    parser.add_argument("--num-classes", type=positive_int, default=10, help="classifier outputs (default 10)")
    parser.add_argument("--out", metavar="FILE.json", help="write the ArchSpec here")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the architecture's graphs here")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compressor.spaces import SPACES, get_space

    if args.action == "list":
        rows = [(name, type(SPACES.get(name)).__doc__.strip().splitlines()[0]) for name in SPACES]
        if args.json:
            print_json([{"name": n, "description": d} for n, d in rows])
        else:
            print_table(None, ["space", "description"], rows)
        return 0
    if not args.name:
        raise UserError(f"`space {args.action}` needs a space name, e.g. `compressor space {args.action} nago`")
    if args.action == "show":
        space = get_space(args.name)
        rows = space.describe()
        if args.json:
            print_json({"space": space.name, "knobs": [dict(zip(("knob", "default", "range", "help"), r)) for r in rows]})
        else:
            print_table(f"space {space.name}: knobs", ["knob", "default", "range", "help"], rows)
        return 0
    return _sample(args)


def _sample(args: argparse.Namespace) -> int:
    from compressor.spaces import build_model, get_space, load_spec, spec_from_ref
    from compressor.spaces.stats import count_macs, count_params

    input_shape = _input_shape(args.input_shape)
    if args.name.endswith(".json") or Path(args.name).is_file():
        if args.set or args.params or args.random:
            raise UserError("--set/--params/--random apply to a space, not to an ArchSpec file")
        spec = load_spec(args.name)
    else:
        base = spec_from_ref(args.name, args.seed)
        space = get_space(base.space)
        params = dict(base.params)
        if args.random:
            params = space.validate_params(_random_params(space, args.seed))
        params.update(_parse_params(args.params))
        for item in args.set:
            update = _parse_set(item, space, params)
            if update.get("family", params.get("family")) != params.get("family"):
                params = {}  # another zoo family: the previous family's knobs do not apply
            params.update(update)
        spec = space.sample(params, args.seed)
    model = build_model(spec, input_shape, args.num_classes)
    summary = {
        "space": spec.space,
        "seed": spec.seed,
        "input_shape": list(input_shape),
        "num_classes": args.num_classes,
        "params": count_params(model),
        "macs": count_macs(model, input_shape),
        "arch": spec.to_dict(),
    }
    if args.out:
        _write_atomic(Path(args.out), spec.to_json() + "\n")
    if args.plot:
        from compressor.spaces.plot import plot_spec

        plot_spec(spec, args.plot)
    if args.json:
        print_json(summary)
        return 0
    knobs = [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in spec.params.items()]
    print_table(f"{spec.space} member, seed {spec.seed}: knobs", ["knob", "value"], knobs)
    print_table(
        None,
        ["input", "classes", "params", "MACs"],
        [("x".join(map(str, input_shape)), args.num_classes, summary["params"], summary["macs"])],
    )
    for label, path in (("ArchSpec", args.out), ("plot", args.plot)):
        if path:
            console.print(f"{label} written to {path}")
    return 0


def _input_shape(text: str) -> tuple[int, int, int]:
    dims = parse_shape(text)
    if len(dims) == 4:
        dims = dims[1:]
    if len(dims) != 3:
        raise UserError(f"--input-shape must be NxCxHxW or CxHxW, got {text!r}")
    return dims


def _random_params(space, seed: int) -> dict:
    import numpy as np
    from hyperopt.pyll.stochastic import sample

    return sample(space.hyperopt_space(), rng=np.random.default_rng(seed))


def _parse_params(text: str | None) -> dict:
    if not text:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise UserError("--params must be a JSON object, e.g. '{\"base_width\": 24}'")
    return params


def _parse_set(item: str, space, params: dict) -> dict:
    from compressor.spaces import expand_param

    key, eq, value = item.partition("=")
    if not eq or not key.strip():
        raise UserError(f"--set expects KNOB=VALUE, got {item!r}")
    return expand_param(key.strip(), value.strip(), space, params)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
