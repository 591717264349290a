"""Random graphs for the NAGO space: the three classic generators, made safe.

`generate_graph` draws an undirected graph with networkx and returns it as a
DAG (`GraphSpec`): nodes 0..n-1, every edge directed from the lower to the
higher index (RandWire's rule), so node order is a topological order.

It handles the public NAGO code's pitfalls:
- Watts-Strogatz K is clamped to nodes-1 (networkx rejects K > nodes), and
  kept >= 2 (K // 2 neighbours per side: K = 1 would give no edges at all);
- Barabási-Albert M is clamped to nodes-1 (networkx needs 1 <= M < nodes);
- an unconnected draw (WS rewiring, sparse ER) is retried with fresh seeds
  derived from the graph's seed; if every retry fails (ER with tiny P) the
  components are chained by one edge each, so the result is always connected
  and never empty;
- 1- and 2-node graphs, where the generators degenerate, are a single node
  and a single edge.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from compressor.errors import UserError

GENERATORS = ("ws", "er", "ba")
MAX_TRIES = 20


@dataclass(frozen=True)
class GraphSpec:
    """A DAG on nodes 0..nodes-1 with edges (u, v), u < v, sorted."""

    nodes: int
    edges: tuple[tuple[int, int], ...]

    def to_dict(self) -> dict:
        return {"nodes": self.nodes, "edges": [list(e) for e in self.edges]}

    @classmethod
    def from_dict(cls, data, where: str) -> "GraphSpec":
        """Check a (possibly hand-edited) graph; raise UserError naming the problem."""
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), int) or not isinstance(data.get("edges"), list):
            raise UserError(f"{where} must be an object with an integer 'nodes' and a list 'edges'")
        nodes = data["nodes"]
        if nodes < 1:
            raise UserError(f"{where} has {nodes} nodes; a graph needs at least 1")
        edges = []
        for edge in data["edges"]:
            if (
                not isinstance(edge, list)
                or len(edge) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in edge)
                or not 0 <= edge[0] < edge[1] < nodes
            ):
                raise UserError(f"{where} edge {edge!r} is invalid; edges are [u, v] with 0 <= u < v < {nodes}")
            edges.append((edge[0], edge[1]))
        if len(set(edges)) != len(edges):
            raise UserError(f"{where} lists an edge twice")
        return cls(nodes, tuple(sorted(edges)))

    def predecessors(self, node: int) -> list[int]:
        return [u for u, v in self.edges if v == node]

    def sources(self) -> list[int]:
        targets = {v for _, v in self.edges}
        return [n for n in range(self.nodes) if n not in targets]

    def sinks(self) -> list[int]:
        origins = {u for u, _ in self.edges}
        return [n for n in range(self.nodes) if n not in origins]


def clamp_ws_k(nodes: int, k: int) -> int:
    """WS neighbour count valid for `nodes` (>= 3): at most nodes-1, at least 2."""
    return max(2, min(k, nodes - 1))


def generate_graph(generator: str, nodes: int, seed: int, *, k: int = 4, p: float = 0.5, m: int = 2) -> GraphSpec:
    """Draw a connected random graph and direct it by node index.

    Args:
        generator: "ws" (Watts-Strogatz: k, p), "er" (Erdős-Rényi: p) or "ba" (Barabási-Albert: m).
        nodes: number of nodes (>= 1).
        seed: the graph's own seed (see `base.derive_seed`).
        k, p, m: the generator's parameters; k and m are clamped to what `nodes` allows.

    Returns:
        A connected `GraphSpec`.
    """
    if generator not in GENERATORS:
        raise UserError(f"unknown graph generator {generator!r}; valid: {', '.join(GENERATORS)}")
    if nodes < 1:
        raise UserError(f"a graph needs at least 1 node, got {nodes}")
    if nodes == 1:
        return GraphSpec(1, ())
    if nodes == 2:
        return GraphSpec(2, ((0, 1),))
    graph = None
    for attempt in range(MAX_TRIES):
        attempt_seed = (seed + 7919 * attempt) % (2**32)
        if generator == "ws":
            graph = nx.watts_strogatz_graph(nodes, clamp_ws_k(nodes, k), p, seed=attempt_seed)
        elif generator == "er":
            graph = nx.gnp_random_graph(nodes, p, seed=attempt_seed)
        else:
            graph = nx.barabasi_albert_graph(nodes, max(1, min(m, nodes - 1)), seed=attempt_seed)
        if nx.is_connected(graph):
            break
    else:
        graph = _chain_components(graph)
    edges = tuple(sorted((min(u, v), max(u, v)) for u, v in graph.edges()))
    return GraphSpec(nodes, edges)


def _chain_components(graph: nx.Graph) -> nx.Graph:
    """Connect components with one edge between consecutive ones (lowest nodes), in place."""
    components = sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: c[0])
    for left, right in zip(components, components[1:]):
        graph.add_edge(left[0], right[0])
    return graph


def assign_stages(num_nodes: int, ratios: list[float]) -> list[list[int]]:
    """Split nodes 0..num_nodes-1 into len(ratios) contiguous, non-empty stages.

    Ratios are normalised to sum to 1 first: NAGO's public code compared the
    raw cumulative ratios with node fractions, so ratios that did not sum to
    1 put every node in stage 0 and the network never downsampled.

    Args:
        num_nodes: cells in the top graph (>= len(ratios)).
        ratios: positive stage weights.

    Returns:
        One list of node indices per stage.
    """
    stages = len(ratios)
    if num_nodes < stages:
        raise UserError(f"{num_nodes} cells cannot fill {stages} stages")
    total = sum(ratios)
    if not total > 0 or any(r <= 0 for r in ratios):
        raise UserError(f"stage ratios must be positive, got {ratios}")
    exact = [r / total * num_nodes for r in ratios]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(stages), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: num_nodes - sum(counts)]:
        counts[i] += 1
    # Every stage keeps one cell (it is where the network downsamples): take it from the largest stage.
    for i in range(stages):
        if counts[i] == 0:
            counts[max(range(stages), key=lambda j: counts[j])] -= 1
            counts[i] = 1
    result, start = [], 0
    for count in counts:
        result.append(list(range(start, start + count)))
        start += count
    return result
