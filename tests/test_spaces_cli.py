"""`compressor space`: list/show/sample as a user runs them, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest

from compressor import cli
from compressor.spaces import load_spec


@pytest.fixture
def run(capsys):
    """Run the CLI in-process and capture what it prints."""

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_sample_writes_the_spec_prints_params_and_macs_and_plots(run, tmp_path):
    out_path, plot_path = tmp_path / "net.json", tmp_path / "net.png"
    code, out, _ = run("space", "sample", "nago", "--seed", "3", "--input-shape", "1x3x32x32", "--out", str(out_path), "--plot", str(plot_path))
    assert code == 0
    spec = load_spec(out_path)
    assert spec.space == "nago" and spec.seed == 3
    assert "params" in out and "MACs" in out
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot_path.stat().st_size > 10_000
    # The saved file reproduces the same numbers.
    code, again, _ = run("space", "sample", str(out_path), "--json")
    first = json.loads(run("space", "sample", "nago", "--seed", "3", "--json")[1])
    assert json.loads(again)["params"] == first["params"] and json.loads(again)["macs"] == first["macs"]


def test_sample_json_with_knobs_and_zoo_family_switch(run, tmp_path):
    code, out, _ = run("space", "sample", "zoo", "--set", "family=resnet", "--set", "depths=1-2-1-1", "--input-shape", "1x1x28x28", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["arch"]["params"]["depth_2"] == 2 and data["input_shape"] == [1, 28, 28]
    assert data["params"] > 0 and data["macs"] > data["params"]
    code, out, _ = run("space", "sample", "nago", "--random", "--seed", "5", "--json", "--plot", str(tmp_path / "r.png"))
    assert code == 0 and json.loads(out)["arch"]["seed"] == 5


def test_list_and_show(run):
    code, out, _ = run("space", "list", "--json")
    assert code == 0 and [s["name"] for s in json.loads(out)] == ["all", "nago", "zoo"]
    code, out, _ = run("space", "show", "all", "--json")
    knobs = {k["knob"] for k in json.loads(out)["knobs"]}
    assert {"space", "nago.top_nodes", "zoo.family", "zoo.resnet.depth_1"} <= knobs
    code, out, _ = run("space", "show", "zoo", "--json")
    knobs = {k["knob"] for k in json.loads(out)["knobs"]}
    assert {"family", "resnet.depth_1", "plain.width_1", "mobilenet_v3_small.width_mult"} <= knobs
    code, out, _ = run("space", "show", "nago")
    assert code == 0 and "bottom_generator" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["space", "sample", "foo"], "unknown space 'foo'; valid: all, nago, zoo"),
        (["space", "sample", "nago", "--set", "top_nodes=9"], "top_nodes=9 is out of range; valid: 3..6"),
        (["space", "sample", "nago", "--set", "top_nodes"], "--set expects KNOB=VALUE"),
        (["space", "sample", "nago", "--params", "[1]"], "--params must be a JSON object"),
        (["space", "sample", "nago", "--input-shape", "3x32"], "--input-shape must be NxCxHxW or CxHxW"),
        (["space", "sample", "nago", "--input-shape", "1x3x4x4"], "at least 8x8 pixels"),
        (["space", "show"], "needs a space name"),
    ],
)
def test_bad_input_is_one_line_exit_2(run, argv, message):
    code, _, err = run(*argv)
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_hand_edited_spec_file_is_refused(run, tmp_path):
    path = tmp_path / "net.json"
    run("space", "sample", "nago", "--out", str(path))
    data = json.loads(path.read_text())
    data["resolved"]["cells"][0]["bottoms"][0]["edges"].append([5, 9])
    path.write_text(json.dumps(data))
    code, _, err = run("space", "sample", str(path))
    assert code == 2 and "edge [5, 9] is invalid" in err and err.count("\n") == 1
