"""Student spaces: families of small networks worth distilling into.

A `Space` (see `base.py`) turns knob values into a family: `sample(params,
seed)` draws one member as an `ArchSpec` (JSON), `build(spec, input_shape,
num_classes)` makes the `torch.nn.Module`. Three spaces are registered:

- `nago` (`nago.py` + `nago_net.py`): NAGO's three-level random-graph
  generator (networkx: Watts-Strogatz, Erdős-Rényi, Barabási-Albert);
- `zoo` (`zoo.py` + `zoo_net.py`): TRADE-style families from torchvision's
  blocks (MobileNetV2/V3, ResNet, ShuffleNetV2) adapted to small images, and
  the `plain` conv-BN-ReLU baseline;
- `all` (default, `union.py`): their union, one choice between nago and the
  zoo families with their knobs nested; its members' ArchSpecs name their own
  space (nago or zoo). It is the default (`SearchConfig.space`) because it
  holds the budget-filling plain CNNs the search starts from, and its
  searches were ahead of nago's on digits-cluttered (docs/design.md).

`spec_from_ref` reads the short forms users type (`zoo:resnet:depths=1-1-1-1,width=16`,
`nago`, or a spec file). Sampling a nago member needs no torch (unless `param_budget` is set); building does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compressor.errors import UserError
from compressor.registry import Registry
from compressor.spaces.base import ArchSpec, Space, check_input_shape
from compressor.spaces.nago import NagoSpace
from compressor.spaces.union import UnionSpace
from compressor.spaces.zoo import ZooSpace

SPACES: Registry[Space] = Registry("space")
SPACES.add("nago", NagoSpace())
SPACES.add("zoo", ZooSpace())
SPACES.add("all", UnionSpace((SPACES.get("nago"), SPACES.get("zoo"))))

__all__ = ["SPACES", "ArchSpec", "Space", "build_model", "expand_param", "get_space", "load_spec", "spec_from_ref"]


def get_space(name: str) -> Space:
    """The registered space `name`; UserError listing the valid names on a miss."""
    return SPACES.get(name)


def build_model(spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int):
    """Build the network of `spec` for images of `input_shape` (C, H, W).

    Args:
        spec: a sampled or loaded ArchSpec.
        input_shape: (channels, height, width).
        num_classes: classifier outputs (>= 1).

    Returns:
        A torch.nn.Module in training mode.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    return get_space(spec.space).build(spec, check_input_shape(input_shape), num_classes)


def load_spec(path: str | Path) -> ArchSpec:
    """Read and validate an ArchSpec JSON file; UserError when missing or invalid."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"ArchSpec file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read ArchSpec file {str(path)!r}: {exc}") from None
    try:
        return ArchSpec.from_json(text)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def spec_from_ref(ref: str, seed: int = 0) -> ArchSpec:
    """Resolve a student reference a user typed.

    Args:
        ref: "SPACE" (defaults), "nago:key=value,...", "zoo[:FAMILY[:key=value,...]]",
            or a path to an ArchSpec JSON file. A list value is written with dashes and sets
            the numbered knobs: `depths=1-1-1-1` means depth_1..depth_4.
        seed: family seed for sampling (ignored for a spec file).

    Returns:
        The ArchSpec.
    """
    text = ref.strip()
    if text.endswith(".json") or Path(text).is_file():
        return load_spec(text)
    name, _, rest = text.partition(":")
    space = get_space(name)
    params: dict[str, Any] = {}
    if name == "zoo":
        family, _, rest = rest.partition(":")
        if family:
            params["family"] = family
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"student reference {ref!r}: expected key=value, got {item!r}")
        params.update(expand_param(key.strip(), value.strip(), space, params))
    return space.sample(params, seed)


def expand_param(key: str, value: str, space: Space, params: dict) -> dict[str, Any]:
    """One `key=value` a user typed -> knob values (a dashed list fills numbered knobs: depths=1-2 -> depth_1, depth_2).

    Args:
        key, value: the text either side of `=`; values are read as JSON, else as strings.
        space: the space the knobs belong to.
        params: the params so far (they pick the zoo family whose knobs apply).

    Returns:
        The knob values to merge into params.
    """
    known = space.knob_names(params)
    if key in known:
        return {key: _scalar(value)}
    stem = next((s for s in (key, key[:-1]) if f"{s}_1" in known), None)
    if stem is not None:
        values = value.split("-")
        numbered = sorted((n for n in known if n.startswith(f"{stem}_")), key=lambda n: int(n.rsplit("_", 1)[1]))
        if len(values) != len(numbered):
            raise UserError(f"{key} needs {len(numbered)} values separated by '-', got {value!r}")
        return {n: _scalar(v) for n, v in zip(numbered, values)}
    raise UserError(f"unknown parameter {key!r}; valid: {', '.join(sorted(known))}")


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
