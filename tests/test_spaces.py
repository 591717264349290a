"""Student spaces: seeded sweeps over every space, the ArchSpec contract, ONNX parity, references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hyperopt.pyll.base import as_apply, dfs
from hyperopt.pyll.stochastic import sample as hyperopt_sample

from compressor.errors import UserError
from compressor.models.onnx_export import export_onnx
from compressor.spaces import SPACES, ArchSpec, build_model, get_space, load_spec, spec_from_ref
from compressor.spaces.stats import count_macs, count_params
from compressor.spaces.zoo import FAMILIES

SWEEP_POINTS = 100
SWEEP_SHAPE = (3, 16, 16)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def random_params(space_name: str, index: int) -> dict:
    """What hyperopt's space_eval would hand the space for one random point."""
    return hyperopt_sample(get_space(space_name).hyperopt_space(), rng=np.random.default_rng(1000 + index))


def assert_same_network(a: torch.nn.Module, b: torch.nn.Module, shape: tuple[int, int, int]) -> None:
    shapes_a = {n: tuple(p.shape) for n, p in a.state_dict().items()}
    shapes_b = {n: tuple(p.shape) for n, p in b.state_dict().items()}
    assert shapes_a == shapes_b
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, *shape)
    torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("space_name", ["nago", "zoo"])
def test_sweep_build_forward_all_params_used_json_round_trip(space_name):
    """100 random points per space: build, forward, every parameter gets a gradient, JSON rebuilds it."""
    families = set()
    for index in range(SWEEP_POINTS):
        params = random_params(space_name, index)
        if space_name == "nago":
            # The graphs are what vary the wiring; wide members only make the sweep slow.
            params["base_width"] = min(params["base_width"], 24)
        spec = get_space(space_name).sample(params, seed=index)
        families.add(spec.params.get("family"))
        torch.manual_seed(index)
        model = build_model(spec, SWEEP_SHAPE, 5)
        out = model(torch.randn(2, *SWEEP_SHAPE))
        assert out.shape == (2, 5)
        out.square().sum().backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused, f"{spec.params}: unused parameters {unused[:5]}"

        loaded = ArchSpec.from_json(spec.to_json())
        assert loaded == spec
        assert_same_network(model, build_model(loaded, SWEEP_SHAPE, 5), SWEEP_SHAPE)
    if space_name == "zoo":
        assert families == set(FAMILIES)  # the sweep reached every family


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 224, 224)])
@pytest.mark.parametrize("ref", ["nago", "nago:top_nodes=4,mid_nodes=2,bottom_nodes=3,op=sep5x5", *(f"zoo:{f}" for f in FAMILIES)])
def test_reference_members_run_on_the_three_input_shapes(ref, shape):
    model = build_model(spec_from_ref(ref, seed=1), shape, 10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, *shape)).shape == (1, 10)


def _onnx_parity(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    import onnxruntime as ort

    data = export_onnx(model, shape)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    (got,) = session.run(None, {"input": x.numpy()})
    return float(np.abs(got - expected).max())


@pytest.mark.parametrize("space_name,index", [("nago", i) for i in range(6)] + [("zoo", i) for i in range(6)])
def test_onnx_runtime_matches_pytorch_on_random_points(space_name, index):
    spec = get_space(space_name).sample(random_params(space_name, index), seed=index)
    model = build_model(spec, (3, 32, 32), 10)
    # Non-trivial BatchNorm statistics, so eval-mode folding is really exercised.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    assert _onnx_parity(model, (1, 3, 32, 32)) < 1e-4


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_parity_of_each_zoo_family_on_grey_28px(family):
    model = build_model(spec_from_ref(f"zoo:{family}"), (1, 28, 28), 10)
    assert _onnx_parity(model, (1, 1, 28, 28)) < 1e-4


def test_same_params_same_seed_same_network_other_seed_other_member():
    space = get_space("nago")
    params = {**space.default_params(), "top_nodes": 6, "mid_nodes": 4, "mid_generator": "ws", "bottom_nodes": 5, "bottom_p": 0.8}
    first, again, other = space.sample(params, 7), space.sample(params, 7), space.sample(params, 8)
    assert first == again
    torch.manual_seed(0)
    a = build_model(first, (3, 32, 32), 10)
    torch.manual_seed(0)
    b = build_model(again, (3, 32, 32), 10)
    for (name_a, pa), (name_b, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert name_a == name_b and torch.equal(pa, pb)
    # Another seed: same generator settings, different graphs.
    assert other.params == first.params
    assert other.resolved["cells"] != first.resolved["cells"]
    assert other.resolved["widths"] == first.resolved["widths"]


def test_zoo_family_is_one_architecture_for_every_seed():
    space = get_space("zoo")
    assert space.sample({"family": "resnet"}, 0).resolved == space.sample({"family": "resnet"}, 5).resolved


def test_hyperopt_labels_are_unique_and_prefixed_by_space():
    for name in SPACES:
        labels = [n.arg["label"].obj for n in dfs(as_apply(get_space(name).hyperopt_space())) if n.name == "hyperopt_param"]
        assert labels and len(labels) == len(set(labels))
        assert all(label.startswith(f"{name}.") for label in labels)


def test_zoo_hyperopt_space_is_a_choice_over_families_with_nested_knobs():
    params = random_params("zoo", 3)
    assert set(params) == {"family"} and isinstance(params["family"], dict)
    flat = get_space("zoo").validate_params(params)
    assert flat["family"] == params["family"]["family"]
    assert set(flat) - {"family"} == {k.name for k in FAMILIES[flat["family"]].knobs}


@pytest.mark.parametrize("space_name", ["nago", "zoo"])
def test_default_and_smallest_params_are_valid_and_ordered(space_name):
    space = get_space(space_name)
    default = space.validate_params(space.default_params())
    smallest = space.validate_params(space.smallest_params())
    sizes = {}
    for label, params in (("default", default), ("smallest", smallest)):
        model = build_model(space.sample(params, 0), (3, 32, 32), 10)
        sizes[label] = (count_params(model), count_macs(model, (3, 32, 32)))
    assert sizes["smallest"][0] < sizes["default"][0]
    assert sizes["smallest"][1] < sizes["default"][1]


def test_nago_searches_its_ops_and_still_builds_the_retired_ones():
    """Retired ops are never proposed, but a spec or checkpoint that names one validates and builds."""
    from compressor.spaces.nago import OPS, RETIRED_OPS

    space = get_space("nago")
    assert RETIRED_OPS and not set(OPS) & set(RETIRED_OPS)
    assert {random_params("nago", i)["op"] for i in range(200)} == set(OPS)
    assert space.smallest_params()["op"] in OPS  # the smallest network is one the search can propose
    for op in RETIRED_OPS:
        spec = ArchSpec.from_json(spec_from_ref(f"nago:op={op}", seed=1).to_json())
        assert spec.resolved["op"] == op
        assert build_model(spec, (1, 32, 32), 10)(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_nago_default_is_small_and_the_plain_baseline_is_near_the_reference():
    nago = build_model(spec_from_ref("nago"), (3, 32, 32), 10)
    assert 5_000 < count_params(nago) < 100_000
    plain = build_model(spec_from_ref("zoo:plain"), (3, 32, 32), 10)
    assert 20_000 < count_params(plain) < 45_000


def test_param_budget_derives_the_widest_base_width_within_budget():
    from compressor.spaces.nago_net import count_body_params

    space = get_space("nago")
    spec = space.sample({"param_budget": 50_000}, 0)
    body = count_body_params(spec.resolved)
    assert body <= 50_000
    wider = space.sample({"param_budget": 0, "base_width": spec.resolved["widths"][0] + 1}, 0)
    assert count_body_params(wider.resolved) > 50_000
    with pytest.raises(UserError, match="param_budget"):
        space.sample({"param_budget": 10}, 0)


def test_count_macs_matches_a_hand_computed_plain_network():
    model = build_model(spec_from_ref("zoo:plain:widths=8-8-8,convs=1-1-1"), (1, 8, 8), 2)
    # conv 1->8 at 8x8, pool, conv 8->8 at 4x4, pool, conv 8->8 at 2x2, linear 8->2
    assert count_macs(model, (1, 8, 8)) == 64 * 8 * 9 + 16 * 8 * 72 + 4 * 8 * 72 + 16


def test_spec_from_ref_forms(tmp_path):
    resnet = spec_from_ref("zoo:resnet:depths=1-1-1-1,width=16")
    assert resnet.params == {"family": "resnet", "width": 16, "depth_1": 1, "depth_2": 1, "depth_3": 1, "depth_4": 1}
    assert spec_from_ref("nago").params == get_space("nago").default_params()
    assert spec_from_ref("zoo").params["family"] == "mobilenet_v2"
    path = tmp_path / "net.json"
    path.write_text(resnet.to_json())
    assert spec_from_ref(str(path)) == resnet == load_spec(path)


@pytest.mark.parametrize(
    "ref,message",
    [
        ("mystery", "unknown space 'mystery'; valid: all, nago, zoo"),
        ("zoo:vgg", "unknown zoo family 'vgg'"),
        ("zoo:resnet:width=128", "width=128 is out of range; valid: 8..64"),
        ("nago:op=conv7x7", "op='conv7x7' is not a valid choice"),
        ("nago:top_nodes=2", "top_nodes=2 is out of range"),
        ("zoo:resnet:depths=1-1", "depths needs 4 values"),
        ("nago:base_width", "expected key=value"),
        ("missing.json", "does not exist"),
    ],
)
def test_bad_references_are_one_line_user_errors(ref, message):
    with pytest.raises(UserError) as info:
        spec_from_ref(ref)
    assert message in str(info.value) and "\n" not in str(info.value)


def _edited(spec: ArchSpec, edit) -> str:
    data = json.loads(spec.to_json())
    edit(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    "ref,edit,message",
    [
        ("nago", lambda d: d["resolved"]["cells"][0]["mid"].update(nodes=0), "has 0 nodes"),
        ("nago", lambda d: d["resolved"]["top"]["edges"].append([2, 1]), "edge [2, 1] is invalid"),
        ("nago", lambda d: d["resolved"].update(op="conv9x9"), "is not an operation"),
        ("nago", lambda d: d["resolved"]["cells"][1].update(bottoms=[]), "one graph per mid node"),
        ("nago", lambda d: d["resolved"].update(widths=[16, 32]), "3 stage widths"),
        ("nago", lambda d: d["resolved"].update(stages=[[0, 1], [], [2]]), "non-empty lists"),
        ("nago", lambda d: d["params"].update(top_p=3.0), "top_p=3 is out of range"),
        ("nago", lambda d: d.pop("resolved"), "missing 'resolved'"),
        ("nago", lambda d: d.update(seed=-1), "seed must be a non-negative integer"),
        ("nago", lambda d: d.update(space="gan"), "unknown space 'gan'"),
        ("zoo:resnet", lambda d: d["resolved"]["depths"].__setitem__(0, 9), "does not match its zoo params"),
    ],
)
def test_hand_edited_invalid_specs_are_refused(ref, edit, message):
    with pytest.raises(UserError) as info:
        ArchSpec.from_json(_edited(spec_from_ref(ref, seed=2), edit))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_load_spec_rejects_non_json(tmp_path):
    path = tmp_path / "net.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_spec(path)


def test_hand_edited_but_valid_graph_builds():
    """A person may rewire a graph by hand: a valid DAG is accepted and built as written."""
    spec = spec_from_ref("nago:bottom_nodes=3", seed=0)
    data = json.loads(spec.to_json())
    data["resolved"]["cells"][0]["bottoms"][0] = {"nodes": 3, "edges": [[0, 2], [1, 2]]}
    edited = ArchSpec.from_json(json.dumps(data))
    model = build_model(edited, (3, 32, 32), 10)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 224, 224)])
def test_zoo_small_images_are_not_downsampled_to_nothing(family, shape):
    """Stock torchvision stems leave a 32 px image at 1x1 (stock mobilenet_v3_small: 18.9% on digits)."""
    # Side of the last feature map: total stride 8 (plain: 4, then 16 above 64 px) instead of 32.
    expected = {(3, 32, 32): 4, (1, 28, 28): 4, (3, 224, 224): 7}[shape]
    if family == "plain":
        expected = {(3, 32, 32): 8, (1, 28, 28): 7, (3, 224, 224): 14}[shape]
    model = build_model(spec_from_ref(f"zoo:{family}"), shape, 10).eval()
    final_pool = [m for m in model.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)][-1]
    sides = []
    final_pool.register_forward_hook(lambda _m, inputs, _o: sides.append(inputs[0].shape[-1]))
    with torch.no_grad():
        model(torch.randn(1, *shape))
    assert sides == [expected]


def test_mobilenet_v3_uses_batchnorm_momentum_that_short_training_can_follow():
    model = build_model(spec_from_ref("zoo:mobilenet_v3_small"), (3, 32, 32), 10)
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
