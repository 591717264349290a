"""The `zoo` space: TRADE-style families of hand-designed architectures with width/depth knobs.

A point of the space is a family (`mobilenet_v2`, `mobilenet_v3_small`,
`mobilenet_v3_large`, `resnet`, `shufflenet_v2`, `plain`) with that family's
knobs; hyperopt sees one `hp.choice` over families, each with its own nested
knobs (labels `zoo.FAMILY.KNOB`). `validate_params` accepts both that nested
form (what `hyperopt.space_eval` returns) and a flat `{"family": ..., knobs}`
and returns the flat one.

These families are deterministic: `sample` resolves the params into the
block table the builder reads (the torchvision configuration after width and
depth scaling, at torchvision's own strides), so every seed of a family gives
the same architecture; the seed only matters to the caller's weight init.
`zoo_net` builds the networks from torchvision's own blocks and adapts them
to small inputs there, where the input size is known.

`plain` is the baseline an expert would write: conv3x3-BN-ReLU stages with
2x2 max-pool between them, global average pool and a linear head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from compressor.errors import UserError
from compressor.spaces.base import (
    ArchSpec,
    FloatKnob,
    IntKnob,
    Space,
    check_input_shape,
    flatten_choice,
    knob_cheapest,
    knob_defaults,
    knob_hyperopt,
    knob_hyperopt_point,
    knob_rows,
    validate_knobs,
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding (nearest multiple of `divisor`, never below 90% of value)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


# torchvision's MobileNetV2 table: expand ratio, channels, repeats, stride.
MOBILENET_V2_TABLE = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


def _resolve_mobilenet_v2(p: dict) -> dict:
    width, depth = p["width_mult"], p["depth_mult"]
    blocks = [[t, make_divisible(c * width), max(1, round(n * depth)), s] for t, c, n, s in MOBILENET_V2_TABLE]
    # torchvision keeps the last 1x1 conv at 1280 channels below width 1.0; scaling it is what makes small members small.
    return {"stem_width": make_divisible(32 * width), "blocks": blocks, "last_channel": make_divisible(1280 * width)}


def _resolve_mobilenet_v3(arch: str) -> Callable[[dict], dict]:
    def resolve(p: dict) -> dict:
        from torchvision.models.mobilenetv3 import _mobilenet_v3_conf

        configs, last_channel = _mobilenet_v3_conf(arch, width_mult=p["width_mult"])
        blocks = [
            [c.input_channels, c.kernel, c.expanded_channels, c.out_channels, c.use_se, "HS" if c.use_hs else "RE", c.stride]
            for c in configs
        ]
        return {"stem_width": configs[0].input_channels, "blocks": blocks, "last_channel": last_channel}

    return resolve


def _resolve_resnet(p: dict) -> dict:
    return {"widths": [p["width"] * 2**i for i in range(4)], "depths": [p[f"depth_{i + 1}"] for i in range(4)]}


def _resolve_shufflenet_v2(p: dict) -> dict:
    return {
        "stem_width": 24,
        "widths": [p[f"width_{i + 1}"] for i in range(3)],
        "depths": [p[f"depth_{i + 1}"] for i in range(3)],
        "last_width": p["last_width"],
    }


def _resolve_plain(p: dict) -> dict:
    return {"widths": [p[f"width_{i + 1}"] for i in range(3)], "convs": [p[f"convs_{i + 1}"] for i in range(3)]}


@dataclass(frozen=True)
class Family:
    name: str
    knobs: tuple
    resolve: Callable[[dict], dict]
    help: str


def _mult(name: str, default: float, help: str, size: bool = False, depth: bool = False) -> FloatKnob:
    return FloatKnob(name, default, 0.25, 1.0, size=size, depth=depth, help=help)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "plain",
            (
                IntKnob("width_1", 16, 8, 64, step=8, size=True, help="channels of stage 1"),
                IntKnob("width_2", 32, 8, 128, step=8, size=True, help="channels of stage 2"),
                IntKnob("width_3", 64, 8, 256, step=8, size=True, help="channels of stage 3"),
                IntKnob("convs_1", 1, 1, 3, depth=True, help="conv3x3-BN-ReLU layers in stage 1"),
                IntKnob("convs_2", 1, 1, 3, depth=True, help="conv3x3-BN-ReLU layers in stage 2"),
                IntKnob("convs_3", 1, 1, 3, depth=True, help="conv3x3-BN-ReLU layers in stage 3"),
            ),
            _resolve_plain,
            "hand-designed baseline: conv3x3-BN-ReLU stages, 2x2 max-pool between, GAP + linear",
        ),
        Family(
            "mobilenet_v2",
            (_mult("width_mult", 0.5, "channel multiplier", size=True),
             _mult("depth_mult", 0.5, "multiplier of each stage's block count", depth=True)),
            _resolve_mobilenet_v2,
            "torchvision MobileNetV2 inverted residuals",
        ),
        Family(
            "mobilenet_v3_small",
            (_mult("width_mult", 0.5, "channel multiplier", size=True),),
            _resolve_mobilenet_v3("mobilenet_v3_small"),
            "torchvision MobileNetV3-small (SE, hard-swish)",
        ),
        Family(
            "mobilenet_v3_large",
            (_mult("width_mult", 0.5, "channel multiplier", size=True),),
            _resolve_mobilenet_v3("mobilenet_v3_large"),
            "torchvision MobileNetV3-large (SE, hard-swish)",
        ),
        Family(
            "resnet",
            (
                IntKnob("width", 16, 8, 64, step=8, size=True, help="channels of stage 1 (doubling per stage)"),
                *(IntKnob(f"depth_{i}", 1, 1, 3, depth=True, help=f"BasicBlocks in stage {i}") for i in range(1, 5)),
            ),
            _resolve_resnet,
            "torchvision ResNet BasicBlocks, 4 stages",
        ),
        Family(
            "shufflenet_v2",
            (
                IntKnob("width_1", 48, 16, 128, step=16, size=True, help="channels of stage 2 (torchvision's numbering)"),
                IntKnob("width_2", 96, 32, 256, step=16, size=True, help="channels of stage 3"),
                IntKnob("width_3", 192, 64, 512, step=16, size=True, help="channels of stage 4"),
                IntKnob("depth_1", 4, 1, 4, depth=True, help="units in stage 2"),
                IntKnob("depth_2", 8, 1, 8, depth=True, help="units in stage 3"),
                IntKnob("depth_3", 4, 1, 4, depth=True, help="units in stage 4"),
                IntKnob("last_width", 1024, 128, 1024, step=64, size=True, help="channels of the last 1x1 conv"),
            ),
            _resolve_shufflenet_v2,
            "torchvision ShuffleNetV2 units (defaults: shufflenet_v2_x0_5)",
        ),
    )
}
DEFAULT_FAMILY = "mobilenet_v2"
SMALLEST_FAMILY = "plain"


class ZooSpace(Space):
    """TRADE-style zoo of architecture families (a family choice with nested knobs)."""

    name = "zoo"

    def hyperopt_space(self) -> dict:
        from hyperopt import hp

        options = [{"family": f.name, **knob_hyperopt(f.knobs, f"{self.name}.{f.name}")} for f in FAMILIES.values()]
        return {"family": hp.choice(f"{self.name}.family", options)}

    def hyperopt_point(self, params: dict) -> dict:
        params = self.validate_params(params)
        family = params["family"]
        return {f"{self.name}.family": list(FAMILIES).index(family),
                **knob_hyperopt_point(FAMILIES[family].knobs, f"{self.name}.{family}", params)}

    def search_groups(self) -> dict[str, tuple]:
        return {f.name: tuple(k for k in f.knobs if k.searchable) for f in FAMILIES.values()}

    def group_params(self, group: str, values: dict) -> dict:
        return {"family": self.family(group).name, **values}

    def group_of(self, params: dict) -> str:
        return self.validate_params(params)["family"]

    def default_params(self) -> dict:
        return {"family": DEFAULT_FAMILY, **knob_defaults(FAMILIES[DEFAULT_FAMILY].knobs)}

    def smallest_params(self) -> dict:
        return {"family": SMALLEST_FAMILY, **knob_cheapest(FAMILIES[SMALLEST_FAMILY].knobs)}

    def validate_params(self, params: dict) -> dict:
        params = flatten_choice(params, "family", self.name)
        family = self.family(params.pop("family", DEFAULT_FAMILY))
        return {"family": family.name, **validate_knobs(family.knobs, params, f"zoo {family.name}: ")}

    def family(self, name: object) -> Family:
        if name not in FAMILIES:
            raise UserError(f"unknown zoo family {name!r}; valid: {', '.join(FAMILIES)}")
        return FAMILIES[name]

    def knob_names(self, params: dict) -> list[str]:
        return ["family", *(k.name for k in self.family(params.get("family", DEFAULT_FAMILY)).knobs)]

    def describe(self) -> list[tuple[str, str, str, str]]:
        rows = [("family", DEFAULT_FAMILY, " | ".join(FAMILIES), "architecture family")]
        for family in FAMILIES.values():
            rows += knob_rows(family.knobs, prefix=f"{family.name}.")
        return rows

    def sample(self, params: dict, seed: int) -> ArchSpec:
        """The member of a zoo family (deterministic: every seed gives the same architecture).

        Args:
            params: nested (hyperopt) or flat params.
            seed: recorded in the spec.

        Returns:
            The ArchSpec with the family's block table resolved.
        """
        params = self.validate_params(params)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {seed!r}")
        return ArchSpec(self.name, params, seed, _resolve(params))

    def validate_resolved(self, spec: ArchSpec) -> None:
        # The block table is a pure function of the params: anything else was edited by hand.
        if spec.resolved != _resolve(spec.params):
            raise UserError("ArchSpec resolved does not match its zoo params; edit params (not resolved) or re-sample")

    def build(self, spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int):
        from compressor.spaces.zoo_net import build_zoo

        return build_zoo(spec.params["family"], spec.resolved, check_input_shape(input_shape), num_classes)


def _resolve(params: dict) -> dict:
    import json

    # Through JSON so that a sampled spec equals its own round trip (tuples -> lists).
    return json.loads(json.dumps({"family": params["family"], **FAMILIES[params["family"]].resolve(params)}))
