"""Target validation (every rule names the key and the valid choices), presets, `compressor targets`."""

from __future__ import annotations

import pytest

from compressor.cli import main
from targets import (
    PRECISIONS,
    PROVIDERS,
    RUNTIMES,
    TargetError,
    availability,
    list_targets,
    load_target,
    target_from_dict,
)

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
@pytest.mark.parametrize("value", [0, -1.5])
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
