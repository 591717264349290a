"""Target validation (every rule names the key and the valid choices), presets, `compressor targets`."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from compressor.cli import main
from targets import (
    PRECISIONS,
    PROVIDERS,
    RUNTIMES,
    Target,
    TargetError,
    availability,
    list_targets,
    load_target,
    render,
    target_from_dict,
    target_to_toml,
)
from targets.schema import Key, declarations, expected

BASE = {"name": "t", "kind": "cpu", "runtime": "onnxruntime"}


def _error(data: dict) -> str:
    with pytest.raises(TargetError) as info:
        target_from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_target_gets_defaults():
    target = target_from_dict(BASE)
    assert target.providers == ("CPUExecutionProvider",)
    assert target.batch_size == 1 and target.measure.min_runs >= 1 and not target.budgets.any()


def test_unknown_top_level_key_is_named_with_valid_keys():
    message = _error({**BASE, "thread": 2})
    assert "'thread'" in message and "threads" in message


def test_unknown_nested_key_is_named():
    assert "'latency'" in _error({**BASE, "budgets": {"latency": 5}})
    assert "'max_time'" in _error({**BASE, "measure": {"max_time": 5}})


@pytest.mark.parametrize(
    "data, key",
    [
        ({**BASE, "threads": "2"}, "'threads'"),
        ({**BASE, "batch_size": 1.5}, "'batch_size'"),
        ({**BASE, "providers": "CPUExecutionProvider"}, "'providers'"),
        ({**BASE, "budgets": {"latency_ms": True}}, "'latency_ms'"),
        ({**BASE, "measure": {"min_runs": "50"}}, "'min_runs'"),
    ],
)
def test_wrong_type_names_the_key(data, key):
    assert key in _error(data)


@pytest.mark.parametrize("key", ["latency_ms", "memory_mb", "size_mb"])
@pytest.mark.parametrize("value", [0, -1.5, float("nan")])
def test_zero_or_negative_budget_is_refused(key, value):
    message = _error({**BASE, "budgets": {key: value}})
    assert repr(key) in message and "> 0" in message


@pytest.mark.parametrize("key, value", [("threads", -1), ("batch_size", 0), ("workspace_mb", 0)])
def test_out_of_range_integers_are_refused(key, value):
    assert repr(key) in _error({**BASE, key: value})


def test_bad_measure_settings_are_refused():
    assert "'max_seconds'" in _error({**BASE, "measure": {"max_seconds": 0}})
    assert "'warmup_runs'" in _error({**BASE, "measure": {"warmup_runs": -1}})


def test_unknown_runtime_lists_choices():
    message = _error({**BASE, "runtime": "openvino"})
    assert "'runtime'" in message and all(r in message for r in RUNTIMES)


def test_unknown_provider_lists_choices():
    message = _error({**BASE, "providers": ["CPUProvider"]})
    assert "'CPUProvider'" in message and all(p in message for p in PROVIDERS)


def test_unknown_precision_lists_choices():
    message = _error({**BASE, "precision": "fp8"})
    assert "'precision'" in message and all(p in message for p in PRECISIONS)


def test_missing_required_key_and_bad_percentile():
    assert "'kind'" in _error({"name": "t", "runtime": "onnxruntime"})
    assert "'latency_percentile'" in _error({**BASE, "budgets": {"latency_percentile": "p95"}})


def test_remote_target_needs_url_and_token_env():
    assert "'url'" in _error({**BASE, "runtime": "remote", "token_env": "X"})
    assert "'url'" in _error({**BASE, "runtime": "remote", "token_env": "X", "url": "ftp://x"})


def test_provider_options_must_match_providers():
    assert "'provider_options'" in _error({**BASE, "provider_options": {"CUDAExecutionProvider": {"device_id": 0}}})


def test_every_preset_loads_and_names_itself():
    presets = list_targets()
    assert {"cpu", "cpu-1t", "gpu-trt-fp16"} <= {t.name for t in presets}
    for target in presets:
        assert load_target(target.name) == target
        assert target.source == f"preset:{target.name}"


def test_user_toml_file_error_names_file_and_key(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\nkind = "cpu"\nruntime = "onnxruntime"\nprecision = "fp64"\n')
    with pytest.raises(TargetError, match=r"mine\.toml: 'precision' must be one of fp32, fp16, int8"):
        load_target(path)
    path.write_text("name = [unclosed\n")
    with pytest.raises(TargetError, match="not valid TOML"):
        load_target(path)


def test_user_toml_file_round_trips(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mine"\nkind = "edge"\nruntime = "onnxruntime"\nthreads = 1\ncpu_affinity = [0]\n'
        "[budgets]\nlatency_ms = 5\nlatency_percentile = \"p90\"\n[measure]\nmax_seconds = 2.5\n"
    )
    target = load_target(str(path))
    assert target.budgets.latency_ms == 5.0 and target.budgets.latency_percentile == "p90"
    assert target.measure.max_seconds == 2.5 and target.cpu_affinity == (0,)


def test_unknown_preset_lists_presets():
    with pytest.raises(TargetError, match="cpu-1t"):
        load_target("no-such-target")


def test_availability_explains_why_not():
    ok, why = availability(load_target("rpi4-remote"))
    assert not ok and "url" in why
    ok, why = availability(load_target("cpu"))
    assert ok and why == ""


def test_cli_targets_lists_presets_with_availability(capsys):
    assert main(["targets", "--json"]) == 0
    import json

    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["cpu-1t"]["available"] is True
    assert rows["jetson-orin-remote"]["available"] is False and rows["jetson-orin-remote"]["unavailable_reason"]
    assert main(["targets"]) == 0
    assert "cpu-1t" in capsys.readouterr().out


def test_cli_targets_show_prints_loadable_toml(capsys, tmp_path):
    assert main(["targets", "show", "cpu-1t"]) == 0
    text = capsys.readouterr().out
    copy = tmp_path / "copy.toml"
    copy.write_text(text)
    assert load_target(copy).threads == 1


def test_cli_targets_errors_exit_2(capsys):
    assert main(["targets", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'nope'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# --- sweeps over the declarations: every key a target file may hold --------------------------------


def _declared() -> list[tuple[tuple[str, ...], Key]]:
    """(enclosing tables, key) for every declared key, nested tables' keys included."""
    keys = []
    for key in declarations(Target).values():
        keys.append(((), key))
        if dataclasses.is_dataclass(key.value_type):
            keys += [((key.name,), sub) for sub in declarations(key.value_type).values()]
    return keys


DECLARED = _declared()
KEY_IDS = [".".join((*tables, key.name)) for tables, key in DECLARED]


def _with(tables: tuple[str, ...], name: str, value) -> dict:
    """BASE with `value` at `name` inside the nested `tables`."""
    for table in reversed(tables):
        value, name = {name: value}, table
    return {**BASE, name: value}


def _prefix(tables: tuple[str, ...]) -> str:
    return "".join(f"{table}: " for table in tables)


def _wrong_type(key: Key):
    if dataclasses.is_dataclass(key.value_type):
        return 1
    return {str: 1, int: 1.5, float: "1", list: "CPUExecutionProvider", dict: ["x"]}[key.value_type]


def test_the_sweep_covers_every_declared_key():
    assert {"name", "providers", "provider_options", "budgets.latency_ms", "measure.stable_rel"} <= set(KEY_IDS)
    assert len(KEY_IDS) == len(declarations(Target)) + 4 + 6


@pytest.mark.parametrize("tables, key", DECLARED, ids=KEY_IDS)
def test_every_key_refuses_a_wrong_type_naming_itself(tables, key):
    value = _wrong_type(key)
    message = _error(_with(tables, key.name, value))
    assert message == f"{_prefix(tables)}{key.name!r} must be {expected(key)}, got {value!r}"


NUMBERS = [(t, k) for t, k in DECLARED if int in (k.value_type, k.item_type) or float in (k.value_type, k.item_type)]


@pytest.mark.parametrize("tables, key", NUMBERS, ids=[".".join((*t, k.name)) for t, k in NUMBERS])
def test_a_bool_is_never_a_number(tables, key):
    value = [True] if key.value_type is list else True
    assert f"{key.name!r} must be" in _error(_with(tables, key.name, value))


CHOICES = [(t, k) for t, k in DECLARED if k.setting.choices]


@pytest.mark.parametrize("tables, key", CHOICES, ids=[".".join((*t, k.name)) for t, k in CHOICES])
def test_every_choice_key_lists_its_choices(tables, key):
    value = ["nope"] if key.value_type is list else "nope"
    message = _error(_with(tables, key.name, value))
    assert f"{key.name!r}" in message and all(choice in message for choice in key.setting.choices)


BOUNDED = [(t, k) for t, k in DECLARED if k.setting.ge is not None or k.setting.gt is not None]


@pytest.mark.parametrize("tables, key", BOUNDED, ids=[".".join((*t, k.name)) for t, k in BOUNDED])
def test_every_bound_is_enforced_at_the_edge(tables, key):
    s, kind = key.setting, key.item_type or key.value_type
    edge = s.gt if s.gt is not None else s.ge - (1 if kind is int else 1e-9)
    value = [kind(edge)] if key.value_type is list else kind(edge)
    message = _error(_with(tables, key.name, value))
    assert f"{key.name!r}" in message and (f"> {s.gt:g}" if s.gt is not None else f">= {s.ge:g}") in message


def test_every_required_key_is_named_when_missing():
    required = [key for key in declarations(Target).values() if key.required]
    assert [key.name for key in required] == ["name", "kind", "runtime"]
    for key in required:
        data = {k: v for k, v in BASE.items() if k != key.name}
        assert _error(data) == f"missing required key {key.name!r}: {expected(key)}"


def test_unknown_key_lists_every_declared_key():
    message = _error({**BASE, "source": "x"})
    assert "'source'" in message and all(name in message for name in declarations(Target))


@pytest.mark.parametrize("target", list_targets(), ids=lambda t: t.name)
def test_every_preset_round_trips_through_toml(target):
    for text in (target_to_toml(target), render(target)):
        assert target_from_dict(tomllib.loads(text), source=target.source) == target


def test_render_round_trips_every_key_set_and_awkward_strings():
    data = {
        **BASE,
        "kind": "edge",
        "runtime": "remote",
        "description": 'a "quoted"\\ line\nwith a tab\t, DEL \x7f and ünïcode',
        "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "provider_options": {"CUDAExecutionProvider": {"device_id": 1, "cudnn_conv_algo_search": "HEURISTIC",
                                                       "do copy": True}},
        "threads": 3, "inter_op_threads": 2, "cpu_affinity": [0, 2], "graph_optimization": "basic",
        "precision": "int8", "batch_size": 4, "workspace_mb": 256, "url": "https://board:8765",
        "token_env": "TOKEN", "remote_runtime": "tensorrt", "timeout_s": 12,
        "budgets": {"latency_ms": 2.5, "latency_percentile": "p99", "memory_mb": 64, "size_mb": 1e-3},
        "measure": {"warmup_runs": 0, "min_runs": 3, "min_seconds": 0, "max_seconds": 0.5, "max_runs": 7,
                    "stable_rel": 0.5},
    }
    assert {k for k in data} == set(declarations(Target))
    target = target_from_dict(data, source="agent")
    assert target_from_dict(tomllib.loads(render(target)), source="agent") == target
    assert target_from_dict({k: v for k, v in target.to_dict().items() if k != "source"}, source="agent") == target


def test_target_to_toml_renders_a_preset_copy_with_other_budgets():
    target = load_target("cpu-1t").with_budgets(latency_ms=5)
    assert tomllib.loads(target_to_toml(target))["budgets"]["latency_ms"] == 5.0
    assert target_to_toml(load_target("cpu-1t")).startswith("# An edge-class single core")


def test_cross_key_rules_hold_for_replaced_targets_too():
    with pytest.raises(TargetError, match="'token_env'"):
        dataclasses.replace(load_target("cpu"), runtime="remote", url="http://x:1")
