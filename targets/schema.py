"""Keys declared once, on dataclass fields; one generic parser over them.

Every key a target file may hold is a dataclass field declared with
`setting()`: its default, what it means (`doc`) and its constraints (`choices`,
a lower bound `ge` or `gt`, `non_empty`, `prefixes`). The value's type is the
field's annotation, so it is not written twice: `str`, `int`, `float`,
`tuple[X, ...]` (a TOML array of X), `Mapping[str, Mapping[...]]` (a table of
tables), another declared dataclass (a nested table), each optionally
`| None` (the key may be left unset). A field without a default is required.
For a list, `choices` and bounds apply to each element.

Everything else is derived from those declarations:

* `parse(cls, table)` validates a parsed TOML or JSON table and builds the
  dataclass: unknown keys, types, choices, bounds, then required keys. Keys
  are checked in the table's order and parsing stops at the first bad one
  with a one-line `TargetError` that names it and says what it must be
  (`expected`). A bool is never a number (TOML `true` for a budget is a typo,
  not 1); an integer is accepted where a float is declared and stored as one.
* `declarations(cls)` lists the keys, in field order, for the valid-keys list
  of messages, TOML rendering (`targets.io`) and the tests' sweep over every
  key.
* `plain(obj)` is an instance as JSON- and TOML-ready lists and dicts.

Fields not declared with `setting()` (such as `Target.source`) are not keys
of a file. Rules that relate several keys (a remote target needs a
url) live on the dataclass itself, in `__post_init__`, so that every instance
keeps them, also one made with `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from targets.errors import TargetError

_METADATA_KEY = "targets.setting"
_NOUNS = {str: ("a string", "strings"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          dict: ("a table", "tables")}


@dataclass(frozen=True)
class Setting:
    """The constraints `setting()` records on a field, beyond its type and default."""

    doc: str = ""
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    non_empty: bool = False
    prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Key:
    """One declared key, resolved from its field: name, value type and constraints.

    `value_type` is str, int, float, list (a TOML array), dict (a table of
    tables) or a declared dataclass (a nested table); `item_type` is the
    element type of a list or the value type of a table of tables.
    """

    name: str
    value_type: type
    item_type: type | None
    optional: bool
    required: bool
    setting: Setting


def setting(default: Any = MISSING, *, factory: Any = MISSING, doc: str = "", choices: tuple[str, ...] = (),
            ge: float | None = None, gt: float | None = None, non_empty: bool = False,
            prefixes: tuple[str, ...] = ()) -> Any:
    """A dataclass field that is a key of a target file (no default and no factory: required)."""
    metadata = {_METADATA_KEY: Setting(doc, tuple(choices), ge, gt, non_empty, tuple(prefixes))}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def declarations(cls: type) -> Mapping[str, Key]:
    """The keys of a declared dataclass, in field order (read-only: it is cached)."""
    hints = typing.get_type_hints(cls)
    keys = {}
    for f in dataclasses.fields(cls):
        if _METADATA_KEY not in f.metadata:
            continue
        kind, item, optional = _resolve(hints[f.name])
        required = f.default is MISSING and f.default_factory is MISSING
        keys[f.name] = Key(f.name, kind, item, optional, required, f.metadata[_METADATA_KEY])
    return types.MappingProxyType(keys)


def _resolve(hint: Any) -> tuple[type, type | None, bool]:
    """(type, item type, optional) of an annotation such as `tuple[int, ...]` or `float | None`."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]  # `X | None`: one type besides None
    origin = typing.get_origin(hint)
    if origin is tuple:
        return list, typing.get_args(hint)[0], optional
    if origin is Mapping:
        value = typing.get_args(hint)[1]
        return dict, dict if typing.get_origin(value) is Mapping else value, optional
    return hint, None, optional


def expected(key: Key) -> str:
    """What a key's value must be, in words: 'a number > 0 (milliseconds)'."""
    s = key.setting
    limits = []
    if s.choices:
        limits.append("one of " + ", ".join(s.choices))
    if s.ge is not None:
        limits.append(f">= {s.ge:g}")
    if s.gt is not None:
        limits.append(f"> {s.gt:g}")
    if s.prefixes:
        limits.append("starting with " + " or ".join(s.prefixes))
    if key.value_type in (list, dict):
        container = "list" if key.value_type is list else "table"
        text = f"a {'non-empty ' if s.non_empty else ''}{container} of {_NOUNS[key.item_type][1]}"
        text += "".join(", each " + limit for limit in limits)
    elif dataclasses.is_dataclass(key.value_type):
        text = "a table"
    elif s.choices:
        text = " ".join(limits)
    else:
        text = " ".join([_NOUNS[key.value_type][0], *limits])
    return f"{text} ({s.doc})" if s.doc else text


def parse(cls: type, table: Mapping[str, Any], where: str = "", **undeclared: Any) -> Any:
    """Validate `table` against the declarations of `cls` and build it.

    Args:
        cls: a dataclass whose keys are declared with `setting()`.
        table: the parsed TOML or JSON table; None for an optional key leaves it unset.
        where: prefix for messages about a nested table ('budgets: ').
        undeclared: values for fields that are not keys of the file (`source`).

    Raises:
        TargetError: at the first bad key, naming it and what it must be.
    """
    keys = declarations(cls)
    values = {}
    for name, value in table.items():
        key = keys.get(name)
        if key is None:
            raise TargetError(f"{where}unknown key {name!r}; valid keys: {', '.join(sorted(keys))}")
        if value is None and key.optional:
            continue
        values[name] = _convert(key, value, where)
    for key in keys.values():
        if key.required and key.name not in values:
            raise TargetError(f"{where}missing required key {key.name!r}: {expected(key)}")
    return cls(**values, **undeclared)


def _convert(key: Key, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(key.value_type):
        if not isinstance(value, dict):
            raise TargetError(f"{where}{key.name!r} must be {expected(key)}, got {value!r}")
        return parse(key.value_type, value, f"{where}{key.name}: ")
    if key.value_type is list:
        valid = isinstance(value, list) and (bool(value) or not key.setting.non_empty) and all(
            _fits(key.item_type, key.setting, v) for v in value)
    elif key.value_type is dict:
        valid = isinstance(value, dict) and all(_fits(key.item_type, key.setting, v) for v in value.values())
    else:
        valid = _fits(key.value_type, key.setting, value)
    if not valid:
        raise TargetError(f"{where}{key.name!r} must be {expected(key)}, got {value!r}")
    if key.value_type is list:
        return tuple(value)
    if key.value_type is dict:
        return {k: dict(v) for k, v in value.items()}
    return float(value) if key.value_type is float else value


def _fits(kind: type, s: Setting, value: Any) -> bool:
    # bool is an int subclass, and a float key takes an integer (TOML `latency_ms = 5`).
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
        return False
    if s.choices and value not in s.choices:
        return False
    # `not (value >= bound)` also refuses NaN.
    if (s.ge is not None and not value >= s.ge) or (s.gt is not None and not value > s.gt):
        return False
    return not s.prefixes or value.startswith(s.prefixes)


def plain(value: Any) -> Any:
    """A dataclass instance (or a value in one) as dicts, lists and scalars."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value
