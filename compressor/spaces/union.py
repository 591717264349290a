"""The `all` space: the union of other spaces (registered as nago + zoo), one choice between their families.

A point of the union is one *group* of a member space (`Space.search_groups`:
nago's one group, each zoo family) with that group's knobs nested under it:
hyperopt sees one `hp.choice` labelled `all.member` over the groups (nago,
plain, mobilenet_v2, ...), each option carrying its own knobs (labels
`all.GROUP.KNOB`), so TPE learns which family pays off as it learns each
family's knobs. `--strategy trade` gives each group its own trust region,
the same groups.

Params are the chosen member's params plus the member's name:
`{"space": "nago", ...nago knobs}` or `{"space": "zoo", "family": "resnet",
...}`; `validate_params` also accepts hyperopt's nested form (`{"member":
{...}}`, what `space_eval` returns). `sample`, `build` and `validate_resolved`
delegate to the member: a member of the union *is* a member of its space, and
its `ArchSpec` records that space (`spec.space` is "nago" or "zoo", never
"all"), so `build_model(spec)`, a checkpoint and an export rebuild it without
knowing it came from the union. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any, Sequence

from compressor.errors import UserError
from compressor.spaces.base import ArchSpec, Space, flatten_choice, knob_hyperopt, knob_hyperopt_point


class UnionSpace(Space):
    """The union of nago and the zoo (the default student space): nago or a zoo family, their knobs nested."""

    name = "all"

    def __init__(self, members: Sequence[Space]) -> None:
        self.members = {m.name: m for m in members}
        self.default_member = members[0].name
        # group -> (member space, the group's searchable knobs), in the members' declaration order.
        self._groups: dict[str, tuple[Space, tuple]] = {}
        for member in members:
            for group, knobs in member.search_groups().items():
                if group in self._groups:
                    raise ValueError(f"union space: group {group!r} is declared by two member spaces")
                self._groups[group] = (member, tuple(knobs))

    def member(self, name: object) -> Space:
        if name not in self.members:
            raise UserError(f"unknown member space {name!r} of {self.name!r}; valid: {', '.join(self.members)}")
        return self.members[name]

    def search_groups(self) -> dict[str, tuple]:
        return {group: knobs for group, (_, knobs) in self._groups.items()}

    def group_params(self, group: str, values: dict) -> dict:
        member, _ = self._groups[group]
        return {"space": member.name, **member.group_params(group, values)}

    def group_of(self, params: dict) -> str:
        """The group a (validated) point belongs to: the one whose fixed params (a zoo family's name) it has."""
        member = self.member(params["space"])
        return next(group for group, (m, _) in self._groups.items()
                    if m is member and all(params.get(k) == v for k, v in member.group_params(group, {}).items()))

    def hyperopt_space(self) -> dict:
        from hyperopt import hp

        options = [{**self.group_params(group, {}), **knob_hyperopt(knobs, f"{self.name}.{group}")}
                   for group, (_, knobs) in self._groups.items()]
        return {"member": hp.choice(f"{self.name}.member", options)}

    def hyperopt_point(self, params: dict) -> dict[str, Any]:
        params = self.validate_params(params)
        group = self.group_of(params)
        return {f"{self.name}.member": list(self._groups).index(group),
                **knob_hyperopt_point(self._groups[group][1], f"{self.name}.{group}", params)}

    def default_params(self) -> dict:
        return {"space": self.default_member, **self.member(self.default_member).default_params()}

    def smallest_params(self) -> dict:
        # nago's smallest (avgpool cells, 8 channels: 0.22 MMACs at 3x32x32) is cheaper than the zoo's
        # (plain at its narrowest: 0.41 MMACs), so the default member's stands for the union.
        return {"space": self.default_member, **self.member(self.default_member).smallest_params()}

    def validate_params(self, params: dict) -> dict:
        params = flatten_choice(params, "member", self.name)
        member = self.member(params.pop("space", self.default_member))
        return {"space": member.name, **member.validate_params(params)}

    def knob_names(self, params: dict) -> list[str]:
        return ["space", *self.member(params.get("space", self.default_member)).knob_names(params)]

    def describe(self) -> list[tuple[str, str, str, str]]:
        rows = [("space", self.default_member, " | ".join(self.members), "member space (its params follow it)")]
        for name, member in self.members.items():
            rows += [(f"{name}.{knob}", default, rng, text) for knob, default, rng, text in member.describe()]
        return rows

    def sample(self, params: dict, seed: int) -> ArchSpec:
        """The member space's sample: its ArchSpec records that space, so `build_model` rebuilds it directly."""
        params = self.validate_params(params)
        return self.member(params.pop("space")).sample(params, seed)

    def validate_resolved(self, spec: ArchSpec) -> None:
        self._owner(spec).validate_resolved(spec)

    def build(self, spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int):
        return self._owner(spec).build(spec, input_shape, num_classes)

    def _owner(self, spec: ArchSpec) -> Space:
        if spec.space == self.name:
            raise UserError(f"an ArchSpec names its member space ({', '.join(self.members)}), not {self.name!r}; "
                            "re-sample it")
        return self.member(spec.space)

