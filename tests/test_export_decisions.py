"""Export decisions a user can trust: INT8 recipes by CPU features, the recipe rule, gates on validation, one session.

No test here depends on this CPU: the recipe set is asked for given flags,
the selection rule is fed gate results and latencies, and the gate's split
is shown with labels built from the model's own predictions (so which split
an artifact passes on is decided by construction, not by this CPU's INT8
kernels). The bundle test checks that what the manifest records follows the
rules, whatever recipe won here.
"""

from __future__ import annotations

import pytest
import torch

from profilers.host import cpu_flags
from test_export import TinyDigits, quick_target, scramble_int8  # noqa: F401 - quick_target: the fixture

from compressor.errors import UserError
from compressor.export import ExportConfig, export_bundle
from compressor.export.int8 import MAX_RECIPES, Int8Recipe, RecipeTrial, recipe_set, select_recipe


@pytest.fixture(scope="module")
def colour_net() -> torch.nn.Module:
    """A 1x1 convolution over the channel means: its class depends on each input's colour, so it varies."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(3, 4, 1, bias=False),
                               torch.nn.Flatten()).eval()


@pytest.fixture(scope="module")
def colours() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    levels = torch.rand(180, 3, 1, 1, generator=g)
    return (levels + 0.05 * torch.rand(180, 3, 8, 8, generator=g)).clamp(0, 1)


# -- which recipes a CPU gets --------------------------------------------------------------------------------

def test_vnni_cpu_gets_8_bit_weights_and_minmax_first():
    recipes, why = recipe_set(frozenset({"sse2", "avx2", "avx512f", "avx512_vnni"}), for_tensorrt=False, machine="x86_64")
    assert recipes[0] == Int8Recipe("minmax", True, False)
    assert not any(r.reduce_range for r in recipes) and "VNNI" in why and "avx512_vnni" in why
    assert {r.calibration for r in recipes} == {"minmax", "percentile", "entropy"}
    assert any(not r.per_channel for r in recipes), "per-tensor weights are one of the recipes"
    assert recipe_set(frozenset({"avx2", "avx_vnni"}), for_tensorrt=False, machine="x86_64")[0] == recipes


def test_x86_without_vnni_gets_7_bit_weights_only():
    recipes, why = recipe_set(frozenset({"sse2", "avx2", "fma"}), for_tensorrt=False, machine="x86_64")
    assert recipes and all(r.reduce_range for r in recipes) and "saturating" in why
    assert len(recipes) <= MAX_RECIPES and len(set(recipes)) == len(recipes)


def test_unknown_cpu_is_safe_arm_is_8_bit_tensorrt_is_symmetric_8_bit():
    unknown, why = recipe_set(None, for_tensorrt=False)
    assert all(r.reduce_range for r in unknown) and "unknown" in why
    arm, why = recipe_set(frozenset({"fp", "asimd", "asimddp"}), for_tensorrt=False, machine="aarch64")
    assert not any(r.reduce_range for r in arm) and "ARM" in why
    trt, why = recipe_set(frozenset({"avx2"}), for_tensorrt=True, machine="x86_64")
    assert [r.calibration for r in trt] == ["minmax", "percentile", "entropy"]
    assert all(r.per_channel and not r.reduce_range for r in trt) and "TensorRT" in why


def test_recipe_names_round_trip_and_bad_names_are_user_errors():
    for recipe in recipe_set(frozenset({"avx2"}), for_tensorrt=False, machine="x86_64")[0]:
        assert Int8Recipe.parse(recipe.name) == recipe
    with pytest.raises(UserError, match="unknown INT8 recipe 'kl-perchannel-w8'"):
        Int8Recipe.parse("kl-perchannel-w8")
    with pytest.raises(UserError, match="1 to 4 INT8 recipes"):
        ExportConfig(int8_recipes=("minmax-perchannel-w8",) * 1 + ("entropy-perchannel-w8", "percentile-perchannel-w8",
                                   "minmax-pertensor-w8", "minmax-perchannel-w7")).int8_recipe_set()


# -- which recipe is kept ----------------------------------------------------------------------------------

def _trial(name: str, drop: float | None, ms: float | None = None, passed: bool | None = None) -> RecipeTrial:
    recipe = Int8Recipe.parse(name)
    parity = None if drop is None else {"accuracy_drop": drop, "passed": drop <= 0.01 if passed is None else passed}
    return RecipeTrial(recipe, f"model.int8.{name}.onnx", parity=parity, error=None if parity else "build failed",
                       latency=None if ms is None else (ms, ms * 0.99, ms * 1.01))


def _ratio(trials: list[RecipeTrial], spread: float = 0.01):
    """Ratios from the trials' latencies, each with a +-`spread` interval (what the session would give)."""
    by_label = {t.label: t.latency[0] for t in trials}

    def ratio(a: str, b: str) -> tuple[float, float, float]:
        r = by_label[a] / by_label[b]
        return r, r * (1 - spread), r * (1 + spread)

    return ratio


def test_the_fastest_passing_recipe_is_kept_and_a_faster_failing_one_never():
    trials = [_trial("minmax-perchannel-w8", 0.07, 1.0), _trial("percentile-perchannel-w8", 0.004, 1.3),
              _trial("entropy-perchannel-w8", 0.008, 1.6), _trial("minmax-pertensor-w8", 0.002, 1.2)]
    trials[0].latency = None  # failed its gate: never measured
    kept, why = select_recipe(trials, _ratio([t for t in trials if t.latency]))
    assert kept.recipe.name == "minmax-pertensor-w8" and kept.passed and "fastest" in why
    measured = [t for t in trials if t.passed]
    assert kept.latency[0] == min(t.latency[0] for t in measured)
    assert all(t.ratio_to_fastest[0] >= 1 for t in measured) and trials[0].ratio_to_fastest is None


def test_recipes_indistinguishable_in_speed_are_decided_by_validation_accuracy():
    # Same kernels, different scales: 1.00 vs 1.005 ms is noise (ratio interval contains 1).
    trials = [_trial("minmax-perchannel-w8", 0.009, 1.0), _trial("entropy-perchannel-w8", 0.001, 1.005),
              _trial("minmax-pertensor-w8", 0.0, 1.5)]
    kept, why = select_recipe(trials, _ratio(trials))
    assert kept.recipe.name == "entropy-perchannel-w8", "not measurably slower than the fastest, and more accurate"
    assert kept.ratio_to_fastest[1] <= 1 and "lost less accuracy" in why
    kept, _ = select_recipe(trials, _ratio(trials, spread=0.001))
    assert kept.recipe.name == "minmax-perchannel-w8", "once the speed difference is measurable, the fastest wins"


def test_unmeasured_recipes_are_decided_by_accuracy_and_none_passing_keeps_the_least_bad():
    trials = [_trial("minmax-perchannel-w8", 0.008), _trial("percentile-perchannel-w8", 0.003),
              _trial("entropy-perchannel-w8", None)]
    kept, why = select_recipe(trials, None)
    assert kept.recipe.name == "percentile-perchannel-w8" and "not measured" in why
    failing = [_trial("minmax-perchannel-w8", 0.07), _trial("entropy-perchannel-w8", 0.03), _trial("minmax-pertensor-w8", None)]
    kept, why = select_recipe(failing, None)
    assert kept.recipe.name == "entropy-perchannel-w8" and not kept.passed and "no recipe passed" in why
    kept, _ = select_recipe([_trial("minmax-pertensor-w8", None)], None)
    assert kept.parity is None, "nothing built: the entry will carry the build error"


# -- the gate decides on validation ------------------------------------------------------------------------

def _split_data(net: torch.nn.Module, x: torch.Tensor, *, val_right: bool) -> TinyDigits:
    """Labels from the model's own predictions: right on one split (PyTorch 100%), shifted on the other (0%)."""
    with torch.no_grad():
        predicted = net(x).argmax(1)
    shifted = (predicted + 1) % 4
    val_y, test_y = (predicted, shifted) if val_right else (shifted, predicted)
    return TinyDigits(4, (3, 8, 8), x[:60], predicted[:60], x[60:120], val_y[60:120], x[120:], test_y[120:])


@pytest.mark.slow  # two exports
def test_the_gate_follows_the_validation_split_and_reports_the_test_split(colour_net, colours, quick_target,
                                                                         tmp_path, monkeypatch):
    scramble_int8(monkeypatch)
    config = ExportConfig(formats=("onnx", "int8"), int8_recipes=("minmax-perchannel-w8",), profile_memory=False)
    # Validation labels are what PyTorch predicts: any disagreement is lost accuracy there -> fails.
    strict = export_bundle(colour_net, "colour", _split_data(colour_net, colours, val_right=True), quick_target,
                           tmp_path / "a", config)
    int8 = strict["artifacts"][1]
    assert strict["reference"]["val_accuracy"] == 1.0 and strict["reference"]["test_accuracy"] == 0.0
    assert int8["status"] == "failed" and int8["parity"]["split"] == "val" and int8["parity"]["accuracy_drop"] > 0.01
    assert int8["test_parity"]["accuracy_drop"] <= 0, "on the test split it would have passed: not consulted"
    # The same model and artifact with the splits' labels swapped: validation now lets it through.
    lenient = export_bundle(colour_net, "colour", _split_data(colour_net, colours, val_right=False), quick_target,
                            tmp_path / "b", config)
    int8 = lenient["artifacts"][1]
    assert int8["status"] == "ok" and int8["parity"]["passed"] and int8["parity"]["accuracy_drop"] <= 0
    assert int8["test_parity"]["accuracy_drop"] > 0.01 and "passed" not in int8["test_parity"]


def test_a_dataset_without_validation_split_is_refused(colour_net, colours, quick_target, tmp_path):
    data = _split_data(colour_net, colours, val_right=True)
    data.val_x, data.val_y = data.val_x[:0], data.val_y[:0]
    with pytest.raises(UserError, match="validation split is empty"):
        export_bundle(colour_net, "colour", data, quick_target, tmp_path / "b", ExportConfig(formats=("onnx",)))
    assert not (tmp_path / "b").exists()


# -- one session -------------------------------------------------------------------------------------------

def test_every_artifact_and_recipe_is_measured_in_one_session_with_fp32_as_reference(colour_net, colours, quick_target,
                                                                                    tmp_path):
    data = _split_data(colour_net, colours, val_right=True)
    config = ExportConfig(formats=("onnx", "ort", "int8"), max_accuracy_drop=1.0, profile_memory=False)
    manifest = export_bundle(colour_net, "colour", data, quick_target, tmp_path / "b", config)
    session = manifest["session"]
    assert session["mode"] == "interleaved" and session["models"][0] == "model.onnx" == session["fp32_reference"]
    int8 = next(a for a in manifest["artifacts"] if a["format"] == "int8")
    tried = int8["int8"]["tried"]
    expected, _ = recipe_set(cpu_flags(), for_tensorrt=False, machine=__import__("platform").machine())
    assert [t["name"] for t in tried] == [r.name for r in expected]
    passing = [t for t in tried if t["passed"]]
    assert len(session["models"]) == 2 + len(passing), "onnx, ort and every passing recipe, together"
    for entry in manifest["artifacts"]:
        if entry["status"] != "ok":
            continue
        assert entry["budget"]["session"] == session["id"] and entry["profile"]["model"] == entry["file"]
        lat = entry["latency"]
        assert lat["low"] <= lat["value"] <= lat["high"] and lat["percentile"] == session["percentile"]
        assert set(entry["ratio_to_fp32"]) == {"model.onnx", "model.ort.onnx"}
    assert manifest["artifacts"][0]["ratio_to_fp32"]["model.onnx"]["value"] == pytest.approx(1.0)
    # The kept recipe follows the rule on the recorded figures (whichever it is on this CPU).
    kept = int8["int8"]["recipe"]["name"]
    if passing:
        fastest = min(passing, key=lambda t: t["latency_ms"]["value"])
        equivalent = [t for t in passing if t["ratio_to_fastest"]["low"] <= 1]
        assert fastest in equivalent
        best = min(equivalent, key=lambda t: (t["validation"]["accuracy_drop"], t["latency_ms"]["value"]))
        assert kept == best["name"] and int8["status"] == "ok"
        assert int8["parity"]["accuracy_drop"] == best["validation"]["accuracy_drop"]
    assert not (tmp_path / "b" / "int8-recipes").exists()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(
        ["DEPLOY.md", "artifacts.json", "export.log", "model.onnx", "model.ort.onnx", "model.int8.onnx"])
