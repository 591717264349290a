"""Draw an ArchSpec so a person can see the architecture (networkx + matplotlib, Agg).

A nago spec becomes three panels side by side: the top graph (cells coloured
by stage), the mid graph of one cell (its nodes are bottom graphs) and the
bottom graph of that cell's first node (its nodes are operations). A zoo spec
becomes one panel: its stages as a chain, labelled with widths and depths.
Graphs are laid out left to right by longest path from a source, which is
how data flows through them.
"""

from __future__ import annotations

import os
from pathlib import Path

from compressor.spaces.base import ArchSpec

STAGE_COLOURS = ("#4c72b0", "#dd8452", "#55a868")


def _layered_positions(graph) -> dict[int, tuple[float, float]]:
    import networkx as nx

    depth = {}
    for node in nx.topological_sort(graph):
        depth[node] = max((depth[p] + 1 for p in graph.predecessors(node)), default=0)
    layers: dict[int, list[int]] = {}
    for node, d in depth.items():
        layers.setdefault(d, []).append(node)
    positions = {}
    for d, nodes in layers.items():
        for i, node in enumerate(sorted(nodes)):
            positions[node] = (float(d), (len(nodes) - 1) / 2 - i)
    return positions


def _digraph(graph: dict):
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(range(graph["nodes"]))
    g.add_edges_from(tuple(e) for e in graph["edges"])
    return g


def _draw(ax, graph: dict, title: str, colours, labels: dict[int, str], x_offset: dict[int, float] | None = None) -> None:
    import networkx as nx

    g = _digraph(graph)
    positions = _layered_positions(g)
    if x_offset:
        positions = {n: (x + x_offset[n], y) for n, (x, y) in positions.items()}
    nx.draw_networkx(
        g, positions, ax=ax, node_color=colours, labels=labels, node_size=900, font_size=8, font_color="white",
        arrows=True, arrowsize=12, edge_color="#555555",
    )
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def plot_spec(spec: ArchSpec, path: str | Path, cell: int = 0) -> None:
    """Write a PNG of `spec` to `path` (atomically: temporary name, then rename).

    Args:
        spec: a nago or zoo ArchSpec.
        path: the PNG file to write.
        cell: which nago cell's mid and bottom graphs to show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = spec.resolved
    if spec.space == "nago":
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        stage_of = {c: s for s, cells in enumerate(r["stages"]) for c in cells}
        top = r["top"]
        _draw(
            axes[0], top, f"top: {top['nodes']} cells in 3 stages (widths {'/'.join(map(str, r['widths']))})",
            [STAGE_COLOURS[stage_of[n]] for n in range(top["nodes"])], {n: f"c{n}" for n in range(top["nodes"])},
            # Stages left to right: each stage's entry cells downsample the previous stage's output.
            x_offset={n: 4.0 * stage_of[n] for n in range(top["nodes"])},
        )
        mid = r["cells"][cell]["mid"]
        _draw(
            axes[1], mid, f"mid: cell {cell}, {mid['nodes']} nodes (each a bottom graph)", "#8172b3",
            {n: f"b{n}\n({r['cells'][cell]['bottoms'][n]['nodes']})" for n in range(mid["nodes"])},
        )
        bottom = r["cells"][cell]["bottoms"][0]
        _draw(axes[2], bottom, f"bottom: cell {cell} node 0, {bottom['nodes']} ops", "#937860", {n: r["op"] for n in range(bottom["nodes"])})
        fig.suptitle(f"nago seed {spec.seed}: top {spec.params['top_generator']}, mid {spec.params['mid_generator']}, bottom {spec.params['bottom_generator']}")
    else:
        fig, ax = plt.subplots(1, 1, figsize=(12, 3))
        stages = _zoo_stages(r)
        chain = {"nodes": len(stages), "edges": [[i, i + 1] for i in range(len(stages) - 1)]}
        _draw(ax, chain, f"zoo {r['family']}", "#4c72b0", dict(enumerate(stages)))
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _zoo_stages(r: dict) -> list[str]:
    if "blocks" in r:
        return ["stem\n" + str(r["stem_width"])] + [f"b{i}\n{b[1] if len(b) == 4 else b[3]}" for i, b in enumerate(r["blocks"])] + [
            "last\n" + str(r["last_channel"])
        ]
    counts = r.get("depths") or r.get("convs")
    return [f"s{i + 1}\n{w}x{n}" for i, (w, n) in enumerate(zip(r["widths"], counts))]
