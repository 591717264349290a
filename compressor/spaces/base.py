"""What every student space shares: knob declarations, the `ArchSpec`, the `Space` base.

A space is a *family generator*: its params (what hyperopt proposes) fix a
distribution over networks; `sample(params, seed)` draws one member and
resolves everything random into an `ArchSpec` (plain JSON); `build(spec,
input_shape, num_classes)` turns that JSON into a `torch.nn.Module`
deterministically, so a saved spec rebuilds the same network bit for bit.

Each knob is declared once with its default and range (`IntKnob`,
`FloatKnob`, `ChoiceKnob`); the hyperopt space, the defaults, the smallest
settings and the validation of user params are all derived from those
declarations, never written twice. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from compressor.errors import UserError


@dataclass(frozen=True)
class IntKnob:
    """An integer in [low, high] (multiples of `step` above `low`)."""

    name: str
    default: int
    low: int
    high: int
    step: int = 1
    smallest: int | None = None  # the value giving the cheapest networks (default: low)
    searchable: bool = True
    help: str = ""
    size: bool = False  # a width knob: latency grows with it (what `Space.size_knobs` returns)
    depth: bool = False  # a depth or graph-size knob: latency grows with it (what `Space.depth_knobs` returns)

    def hyperopt(self, label: str):
        from hyperopt import hp
        from hyperopt.pyll import scope

        if self.step == 1:
            return hp.uniformint(label, self.low, self.high)
        # An integer index times the step keeps every allowed value (end points included) equally likely.
        count = (self.high - self.low) // self.step
        return scope.int(self.low + self.step * hp.uniformint(label, 0, count))

    def hyperopt_value(self, value: int) -> float:
        """What hyperopt records under the knob's label for `value` (`misc.vals`, a float): the step index when stepped."""
        return float(value if self.step == 1 else (value - self.low) // self.step)

    def values(self) -> list[int]:
        """Every allowed value, ascending."""
        return list(range(self.low, self.high + 1, self.step))

    def nearest(self, value: float) -> int:
        """The allowed value nearest to `value` (clipped to the range)."""
        index = round((min(max(value, self.low), self.high) - self.low) / self.step)
        return self.low + self.step * index

    def validate(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise UserError(f"{where}{self.name} must be an integer in [{self.low}, {self.high}], got {value!r}")
        value = int(value)
        if not self.low <= value <= self.high:
            raise UserError(f"{where}{self.name}={value} is out of range; valid: {self.low}..{self.high}")
        return value

    @property
    def cheapest(self) -> int:
        return self.low if self.smallest is None else self.smallest


@dataclass(frozen=True)
class FloatKnob:
    """A real number in [low, high] (log-uniform when `log`)."""

    name: str
    default: float
    low: float
    high: float
    log: bool = False
    smallest: float | None = None
    searchable: bool = True
    help: str = ""
    size: bool = False  # a width knob: latency grows with it (what `Space.size_knobs` returns)
    depth: bool = False  # a depth or graph-size knob: latency grows with it (what `Space.depth_knobs` returns)

    def hyperopt(self, label: str):
        from hyperopt import hp

        if self.log:
            return hp.loguniform(label, math.log(self.low), math.log(self.high))
        return hp.uniform(label, self.low, self.high)

    def hyperopt_value(self, value: float) -> float:
        """What hyperopt records under the knob's label for `value` (`misc.vals`, a float): the value itself."""
        return float(value)

    def values(self, count: int = 13) -> list[float]:
        """`count` values spread evenly over the range (geometrically when `log`), ascending."""
        low, high = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        points = [low + (high - low) * i / (count - 1) for i in range(count)]
        return [min(max(math.exp(p) if self.log else p, self.low), self.high) for p in points]

    def nearest(self, value: float) -> float:
        return float(min(max(value, self.low), self.high))

    def validate(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{where}{self.name} must be a number in [{self.low:g}, {self.high:g}], got {value!r}")
        if not self.low <= float(value) <= self.high:
            raise UserError(f"{where}{self.name}={value:g} is out of range; valid: {self.low:g}..{self.high:g}")
        return float(value)

    @property
    def cheapest(self) -> float:
        return self.low if self.smallest is None else self.smallest


@dataclass(frozen=True)
class ChoiceKnob:
    """One of a fixed list of JSON scalars (strings or numbers).

    `retired` values are still valid (a spec, checkpoint or ref may name them) but no longer
    searched: hyperopt and the trust region see `choices` only.
    """

    name: str
    default: Any
    choices: tuple
    smallest: Any = None
    searchable: bool = True
    help: str = ""
    retired: tuple = ()

    def __post_init__(self) -> None:
        if self.default not in self.choices:
            raise ValueError(f"knob {self.name}: default {self.default!r} not among {self.choices}")

    def hyperopt(self, label: str):
        from hyperopt import hp

        return hp.choice(label, list(self.choices))

    def hyperopt_value(self, value: Any) -> int:
        """What hyperopt's trial `vals` hold for `value`: its index among the choices."""
        return self.choices.index(value)

    def validate(self, value: Any, where: str) -> Any:
        for choice in self.choices + self.retired:
            # 1 == 1.0 == True in Python; compare types too so JSON round trips stay exact.
            if value == choice and type(value) is type(choice) or (
                isinstance(choice, float) and isinstance(value, int) and not isinstance(value, bool) and value == choice
            ):
                return choice
        valid = ", ".join(str(c) for c in self.choices + self.retired)
        raise UserError(f"{where}{self.name}={value!r} is not a valid choice; valid: {valid}")

    @property
    def cheapest(self) -> Any:
        return self.default if self.smallest is None else self.smallest


Knob = IntKnob | FloatKnob | ChoiceKnob


def knob_defaults(knobs: Sequence[Knob]) -> dict[str, Any]:
    return {k.name: k.default for k in knobs}


def knob_cheapest(knobs: Sequence[Knob]) -> dict[str, Any]:
    return {k.name: k.cheapest for k in knobs}


def knob_hyperopt(knobs: Sequence[Knob], prefix: str) -> dict[str, Any]:
    """{name: hp expression} for the searchable knobs; labels are `prefix.name` (unique)."""
    return {k.name: k.hyperopt(f"{prefix}.{k.name}") for k in knobs if k.searchable}


def knob_hyperopt_point(knobs: Sequence[Knob], prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """{label: value as hyperopt's trial `vals` hold it} for the searchable knobs (labels as `knob_hyperopt`'s)."""
    return {f"{prefix}.{k.name}": k.hyperopt_value(values[k.name]) for k in knobs if k.searchable}


def flatten_choice(params: Any, key: str, where: str) -> dict[str, Any]:
    """A copy of `params` with hyperopt's nested choice `{key: {...option}}` (what `space_eval` returns) flattened."""
    if not isinstance(params, dict):
        raise UserError(f"{where} params must be a dict, got {type(params).__name__}")
    params = dict(params)
    if isinstance(params.get(key), dict):
        params = {**params.pop(key), **params}
    return params


def validate_knobs(knobs: Sequence[Knob], params: dict[str, Any], where: str) -> dict[str, Any]:
    """Normalised copy of `params` (missing knobs take their default); unknown keys are errors."""
    by_name = {k.name: k for k in knobs}
    unknown = sorted(set(params) - set(by_name))
    if unknown:
        raise UserError(f"{where}unknown parameter {unknown[0]!r}; valid: {', '.join(by_name)}")
    return {name: knob.validate(params[name], where) if name in params else knob.default for name, knob in by_name.items()}


def derive_seed(family_seed: int, *path: Any) -> int:
    """A per-graph seed from the family seed and the graph's position (stable across runs).

    Every sub-graph gets its own seed so that cells differ: NAGO's public code
    reused one seed for every graph, which made all cells identical.
    """
    text = json.dumps([int(family_seed), *[str(p) for p in path]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class ArchSpec:
    """One sampled student, as plain JSON: rebuilding it gives the same network.

    Attributes:
        space: the registered space name ("nago", "zoo").
        params: the family's (validated, normalised) parameters.
        seed: the family seed this member was drawn with.
        resolved: everything random resolved (graphs, blocks, widths): what `build` reads.
    """

    space: str
    params: dict
    seed: int
    resolved: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": SPEC_FORMAT, "space": self.space, "params": self.params, "seed": self.seed, "resolved": self.resolved}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "ArchSpec":
        """Validate a decoded spec (a user may have edited it) and return it.

        Raises:
            UserError: naming the first invalid field.
        """
        from compressor.spaces import get_space

        if not isinstance(data, dict):
            raise UserError("ArchSpec must be a JSON object with space, params, seed and resolved")
        if data.get("format", SPEC_FORMAT) != SPEC_FORMAT:
            raise UserError(f"ArchSpec format {data.get('format')!r} is not supported; expected {SPEC_FORMAT!r}")
        missing = [key for key in ("space", "params", "seed", "resolved") if key not in data]
        if missing:
            raise UserError(f"ArchSpec is missing {missing[0]!r}")
        extra = sorted(set(data) - {"format", "space", "params", "seed", "resolved"})
        if extra:
            raise UserError(f"ArchSpec has an unknown key {extra[0]!r}")
        if not isinstance(data["seed"], int) or isinstance(data["seed"], bool) or data["seed"] < 0:
            raise UserError(f"ArchSpec seed must be a non-negative integer, got {data['seed']!r}")
        if not isinstance(data["params"], dict) or not isinstance(data["resolved"], dict):
            raise UserError("ArchSpec params and resolved must be JSON objects")
        space = get_space(str(data["space"]))
        spec = cls(space=space.name, params=space.validate_params(data["params"]), seed=data["seed"], resolved=data["resolved"])
        space.validate_resolved(spec)
        return spec

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"ArchSpec is not valid JSON: {exc}") from None
        return cls.from_dict(data)


SPEC_FORMAT = "compressor-archspec/1"


class Space:
    """A family of student networks. Subclasses declare knobs and implement every method below that raises NotImplementedError."""

    name: str = ""
    # A space without architecture families declares its knobs here (the zoo declares them per family).
    knobs: tuple = ()

    def search_groups(self) -> dict[str, tuple[Knob, ...]]:
        """The searchable knobs by architecture family: what `--strategy trade` gives one trust region each.

        A space without families is one group, named after the space.
        """
        return {self.name: tuple(k for k in self.knobs if k.searchable)}

    def group_params(self, group: str, values: dict[str, Any]) -> dict[str, Any]:
        """The params of the point `values` (knob -> value) of group `group` (a key of `search_groups`)."""
        return dict(values)

    def group_of(self, params: dict[str, Any]) -> str:
        """The group (a key of `search_groups`) that `params` belong to."""
        return self.name

    def size_knobs(self, params: dict[str, Any]) -> tuple[Knob, ...]:
        """The knobs declared `size=True` in `params`' group: what fit-to-budget scales together."""
        return tuple(k for k in self.search_groups()[self.group_of(params)] if getattr(k, "size", False))

    def depth_knobs(self, params: dict[str, Any]) -> tuple[Knob, ...]:
        """The knobs declared `depth=True` in `params`' group: what fit-to-budget shrinks when width cannot fit."""
        return tuple(k for k in self.search_groups()[self.group_of(params)] if getattr(k, "depth", False))

    def hyperopt_space(self) -> dict:
        raise NotImplementedError

    def hyperopt_point(self, params: dict) -> dict[str, Any]:
        """The labels of `hyperopt_space` that `params` sets, valued as hyperopt's trial `vals` hold them.

        The inverse of `hyperopt.space_eval`: what a search tells hyperopt to evaluate a given point
        first (fmin's points_to_evaluate). This default suits a space without families whose
        hyperopt space is `knob_hyperopt(self.knobs, self.name)`.
        """
        return knob_hyperopt_point(self.knobs, self.name, self.validate_params(params))

    def default_params(self) -> dict:
        raise NotImplementedError

    def smallest_params(self) -> dict:
        raise NotImplementedError

    def validate_params(self, params: dict) -> dict:
        raise NotImplementedError

    def sample(self, params: dict, seed: int) -> ArchSpec:
        raise NotImplementedError

    def knob_names(self, params: dict) -> list[str]:
        """Names of the knobs `params` may set (for the zoo: those of params' family)."""
        raise NotImplementedError

    def validate_resolved(self, spec: ArchSpec) -> None:
        """Raise UserError when `spec.resolved` cannot be built (a hand-edited file)."""
        raise NotImplementedError

    def build(self, spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int):
        raise NotImplementedError

    def describe(self) -> list[tuple[str, str, str, str]]:
        """(knob, default, range, help) rows for `compressor space show`."""
        raise NotImplementedError


def knob_rows(knobs: Sequence[Knob], prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows = []
    for k in knobs:
        if isinstance(k, ChoiceKnob):
            rng = " | ".join(str(c) for c in k.choices)
            if k.retired:
                rng += f" (also valid, not searched: {' | '.join(str(c) for c in k.retired)})"
        elif isinstance(k, IntKnob):
            rng = f"{k.low}..{k.high}" + (f" step {k.step}" if k.step != 1 else "")
        else:
            rng = f"{k.low:g}..{k.high:g}" + (" (log)" if k.log else "")
        if not k.searchable:
            rng += " (not searched)"
        rows.append((prefix + k.name, str(k.default), rng, k.help))
    return rows


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of positive ints, or a UserError saying how to write it."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or any(d <= 0 for d in shape):
        raise UserError(f"input shape must be (channels, height, width), got {tuple(input_shape)}")
    if min(shape[1:]) < 8:
        raise UserError(f"input images must be at least 8x8 pixels, got {shape[1]}x{shape[2]}")
    return shape
