"""Warm starts, the union space, the final choice's tie rule, KD knobs unpenalised by over-budget trials, Pareto per fidelity.

Fast and without torch (except the marked build sweep): the schedule runs with
a fake evaluator over the real spaces' hyperopt spaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hyperopt import hp, space_eval
from hyperopt.base import miscs_to_idxs_vals
from hyperopt.tpe import ap_split_trials

from compressor.errors import UserError
from compressor.search.analysis import best_record, pareto_front
from compressor.search.config import SearchConfig, kd_hyperopt_space, kd_knobs, warm_start_points
from compressor.search.schedule import Schedule
from compressor.search.store import TrialRecord, TrialStore
from compressor.search.strategies import HyperoptStrategy, penalty_loss
from compressor.spaces import ArchSpec, get_space

KD_LABELS = [k.name for k in kd_knobs()]


def _hyperopt_space(space_name: str) -> dict:
    return {"arch": get_space(space_name).hyperopt_space(), **kd_hyperopt_space()}


# --- the warm-start points --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("space_name", ["nago", "zoo", "all"])
def test_each_warm_start_is_its_group_default_and_hyperopt_decodes_its_labels_back_to_it(space_name):
    space = get_space(space_name)
    warm = warm_start_points(space)
    assert [w.group for w in warm] == list(space.search_groups())
    for w in warm:
        params = w.params(space)
        assert {k: params[k] for k in KD_LABELS} == {k.name: k.default for k in kd_knobs()}
        # hyperopt's space_eval of the labels gives back the point (the inverse of Space.hyperopt_point)
        decoded = space_eval(_hyperopt_space(space_name), w.hyperopt_point(space))
        assert space.validate_params(decoded["arch"]) == space.validate_params(params["arch"])
        assert {k: decoded[k] for k in KD_LABELS} == pytest.approx({k: params[k] for k in KD_LABELS})
    if space_name != "nago":
        assert warm[0 if space_name == "zoo" else 1].params(space)["arch"]["family"] == "plain"


@dataclass
class FamilyFake:
    """Accuracy and latency by family (nago counts as one); resnet is over budget. Records what it evaluated."""

    space_name: str
    crash_at: int | None = None
    calls: list[int] = field(default_factory=list)

    def __call__(self, record: TrialRecord, previous: TrialRecord | None) -> None:
        if record.proposal == self.crash_at:
            raise KeyboardInterrupt  # stands for a kill: not an Exception, so not a failed trial
        self.calls.append(record.proposal)
        arch = get_space(self.space_name).validate_params(record.params["arch"])
        family = arch.get("family", "nago")
        record.latency_ms = 1.0 + len(family) / 10
        if family == "resnet":
            record.status, record.reason, record.loss = "infeasible", "latency over budget", penalty_loss(0.5)
            return
        record.val_accuracy = 0.5 + len(family) / 40 - (record.params["kd_alpha"] - 0.4) ** 2


def _schedule(path: Path, evaluate: FamilyFake, **knobs) -> list[TrialRecord]:
    config = SearchConfig(**{"family_size": 1, "fidelities": (1,), "trials": 9, "space": evaluate.space_name,
                             **knobs}).validate()
    store = TrialStore(path)
    try:
        return Schedule(config=config, store=store, evaluate=evaluate,
                        space=_hyperopt_space(evaluate.space_name)).run()
    finally:
        store.close()


def _arch(space_name: str, params: dict) -> dict:
    return get_space(space_name).validate_params(params["arch"])


@pytest.mark.parametrize("strategy", ["tpe", "random", "trade"])
def test_warm_starts_are_proposed_first_in_order_by_every_strategy(tmp_path, strategy):
    space = get_space("all")
    records = _schedule(tmp_path / "t.sqlite", FamilyFake("all"), strategy=strategy)
    warm = warm_start_points(space)
    first = records[:len(warm)]
    assert [_arch("all", r.params) for r in first] == [space.validate_params(w.params(space)["arch"]) for w in warm]
    assert [{k: r.params[k] for k in KD_LABELS} for r in first] == [w.kd for w in warm]
    # the over-budget warm start (resnet) was screened, not trained: trials still counts trained families
    assert [r.status for r in first].count("infeasible") == 1
    assert sum(r.status == "ok" for r in records) == 9


@pytest.mark.parametrize("strategy", ["tpe", "trade"])
def test_a_resumed_search_proposes_the_warm_starts_first_again_in_the_same_order(tmp_path, strategy):
    whole = FamilyFake("zoo")
    expected = _schedule(tmp_path / "whole.sqlite", whole, strategy=strategy)
    with pytest.raises(KeyboardInterrupt):
        _schedule(tmp_path / "resumed.sqlite", FamilyFake("zoo", crash_at=3), strategy=strategy)
    resumed = FamilyFake("zoo")
    records = _schedule(tmp_path / "resumed.sqlite", resumed, strategy=strategy)
    assert resumed.calls == whole.calls[3:]
    assert [(r.proposal, r.params, r.misc, r.status) for r in records] == \
        [(r.proposal, r.params, r.misc, r.status) for r in expected]
    assert [_arch("zoo", r.params)["family"] for r in records[:6]] == list(get_space("zoo").search_groups())


# --- what TPE learns from an over-budget trial ------------------------------------------------------------------------

def _told(n_feasible: int, n_infeasible: int) -> HyperoptStrategy:
    """Proposals asked from a TPE strategy (its random start-up) and told: feasible ones, then over-budget ones
    whose KD knobs are extreme (the corner TPE would learn to avoid if their penalty were held against them)."""
    space = {"arch": {"width": hp.uniform("width", 0.0, 1.0)}, **kd_hyperopt_space()}
    strategy = HyperoptStrategy(SearchConfig(strategy="tpe", seed=3, trials=100), space)
    for proposal in range(n_feasible + n_infeasible):
        params, misc = strategy.ask(proposal)
        record = TrialRecord(proposal=proposal, fidelity=1, status="ok", params=params, seeds=[proposal], misc=misc)
        if proposal < n_feasible:
            record.val_accuracy = 0.9 - abs(params["kd_alpha"] - 0.3)
            record.loss = -record.val_accuracy
        else:
            extreme = {"kd_alpha": 0.9, "kd_tau": 6.0, "lr": 0.2}
            record.misc = {"vals": {**misc["vals"], **{k: [v] for k, v in extreme.items()}}}
            record.status, record.loss = "infeasible", penalty_loss(3.0)
        strategy.tell([record])
    return strategy


def _observations(strategy: HyperoptStrategy) -> tuple[dict, dict, list, list]:
    """What tpe.suggest builds from the history: each label's observed (idxs, vals), and every trial's loss."""
    docs = strategy.trials.trials
    idxs, vals = miscs_to_idxs_vals([d["misc"] for d in docs], keys=["width", *KD_LABELS])
    return idxs, vals, [d["tid"] for d in docs], [d["result"]["loss"] for d in docs]


def test_over_budget_trials_leave_tpes_kd_observations_and_their_good_and_bad_split_unchanged():
    plain, with_penalties = _told(10, 0), _told(10, 3)
    idxs_a, vals_a, tids_a, losses_a = _observations(plain)
    idxs_b, vals_b, tids_b, losses_b = _observations(with_penalties)
    # the architecture learns where the budget lies: the over-budget trials are its observations...
    assert idxs_b["width"] == idxs_a["width"] + [10, 11, 12]
    for label in KD_LABELS:
        # ...but not the KD knobs': no 0.9 / 6 / 0.2 among their observed values
        assert (idxs_b[label], vals_b[label]) == (idxs_a[label], vals_a[label])
        # and TPE's below/above split of each KD label (its two densities' samples) is the same, so its KD
        # proposals are distributed as without the over-budget trials (ceil(0.25 sqrt(N)) = 1 for N = 10 and 13)
        below_a, above_a = ap_split_trials(idxs_a[label], vals_a[label], tids_a, losses_a, 0.25)
        below_b, above_b = ap_split_trials(idxs_b[label], vals_b[label], tids_b, losses_b, 0.25)
        assert below_b.tolist() == below_a.tolist() and sorted(above_b.tolist()) == sorted(above_a.tolist())
    # the stored misc keeps the values the trial had (what a resume tells again): only hyperopt's copy is blank
    assert with_penalties.trials.trials[12]["result"]["infeasible"] is True


def test_tpe_still_proposes_after_over_budget_trials_with_unobserved_kd_labels():
    strategy = _told(10, 3)
    params, misc = strategy.ask(13)  # past the start-up: a TPE proposal over the blanked history
    assert all(len(misc["vals"][k]) == 1 for k in ["width", *KD_LABELS])
    assert 0.0 <= params["kd_alpha"] <= 0.9


# --- the union space --------------------------------------------------------------------------------------------------

def test_the_union_is_nagos_group_and_the_zoo_families_and_its_members_name_their_own_space():
    union, nago, zoo = get_space("all"), get_space("nago"), get_space("zoo")
    assert union.search_groups() == {**nago.search_groups(), **zoo.search_groups()}
    assert union.group_params("resnet", {"width": 24})["space"] == "zoo"
    for params, member in [({"space": "nago", "top_nodes": 4}, nago), ({"space": "zoo", "family": "resnet"}, zoo),
                           ({"member": {"space": "zoo", "family": "plain", "width_1": 24}}, zoo)]:
        spec = union.sample(params, seed=5)
        assert spec.space == member.name
        again = ArchSpec.from_json(spec.to_json())
        assert again == spec and again == member.sample(dict(spec.params), seed=5)
    assert union.validate_params({})["space"] == "nago"  # nago stays the default
    with pytest.raises(UserError, match="unknown member space 'cifar'"):
        union.sample({"space": "cifar"}, 0)
    with pytest.raises(UserError, match="names its member space"):
        member = union.sample({"space": "zoo", "family": "plain"}, 0).to_dict()
        ArchSpec.from_dict({**member, "space": "all", "params": {"space": "zoo", **member["params"]}})


@pytest.mark.slow
def test_union_members_of_every_group_build_forward_and_rebuild_from_json():
    import numpy as np
    import torch
    from hyperopt.pyll.stochastic import sample as hyperopt_sample

    from compressor.spaces import build_model

    union, kinds = get_space("all"), set()
    # every group's warm start (nago and each zoo family), then random points as hyperopt draws them
    points = [w.params(union)["arch"] for w in warm_start_points(union)]
    points += [hyperopt_sample(union.hyperopt_space(), rng=np.random.default_rng(i)) for i in range(3)]
    for index, params in enumerate(points):
        spec = union.sample(params, seed=index)
        kinds.add(spec.space)
        torch.manual_seed(index)
        model = build_model(spec, (3, 16, 16), 5)
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
        rebuilt = build_model(ArchSpec.from_json(spec.to_json()), (3, 16, 16), 5)
        assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    assert kinds == {"nago", "zoo"}


# --- the final choice and the fronts ----------------------------------------------------------------------------------

def _rec(proposal: int, fidelity: int, acc: float, latency: float, status: str = "ok") -> TrialRecord:
    return TrialRecord(proposal=proposal, fidelity=fidelity, status=status, params={}, seeds=[proposal],
                       val_accuracy=acc, latency_ms=latency)


def test_a_tie_within_the_tolerance_goes_to_the_faster_family_and_a_clear_winner_keeps_its_place():
    one_image = 1 / 360
    records = [_rec(0, 3, 0.950, 2.0), _rec(1, 3, 0.950 - one_image / 2, 0.5), _rec(2, 3, 0.94, 0.1),
               _rec(3, 1, 0.99, 0.05)]  # a lower fidelity never competes with the highest
    assert best_record(records, tolerance=one_image).proposal == 1
    assert best_record(records).proposal == 0  # no tolerance: the most accurate
    records[1].val_accuracy = 0.950 - 2 * one_image
    assert best_record(records, tolerance=one_image).proposal == 0
    # equal accuracy and latency: the earlier proposal
    assert best_record([_rec(4, 1, 0.9, 1.0), _rec(2, 1, 0.9, 1.0)], tolerance=one_image).proposal == 2


def test_the_pareto_front_is_computed_per_fidelity():
    records = [
        _rec(0, 1, 0.60, 0.1), _rec(1, 1, 0.70, 0.3), _rec(2, 1, 0.65, 0.5),  # 2 is dominated by 1 after 1 epoch
        _rec(1, 3, 0.80, 0.3), _rec(2, 3, 0.85, 0.5),  # after 3 epochs 2 is the more accurate
        _rec(3, 1, None, 0.05, status="infeasible"),
    ]
    front = pareto_front(records)
    assert [(p["fidelity"], p["proposal"]) for p in front] == [(1, 0), (1, 1), (3, 1), (3, 2)]
    assert all(a["latency_ms"] <= b["latency_ms"] for a, b in zip(front, front[1:]) if a["fidelity"] == b["fidelity"])
