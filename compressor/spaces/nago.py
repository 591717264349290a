"""The `nago` space: NAGO's three-level hierarchical graph generator, sized for CPU budgets.

A point of the space is a *generator*: for each level (top, mid, bottom) a
random-graph model (Watts-Strogatz, Erdős-Rényi or Barabási-Albert) with its
node count and parameters, plus stage ratios, channel ratios, the node
operation and the base width. `sample(params, seed)` draws every graph with
its own seed derived from the family seed (so cells differ) and writes them
into `ArchSpec.resolved`:

    {"op", "stem_width", "widths": [3 stages], "head_width",
     "top": graph, "stages": [[cell ids]...],
     "cells": [{"mid": graph, "bottoms": [graph per mid node]}...]}

The top graph's nodes are cells split into 3 contiguous stages by the
normalised stage ratios (every stage keeps at least one cell: stage entry is
where the network downsamples); only edges inside a stage are wired, since
the stages run at different resolutions. `nago_net.build_nago` turns the
resolved graphs into modules.

Ranges are deliberately smaller than NAGO's public 3..10 nodes per level:
compute grows with the product of the node counts (10*10*10 = 1000 convs),
and the product's target is ~0.15 ms per 32 px image on one CPU core, where
each tiny depthwise op costs a few microseconds of runtime overhead. So:
3..6 cells (3 stages), 1..4 mid nodes, 1..5 bottom nodes, base width 8..64;
the default (3 cells x 1 mid node x 2 ops, width 16) is a small fast network.

**Node operations, chosen by measurement.** The search proposes `OPS` =
sep3x3, sep5x5, conv3x3; conv1x1 and avgpool3x3 are retired (`RETIRED_OPS`:
still valid in a spec, a checkpoint or a `nago:op=...` ref, never
proposed). Under a tight budget the cheap ops filled TPE's low-fidelity
"good" set while learning badly; since the search fits every proposal's width
to the budget (`compressor.search.fit`), the question was whether they still
learn worse *at equal latency*. `tools/bench_nago_ops.py` (BENCHMARKS.md,
"nago node operations") drew random generators per op (hyperopt's sampler),
fitted each to 0.8 of a cpu-1t budget of 2.5x the smallest network (0.037
ms p50), kept those measured within it and trained them 3 epochs with KD on
digits-cluttered, 3 seeds x 3 networks per op: mean validation accuracy
conv3x3 55.2% (± 5.2), sep3x3 47.7% (± 8.5), sep5x5 46.3% (± 10.4),
avgpool3x3 27.4% (± 11.3), conv1x1 13.3% (± 0.9, chance is 10%), at 0.75-0.91
of the budget each. A body of 1x1 convolutions sees no neighbourhood beyond
the stem's 3x3, and a body of pools learns only through its few 1x1
projections, so giving either more width does not help. `smallest` is sep3x3:
of the searched ops it is the cheapest at the smallest generator (0.98x
avgpool3x3's p50 side by side, conv3x3 1.10-1.12x), so the reachability
check and the demo's budget floor barely move. On `digits` (the same
budget, sep3x3 and conv3x3 only) conv3x3 reached 97.1% (± 0.9) and sep3x3
94.2% (± 5.7). The default stays sep3x3 all the same: the default is the
search's first proposal, which a machine's first run screens before its
latency model can fit it to the budget, and at width 16 conv3x3 has 4.5x its MACs (3.2 M against 0.72
M at 32 px grey), so under a tight budget it would be a wasted screening;
the search finds conv3x3 on its own.
"""

from __future__ import annotations

from typing import Any

from compressor.errors import UserError
from compressor.spaces.base import (
    ArchSpec,
    ChoiceKnob,
    FloatKnob,
    IntKnob,
    Space,
    check_input_shape,
    derive_seed,
    knob_cheapest,
    knob_defaults,
    knob_hyperopt,
    knob_rows,
    validate_knobs,
)
from compressor.spaces.graphs import GENERATORS, GraphSpec, assign_stages, generate_graph

# Every bottom-node operation `nago_net.op_layers` builds; the search proposes OPS, the others stay valid
# (RETIRED_OPS: a spec or checkpoint that names one still builds). Why these: the module docstring.
NODE_OPS = ("sep3x3", "sep5x5", "conv1x1", "conv3x3", "avgpool3x3")
OPS = ("sep3x3", "sep5x5", "conv3x3")
RETIRED_OPS = tuple(op for op in NODE_OPS if op not in OPS)
SMALLEST_OP = "sep3x3"
CHANNEL_RATIOS = ("1-2-4", "1-2-3", "1-1.5-2", "1-2-2", "1-1-1")
NUM_STAGES = 3
LEVELS = ("top", "mid", "bottom")


def _level_knobs(level: str, generator: str, nodes: tuple[int, int, int]) -> list:
    low, default, high = nodes
    return [
        ChoiceKnob(f"{level}_generator", generator, GENERATORS, help=f"{level} graph model: Watts-Strogatz, Erdős-Rényi, Barabási-Albert"),
        IntKnob(f"{level}_nodes", default, low, high, depth=True, help=f"nodes of each {level} graph"),
        IntKnob(f"{level}_k", 2, 2, 4, help="WS neighbours (clamped to nodes-1)"),
        FloatKnob(f"{level}_p", 0.5, 0.1, 1.0, help="WS rewiring / ER edge probability"),
        IntKnob(f"{level}_m", 1, 1, 3, help="BA edges per new node (clamped to nodes-1)"),
    ]


KNOBS = (
    *_level_knobs("top", "ws", (3, 3, 6)),
    *_level_knobs("mid", "er", (1, 1, 4)),
    *_level_knobs("bottom", "ws", (1, 2, 5)),
    FloatKnob("stage_ratio_1", 0.5, 0.1, 1.0, help="share of cells in stage 1 (ratios are normalised)"),
    FloatKnob("stage_ratio_2", 0.5, 0.1, 1.0, help="share of cells in stage 2"),
    FloatKnob("stage_ratio_3", 0.5, 0.1, 1.0, help="share of cells in stage 3"),
    ChoiceKnob("channel_ratios", "1-2-4", CHANNEL_RATIOS, smallest="1-1-1", help="stage widths relative to the base width"),
    ChoiceKnob("op", "sep3x3", OPS, smallest=SMALLEST_OP, retired=RETIRED_OPS, help="operation of every bottom node"),
    IntKnob("base_width", 16, 8, 64, step=4, size=True, help="channels of stage 1"),
    IntKnob(
        "param_budget",
        0,
        0,
        20_000_000,
        searchable=False,
        help="if > 0: derive the base width so the body (all but the classifier) has about this many parameters",
    ),
)


class NagoSpace(Space):
    """NAGO hierarchical generator space (random graphs of one node operation per network)."""

    name = "nago"
    knobs = KNOBS

    def hyperopt_space(self) -> dict:
        return knob_hyperopt(self.knobs, self.name)

    def default_params(self) -> dict:
        return knob_defaults(self.knobs)

    def smallest_params(self) -> dict:
        return knob_cheapest(self.knobs)

    def validate_params(self, params: dict) -> dict:
        if not isinstance(params, dict):
            raise UserError(f"nago params must be a dict, got {type(params).__name__}")
        return validate_knobs(self.knobs, params, "nago: ")

    def describe(self) -> list[tuple[str, str, str, str]]:
        return knob_rows(self.knobs)

    def knob_names(self, params: dict) -> list[str]:
        return [k.name for k in self.knobs]

    def sample(self, params: dict, seed: int) -> ArchSpec:
        """Draw the family member `seed` of the generator `params`.

        Args:
            params: knob values (what `hyperopt.space_eval` returns); missing knobs take defaults.
            seed: family seed; each graph gets its own seed derived from it.

        Returns:
            The ArchSpec with every graph resolved.
        """
        params = self.validate_params(params)
        seed = _check_seed(seed)

        def graph(level: str, *path: Any) -> GraphSpec:
            return generate_graph(
                params[f"{level}_generator"],
                params[f"{level}_nodes"],
                derive_seed(seed, level, *path),
                k=params[f"{level}_k"],
                p=params[f"{level}_p"],
                m=params[f"{level}_m"],
            )

        top = graph("top")
        stages = assign_stages(top.nodes, [params[f"stage_ratio_{i + 1}"] for i in range(NUM_STAGES)])
        stage_of = {cell: s for s, cells in enumerate(stages) for cell in cells}
        top = GraphSpec(top.nodes, tuple(e for e in top.edges if stage_of[e[0]] == stage_of[e[1]]))
        cells = []
        for cell in range(top.nodes):
            mid = graph("mid", cell)
            cells.append({"mid": mid.to_dict(), "bottoms": [graph("bottom", cell, node).to_dict() for node in range(mid.nodes)]})
        resolved = {"op": params["op"], "top": top.to_dict(), "stages": stages, "cells": cells}
        base_width = params["base_width"]
        if params["param_budget"]:
            base_width = _width_for_budget(resolved, params["channel_ratios"], params["param_budget"])
        resolved.update(_widths(base_width, params["channel_ratios"]))
        return ArchSpec(self.name, params, seed, resolved)

    def validate_resolved(self, spec: ArchSpec) -> None:
        validate_nago_resolved(spec.resolved)

    def build(self, spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int):
        from compressor.spaces.nago_net import build_nago

        return build_nago(spec.resolved, check_input_shape(input_shape), num_classes)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def _widths(base_width: int, channel_ratios: str) -> dict:
    ratios = [float(r) for r in channel_ratios.split("-")]
    widths = [max(4, int(round(base_width * r))) for r in ratios]
    return {"stem_width": widths[0], "widths": widths, "head_width": 2 * widths[-1]}


def _width_for_budget(resolved: dict, channel_ratios: str, budget: int) -> int:
    """Largest base width whose body has at most `budget` parameters (bisection; params grow with width)."""
    from compressor.spaces.nago_net import count_body_params

    def body(width: int) -> int:
        return count_body_params({**resolved, **_widths(width, channel_ratios)})

    low, high = 4, 1024
    if body(low) > budget:
        raise UserError(f"nago: param_budget={budget} is below the smallest network of these graphs ({body(low)} parameters)")
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if body(mid) <= budget else (low, mid - 1)
    return low


def validate_nago_resolved(resolved: dict) -> None:
    """Raise UserError naming the first field of `resolved` that cannot be built."""
    where = "ArchSpec resolved"
    for key in ("op", "stem_width", "widths", "head_width", "top", "stages", "cells"):
        if key not in resolved:
            raise UserError(f"{where} is missing {key!r}")
    if resolved["op"] not in NODE_OPS:
        raise UserError(f"{where}.op {resolved['op']!r} is not an operation; valid: {', '.join(NODE_OPS)}")
    widths = resolved["widths"]
    if not isinstance(widths, list) or len(widths) != NUM_STAGES:
        raise UserError(f"{where}.widths must list {NUM_STAGES} stage widths")
    for name, value in [("stem_width", resolved["stem_width"]), ("head_width", resolved["head_width"])] + [
        (f"widths[{i}]", w) for i, w in enumerate(widths)
    ]:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
            raise UserError(f"{where}.{name} must be an integer in 1..4096, got {value!r}")
    top = GraphSpec.from_dict(resolved["top"], f"{where}.top")
    stages = resolved["stages"]
    if not isinstance(stages, list) or len(stages) != NUM_STAGES or not all(isinstance(s, list) and s for s in stages):
        raise UserError(f"{where}.stages must be {NUM_STAGES} non-empty lists of cell ids")
    if [c for s in stages for c in s] != list(range(top.nodes)):
        raise UserError(f"{where}.stages must split cells 0..{top.nodes - 1} in order")
    stage_of = {cell: s for s, cells in enumerate(stages) for cell in cells}
    for u, v in top.edges:
        if stage_of[u] != stage_of[v]:
            raise UserError(f"{where}.top edge [{u}, {v}] crosses stages; only edges inside a stage are wired")
    cells = resolved["cells"]
    if not isinstance(cells, list) or len(cells) != top.nodes:
        raise UserError(f"{where}.cells must hold one entry per top node ({top.nodes})")
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or "mid" not in cell or "bottoms" not in cell:
            raise UserError(f"{where}.cells[{i}] must be an object with 'mid' and 'bottoms'")
        mid = GraphSpec.from_dict(cell["mid"], f"{where}.cells[{i}].mid")
        if not isinstance(cell["bottoms"], list) or len(cell["bottoms"]) != mid.nodes:
            raise UserError(f"{where}.cells[{i}].bottoms must hold one graph per mid node ({mid.nodes})")
        for j, bottom in enumerate(cell["bottoms"]):
            GraphSpec.from_dict(bottom, f"{where}.cells[{i}].bottoms[{j}]")
