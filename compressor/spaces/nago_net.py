"""Resolved NAGO graphs -> a torch network (RandWire rules at every level).

One `GraphBlock` serves all three levels: its nodes run in index order (a
topological order, edges go low -> high); a source node takes the block's
input; any other node takes the weighted sum of its predecessors, one
learnable scalar per edge through a sigmoid; the sinks are averaged into the
block's output. A bottom node is `ReLU -> op -> BatchNorm`; a mid node is a
bottom graph; a cell is a mid graph; a stage is the top graph's cells of that
stage. Source nodes of a block inherit the block's stride and input width,
so a stage's entry cells (and their entry nodes, down to the ops) downsample
and widen; every other node keeps its width, so inputs of a sum always agree.

Stem: inputs up to 64 px keep their resolution (conv3x3-BN-ReLU, stride 1);
larger ones go through two stride-2 conv3x3-BN-ReLU (1/4 resolution). Every
stage entry then halves the resolution. Head: 1x1 conv -> BN -> ReLU ->
global average pool -> linear.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from compressor.spaces.graphs import GraphSpec

SMALL_IMAGE_MAX_PX = 64


def op_layers(op: str, in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    """The conv/pool part of a bottom node (BatchNorm follows)."""
    if op in ("sep3x3", "sep5x5"):
        k = 3 if op == "sep3x3" else 5
        return [
            nn.Conv2d(in_ch, in_ch, k, stride, k // 2, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
        ]
    if op == "conv1x1":
        return [nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)]
    if op == "conv3x3":
        return [nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)]
    if op == "avgpool3x3":
        layers: list[nn.Module] = [nn.AvgPool2d(3, stride, 1, count_include_pad=False)]
        if in_ch != out_ch:
            layers.append(nn.Conv2d(in_ch, out_ch, 1, bias=False))  # pooling cannot widen: 1x1 projection
        return layers
    raise ValueError(f"unknown op {op!r}")


class OpNode(nn.Sequential):
    """Bottom-level node: ReLU -> op -> BatchNorm."""

    def __init__(self, op: str, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__(nn.ReLU(), *op_layers(op, in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class GraphBlock(nn.Module):
    """A DAG of child modules; see the module docstring for the wiring rules."""

    def __init__(
        self, graph: GraphSpec, in_ch: int, out_ch: int, stride: int, make_node: Callable[[int, int, int, int], nn.Module]
    ) -> None:
        """`make_node(index, in_ch, out_ch, stride)` builds node `index`."""
        super().__init__()
        self.predecessors = [graph.predecessors(n) for n in range(graph.nodes)]
        self.sinks = graph.sinks()
        self.nodes = nn.ModuleList(
            make_node(n, in_ch, out_ch, stride) if not preds else make_node(n, out_ch, out_ch, 1)
            for n, preds in enumerate(self.predecessors)
        )
        self.edge_logits = nn.ParameterDict(
            {str(n): nn.Parameter(torch.zeros(len(preds))) for n, preds in enumerate(self.predecessors) if preds}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for n, node in enumerate(self.nodes):
            preds = self.predecessors[n]
            if preds:
                weights = torch.sigmoid(self.edge_logits[str(n)])
                h = weights[0] * outputs[preds[0]]
                for i in range(1, len(preds)):
                    h = h + weights[i] * outputs[preds[i]]
            else:
                h = x
            outputs.append(node(h))
        out = outputs[self.sinks[0]]
        for sink in self.sinks[1:]:
            out = out + outputs[sink]
        return out / len(self.sinks) if len(self.sinks) > 1 else out


def conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())


class NagoNet(nn.Module):
    """stem -> 3 stages of cells -> head."""

    def __init__(self, resolved: dict, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        stem_width = resolved["stem_width"]
        if max(height, width) <= SMALL_IMAGE_MAX_PX:
            self.stem = conv_bn_relu(channels, stem_width, 1)
        else:
            self.stem = nn.Sequential(conv_bn_relu(channels, max(8, stem_width // 2), 2), conv_bn_relu(max(8, stem_width // 2), stem_width, 2))
        op = resolved["op"]
        top = GraphSpec.from_dict(resolved["top"], "top")
        cells = resolved["cells"]

        def make_bottom_node(_: int, cin: int, cout: int, stride: int) -> nn.Module:
            return OpNode(op, cin, cout, stride)

        def make_cell(cell: int) -> Callable[[int, int, int, int], nn.Module]:
            bottoms = [GraphSpec.from_dict(b, "bottom") for b in cells[cell]["bottoms"]]

            def make_mid_node(node: int, cin: int, cout: int, stride: int) -> nn.Module:
                return GraphBlock(bottoms[node], cin, cout, stride, make_bottom_node)

            return make_mid_node

        stages = []
        in_ch = stem_width
        for stage_cells, out_ch in zip(resolved["stages"], resolved["widths"]):
            first = stage_cells[0]
            sub = GraphSpec(len(stage_cells), tuple((u - first, v - first) for u, v in top.edges if u in stage_cells))

            def make_stage_node(node: int, cin: int, cout: int, stride: int, first: int = first) -> nn.Module:
                mid = GraphSpec.from_dict(cells[first + node]["mid"], "mid")
                return GraphBlock(mid, cin, cout, stride, make_cell(first + node))

            stages.append(GraphBlock(sub, in_ch, out_ch, 2, make_stage_node))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        head_width = resolved["head_width"]
        self.head = nn.Sequential(
            nn.Conv2d(in_ch, head_width, 1, bias=False),
            nn.BatchNorm2d(head_width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(head_width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.stages(self.stem(x))))


def build_nago(resolved: dict, input_shape: tuple[int, int, int], num_classes: int) -> NagoNet:
    """Build the network of a validated `resolved` dict (see `nago.validate_nago_resolved`).

    Args:
        resolved: ArchSpec.resolved of a nago spec.
        input_shape: (C, H, W).
        num_classes: outputs of the classifier.

    Returns:
        The network, with PyTorch's default initialisation under the caller's RNG state.
    """
    return NagoNet(resolved, input_shape, num_classes)


def count_body_params(resolved: dict) -> int:
    """Parameters of everything but the classifier (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        net = NagoNet(resolved, (3, 32, 32), 1)
    return sum(p.numel() for name, p in net.named_parameters() if not name.startswith("classifier."))
