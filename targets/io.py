"""Targets in and out: parsed tables, preset names, TOML files and TOML text.

`target_from_dict` builds a `Target` from a parsed table (TOML, or JSON sent
to an agent); `load_target` reads a built-in preset (`presets/NAME.toml`) or
a user's file of the same shape and prefixes errors with the file's name.
`render` writes a target's declared keys back as TOML, derived from the same
declarations that parse it, so its output parses back to an equal target;
`target_to_toml` prefers the file a target came from (it keeps the file's
comments) while that file still describes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from targets.errors import TargetError
from targets.model import Target
from targets.schema import declarations, parse, plain

PRESETS_DIR = Path(__file__).parent / "presets"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def target_from_dict(data: Mapping[str, Any], source: str = "") -> Target:
    """Validate a parsed TOML table and build a `Target`.

    Raises:
        TargetError: at the first bad key, naming it and the valid choices.
    """
    return parse(Target, data, source=source)


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.toml"


def list_targets() -> list[Target]:
    """The built-in presets, sorted by name."""
    return [load_target(p.stem) for p in sorted(PRESETS_DIR.glob("*.toml"), key=lambda p: p.stem)]


def load_target(name_or_path: str | os.PathLike[str]) -> Target:
    """Load a built-in preset by name, or a user's TOML file by path.

    Raises:
        TargetError: unknown name, unreadable file, bad TOML or an invalid key.
    """
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or os.sep in text:
        if not path.is_file():
            raise TargetError(f"target file {text!r} does not exist")
        source = str(path)
    else:
        path = preset_path(text)
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
            raise TargetError(f"unknown target {text!r}; built-in targets: {names} (or a path to a .toml file)")
        source = f"preset:{text}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: not valid TOML: {exc}") from None
    try:
        return target_from_dict(data, source=source)
    except TargetError as exc:
        raise TargetError(f"{path.name}: {exc}") from None


def target_to_toml(target: Target) -> str:
    """The TOML text of a target: the file it came from while that still describes it, else `render`."""
    name = target.source.removeprefix("preset:")
    path = preset_path(name) if name != target.source else Path(name)
    try:
        # A copy made with other budgets (`with_budgets`) keeps its source but not the file's values.
        if target.source and path.is_file() and load_target(name) == target:
            return path.read_text(encoding="utf-8")
    except TargetError:
        pass  # the file has become invalid since it was loaded: the target itself is still valid
    return render(target)


def render(target: Target) -> str:
    """The declared keys of `target` as TOML: plain keys first, then one table per nested table.

    Unset (None) keys are left out; `source` is not a key and is not written.
    """
    return "\n".join(_toml_lines(target, "")) + "\n"


def _toml_lines(obj: Any, prefix: str) -> list[str]:
    lines, tables = [], []
    for key in declarations(type(obj)).values():
        value = getattr(obj, key.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(key.value_type):
            tables += ["", f"[{prefix}{key.name}]", *_toml_lines(value, f"{prefix}{key.name}.")]
        elif key.value_type is dict:
            for name, options in value.items():
                tables += ["", f"[{prefix}{key.name}.{_toml_key(name)}]"]
                tables += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in options.items()]
        else:
            lines.append(f"{key.name} = {_toml_value(plain(value))}")
    return lines + tables


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # JSON's string escapes are TOML's, except that TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
