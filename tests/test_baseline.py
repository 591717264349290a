"""The fair hand-designed baseline: the student's recipe, its own lr/KD tuning, a width that fills the budget."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from compressor.errors import UserError
from compressor.search.config import SearchConfig


def _fake_trainer(calls: list, fail_lr_above: float | None = None):
    """Validation accuracy peaks at lr 0.05 with KD at α 0.5 (a smooth, known optimum); records each call."""

    def train(knobs, epochs):
        calls.append((dict(knobs), epochs))
        if fail_lr_above is not None and knobs["lr"] > fail_lr_above:
            raise RuntimeError("non-finite loss (nan) at epoch 1, step 3")
        kd_gap = abs(knobs["kd_alpha"] - 0.5) if knobs["kd"] else 0.3
        return 0.9 - 0.2 * abs(math.log(knobs["lr"] / 0.05)) - 0.1 * kd_gap

    return train


def test_widest_within_takes_the_widest_within_verdict_else_the_narrowest_not_within():
    from compressor.pipeline.baselines import widest_within

    assert widest_within({1: "within", 2: "within", 3: "borderline", 4: "over"}) == (2, True)
    assert widest_within({1: "within", 2: "within", 3: "within"}) == (3, True)
    # a borderline verdict is not "within": the baseline would not be at the same budget
    assert widest_within({1: "within", 2: "borderline"}) == (1, True)
    # noise may put a wider width within and a narrower one not: the widest within is taken
    assert widest_within({1: "within", 2: "over", 3: "within", 4: "over"}) == (3, True)
    assert widest_within({1: "borderline", 2: "over", 3: "over"}) == (1, False)


def test_candidate_widths_scale_the_base_pattern_in_half_steps_within_the_plain_family_knobs():
    from compressor.pipeline.baselines import DEEPER_BASE, PLAIN_SCALES, ladder_widths, plain_arch
    from compressor.spaces import spec_from_ref

    assert plain_arch(1) == "zoo:plain:widths=8-16-32" and plain_arch(3) == "zoo:plain:widths=24-48-96"
    # A half step rounds each width up to the family's step of 8: between 8-16-32 and 16-32-64 lies 16-24-48.
    assert plain_arch(1.5) == "zoo:plain:widths=16-24-48" and plain_arch(1.5, DEEPER_BASE) == "zoo:plain:widths=16-16-24"
    assert PLAIN_SCALES[0] == 1 and PLAIN_SCALES[-1] == 8 and len(PLAIN_SCALES) == 15
    for base in ((8, 16, 32), DEEPER_BASE):
        ladder = [ladder_widths(scale, base) for scale in PLAIN_SCALES]
        for narrower, wider in zip(ladder, ladder[1:]):  # each step widens, none shrinks a stage
            assert narrower != wider and all(a <= b for a, b in zip(narrower, wider))
        for scale, widths in zip(PLAIN_SCALES, ladder):  # every candidate is a valid member of the family
            assert all(w % 8 == 0 and w >= scale * b for w, b in zip(widths, base))
            assert spec_from_ref(plain_arch(scale, base)).resolved["widths"] == widths
    with pytest.raises(UserError, match="out of range"):  # the next step is past the widest knobs
        spec_from_ref(plain_arch(max(PLAIN_SCALES) + 0.5))


def test_the_baseline_recipe_is_the_final_students_training_config_but_for_the_knobs():
    from compressor.search.recipe import recipe_fields, train_config

    config = SearchConfig(batch_size=16, final_epochs=7, fidelities=(2, 4), seed=3)
    knobs = {"lr": 0.03, "kd_alpha": 0.2, "kd_tau": 2.0}
    final = train_config(config, knobs)
    assert (final.epochs, final.batch_size, final.threads, final.seed) == (7, 16, 1, 3)
    assert (final.lr, final.alpha, final.tau) == (0.03, 0.2, 2.0)
    assert final.batch_size != type(final)().batch_size  # the recipe's, not the trainer's default (32)
    short = train_config(config, knobs, epochs=config.fidelities[0], time_budget_s=5.0)
    assert dataclasses.replace(short, epochs=7, time_budget_s=None) == final
    stated = recipe_fields(config)
    assert stated == {k: v for k, v in dataclasses.asdict(final).items() if k not in ("lr", "alpha", "tau",
                                                                                       "time_budget_s")}


def test_tuning_spends_trials_evaluations_at_the_first_fidelity_and_keeps_the_best_on_validation(tmp_path):
    from compressor.pipeline.baselines import knobs_of, tune
    from compressor.search.analysis import best_record
    from compressor.search.store import TrialStore

    calls: list = []
    store = TrialStore(tmp_path / "baseline.sqlite")
    records = tune(SearchConfig(trials=8, fidelities=(2, 6), strategy="trade"), store, _fake_trainer(calls))
    assert len(records) == len(calls) == 8
    assert {epochs for _, epochs in calls} == {2} and {r.fidelity for r in records} == {2}
    assert len({knobs["lr"] for knobs, _ in calls}) == 8  # eight proposals, not one repeated
    for knobs, _ in calls:  # within the search's declared ranges; KD off is alpha 0
        assert 0.01 <= knobs["lr"] <= 0.2 and 1.0 <= knobs["kd_tau"] <= 6.0
        assert knobs["kd"] == (knobs["kd_alpha"] > 0) and 0.0 <= knobs["kd_alpha"] <= 0.9
    best = best_record(records)
    assert best.val_accuracy == max(r.val_accuracy for r in records)
    assert knobs_of(best.params) == max((k for k, _ in calls), key=lambda k: _fake_trainer([])(k, 2))
    assert len(store.records()) == 8
    # The first evaluation is the search's own first KD point: the trainer's defaults, KD on.
    from compressor.search.config import kd_knobs

    assert calls[0][0] == {"kd": True, **{k.name: k.default for k in kd_knobs()}}


def test_the_knob_sets_trained_in_full_are_the_tunings_best_then_the_best_at_a_temperature_apart():
    from compressor.pipeline.baselines import FINAL_KNOB_SETS, TAU_APART, knobs_of, top_knobs
    from compressor.search.store import TrialRecord

    def evaluated(proposal, lr, alpha, accuracy, status="ok", tau=4.0):
        return TrialRecord(proposal=proposal, fidelity=1, status=status, seeds=[0], val_accuracy=accuracy,
                           params={"lr": lr, "kd": {"kd_alpha": alpha, "kd_tau": tau}})

    records = [evaluated(0, 0.1, 0.5, 0.30), evaluated(1, 0.2, 0.9, 0.41), evaluated(2, 0.2, 0.9, 0.41),
               evaluated(3, 0.05, 0.0, 0.12), evaluated(4, 0.15, 0.7, None, status="failed"),
               evaluated(5, 0.1, 0.5, 0.35)]
    top = top_knobs(records)
    # the same set evaluated twice is one set; a failure is none; a tie of scores goes to the earlier proposal
    assert FINAL_KNOB_SETS == 2 and top == [knobs_of(records[1].params), knobs_of(records[0].params)]
    assert top_knobs(records, count=3)[2] == knobs_of(records[3].params) and not top_knobs(records, count=3)[2]["kd"]
    assert top_knobs(records, count=1) == top[:1] and top_knobs(records[4:5]) == []
    # one epoch cannot tell τ apart: the second set is the best whose τ is TAU_APART x from the first's, KD on in
    # both, ranked below closer ones or not; the next best when none is
    near, far, farther = (evaluated(6 + i, 0.1, 0.5, accuracy, tau=tau)
                          for i, (accuracy, tau) in enumerate([(0.40, 5.0), (0.20, 4.0 / TAU_APART), (0.10, 1.0)]))
    warm = evaluated(9, 0.2, 0.9, 0.45, tau=4.1)
    assert top_knobs([warm, near, far, farther]) == [knobs_of(warm.params), knobs_of(far.params)]
    assert top_knobs([warm, near]) == [knobs_of(warm.params), knobs_of(near.params)]
    assert top_knobs([warm, near, far, farther], count=3)[2] == knobs_of(farther.params)  # apart from both
    assert top_knobs([warm, near, far], count=3)[2] == knobs_of(near.params)
    off = evaluated(10, 0.05, 0.0, 0.50)  # KD off has no temperature: the next best follows it
    assert top_knobs([off, warm, far]) == [knobs_of(off.params), knobs_of(warm.params)]


@pytest.mark.slow
def test_a_later_knob_set_is_kept_only_when_clearly_ahead_after_the_final_training():
    import torch

    from compressor.data.datasets import load_dataset
    from compressor.pipeline.baselines import train_final
    from compressor.spaces import spec_from_ref

    data = load_dataset("digits", image_size=8, channels=1)
    logits = {split: torch.zeros(len(getattr(data, f"{split}_y")), data.num_classes) for split in ("train", "val", "test")}
    spec = spec_from_ref("zoo:plain:widths=8-16-32", seed=0)
    config = SearchConfig(final_epochs=2)
    crawling, learning = ({"lr": lr, "kd_alpha": 0.0, "kd_tau": 4.0, "kd": False} for lr in (0.0001, 0.1))
    lines: list = []
    (model, result, knobs), trainings = train_final(spec, data, config, logits, [crawling, learning], lines.append)
    # lr 1e-4 for 2 epochs stays near chance: the second set is ahead by far more than the paired noise
    assert [t["kept"] for t in trainings] == [False, True] and knobs == learning
    assert trainings[1]["val_accuracy"] - trainings[0]["val_accuracy"] > 0.3
    assert result.val_accuracy == trainings[1]["val_accuracy"] and model is not None
    assert lines[-1] == f"baseline: knob set 2 kept, val {100 * result.val_accuracy:.2f}%"
    # the same knobs twice train alike: no lead at all, the tuning's best (the first) is kept
    (_, again, knobs), trainings = train_final(spec, data, config, logits, [learning, learning])
    assert [t["kept"] for t in trainings] == [True, False] and again.val_accuracy == result.val_accuracy
    # every training failing is no model and the last failure
    poisoned = dataclasses.replace(data, train_x=torch.full_like(data.train_x, float("nan")))
    (model, failed, knobs), trainings = train_final(spec, poisoned, config, logits, [learning])
    assert model is None and knobs is None and failed.status != "ok" and not trainings[0]["kept"]


def test_tuning_resumes_where_it_stopped_and_failures_are_failed_trials(tmp_path):
    from compressor.pipeline.baselines import tune
    from compressor.search.analysis import best_record
    from compressor.search.store import TrialStore

    config = SearchConfig(trials=5, fidelities=(1,))
    first: list = []

    def interrupted(knobs, epochs):
        if len(first) == 3:
            raise KeyboardInterrupt
        return _fake_trainer(first, fail_lr_above=0.0)(knobs, epochs)  # every training fails

    store = TrialStore(tmp_path / "baseline.sqlite")
    with pytest.raises(KeyboardInterrupt):
        tune(config, store, interrupted)
    assert [r.status for r in store.records()] == ["failed"] * 3
    assert store.records()[0].reason.startswith("RuntimeError: non-finite loss")
    again: list = []
    records = tune(config, store, _fake_trainer(again))
    assert len(again) == 2 and len(records) == 5  # the three stored evaluations are not run again
    assert best_record(records).proposal in (3, 4)


def test_a_tuning_store_of_another_run_is_emptied(tmp_path):
    from compressor.pipeline.baselines import open_tuning_store, tune

    path = tmp_path / "baseline.sqlite"
    store = open_tuning_store(path, {"started_at": 1.0})
    tune(SearchConfig(trials=2, fidelities=(1,)), store, _fake_trainer([]))
    store.set_meta("width", {"arch": "zoo:plain:widths=8-16-32"})
    store.close()
    same = open_tuning_store(path, {"started_at": 1.0})
    assert len(same.records()) == 2 and same.get_meta("width")
    same.close()
    other = open_tuning_store(path, {"started_at": 2.0})
    assert other.records() == [] and other.get_meta("width") is None
    assert other.get_meta("identity") == {"started_at": 2.0}
    other.close()


@pytest.mark.slow
def test_the_width_choice_on_cpu_1t_is_the_widest_within_of_the_ladder_and_its_stage_steps(fast_target):
    from compressor.data.datasets import load_dataset
    from compressor.models.on_target import DriftReference
    from compressor.pipeline.baselines import PLAIN_SCALES, choose_width

    data = load_dataset("digits", image_size=16, channels=1)
    # A budget between the narrowest and the widest candidate's latency, so the choice is not an end point.
    reference = DriftReference.start(fast_target, data.input_shape, data.num_classes)
    target = fast_target.with_budgets(latency_ms=4 * reference.start_ms)
    width = choose_width(target, data, seed=0, seconds_each=0.1, reference=reference, deeper=True)
    assert width["deeper"]["convs"] == [1, 2, 2] and width["deeper"]["arch"].endswith(",convs=1-2-2")
    for ladder in (width, width["deeper"]):
        candidates = ladder["candidates"]
        coarse = [c for c in candidates if c["session"].startswith("baseline-widths")]
        steps = [c for c in candidates if c["session"].startswith("baseline-steps")]
        assert len(coarse) == len(PLAIN_SCALES) and len(coarse) + len(steps) == len(candidates)
        assert len({c["session"] for c in coarse}) == 1 and len({c["session"] for c in steps}) <= 1
        widths = [[int(w) for w in c["arch"].split("widths=")[1].split(",")[0].split("-")] for c in candidates]
        for narrower, wider in zip(widths, widths[1:]):  # in ladder order: each candidate widens, none shrinks a stage
            assert narrower != wider and all(a <= b for a, b in zip(narrower, wider))
        if steps:  # measured only above a width within, one stage moved at a time, the last stage first
            first = candidates.index(steps[0])
            assert candidates[first - 1]["verdict"] == "within" and widths[first][:2] == widths[first - 1][:2]
            run = widths[first - 1:first + len(steps) + 1]  # the width within, its steps, the next width of the ladder
            assert all(sum(a != b for a, b in zip(x, y)) == 1 for x, y in zip(run, run[1:]))
        verdicts = [c["verdict"] for c in candidates]
        chosen = [c["arch"] for c in candidates].index(ladder["arch"])
        assert ladder["widths"] == ladder["arch"].split("widths=")[1].split(",")[0]
        assert ladder["session"] == candidates[chosen]["session"]
        if ladder["within"]:
            assert ladder["verdict"] == "within" and "within" not in verdicts[chosen + 1:]
        else:
            assert chosen == 0 and "within" not in verdicts and not steps
        assert ladder["params"] > 0 and ladder["profile"]["latency_ms"]["p50"] > 0


@pytest.mark.slow
def test_a_baseline_whose_trainings_all_fail_is_a_failed_baseline_with_its_reason(tmp_path):
    import torch
    from targets import load_target

    from compressor.data.datasets import load_dataset
    from compressor.pipeline.baselines import hand_designed_baseline, open_tuning_store

    data = load_dataset("digits", image_size=16, channels=1)
    poisoned = dataclasses.replace(data, train_x=torch.full_like(data.train_x, float("nan")))
    logits = {split: torch.zeros(len(getattr(data, f"{split}_y")), data.num_classes) for split in ("train", "val", "test")}
    store = open_tuning_store(tmp_path / "baseline.sqlite", "run")
    result = hand_designed_baseline(poisoned, load_target("cpu-1t").with_budgets(latency_ms=50.0),
                                    SearchConfig(trials=2, fidelities=(1,), profile_seconds=0.1), logits, store=store)
    store.close()
    assert result["status"] == "failed"
    assert result["reason"].startswith("tuning: 2 failed (RuntimeError: non-finite loss")
    assert result["tuning"]["evaluations"] == 2 and result["tuning"]["best"] is None
    assert "test_accuracy" not in result


@pytest.mark.slow
def test_compress_trains_the_baseline_on_the_students_terms_and_keeps_it_on_resume(tiny_teacher, tight_latency_ms,
                                                                                  quick_target, tmp_path,
                                                                                  monkeypatch):
    import compressor.train.distill as distill
    from compressor.pipeline.compress import DataOptions, compress

    seen: list = []
    real = distill.train_student

    def recording(model, dataset, config, **kw):  # the real trainer, its TrainConfig noted
        seen.append((config, kw.get("evaluate_test")))
        return real(model, dataset, config, **kw)

    monkeypatch.setattr(distill, "train_student", recording)
    options = dict(target=quick_target, data="digits", cache_dir=tmp_path / "cache", latency_ms=tight_latency_ms, trials=3,
                   family_size=1, fidelities=(1, 2), eta=3, final_epochs=2, finalists=1, profile_seconds=0.1, export=False,
                   baseline=True, data_options=DataOptions(image_size=16, channels=1))
    run = tmp_path / "run"
    report = compress(tiny_teacher, out=run, **options).report
    [baseline] = report["baselines"]
    finals = [config for config, with_test in seen if with_test]
    # each searched finalist's final trainings (the best family, then a budget-filling warm start not among
    # it), then the baseline's: one per knob set of the two its tuning gives (baselines.top_knobs)
    trained = baseline["final_trainings"]
    assert len(report["student"]["finalists"]) >= 2 and 1 <= len(trained) <= 2 == baseline["finishing"]["knob_sets"]
    knobs = dict(lr=0.1, alpha=0.5, tau=4.0)
    *searched, fair = (dataclasses.replace(c, **knobs) for c in finals)
    assert all(c == fair for c in searched) and fair.batch_size == 16 and fair.epochs == 2 and fair.threads == 1
    ours = finals[-len(trained):]
    assert [(c.lr, c.alpha, c.tau) for c in ours] == [(t["lr"], t["kd_alpha"], t["kd_tau"]) for t in trained]
    [kept] = [t for t in trained if t["kept"]]
    assert kept is trained[0] or kept["val_accuracy"] > trained[0]["val_accuracy"]  # a later one only when ahead
    assert kept["val_accuracy"] == baseline["val_accuracy"]
    assert (kept["lr"], kept["kd_alpha"], kept["kd_tau"]) == (baseline["lr"], baseline["kd_alpha"], baseline["kd_tau"])
    tuning = [config for config, with_test in seen[-3 - len(trained):-len(trained)]]
    assert [c.epochs for c in tuning] == [1, 1, 1] and {c.batch_size for c in tuning} == {16}
    assert baseline["tuning"]["evaluations"] == 3 and baseline["tuning"]["fidelity"] == 1
    assert baseline["tuning"]["val_accuracy"] == max(r["val_accuracy"] for r in _records(run / "baseline.sqlite"))
    assert baseline["recipe"]["batch_size"] == 16 and baseline["recipe"]["epochs"] == 2
    assert baseline["width"]["arch"] == baseline["arch"] and baseline["meets_budget"] == baseline["width"]["within"]
    assert baseline["at_same_budget"] == (baseline["within_budget"] is True)
    assert "tuned" in (run / "report.md").read_text()
    on_disk = json.loads((run / "report.json").read_text())["baselines"][0]
    assert on_disk["tuning"] == baseline["tuning"] and on_disk["width"]["session"] == baseline["width"]["session"]
    # a finished run resumed trains nothing: the baseline is read from the run's store
    seen.clear()
    again = compress(tiny_teacher, out=run, resume=True, **options).report
    assert seen == [] and again["baselines"] == report["baselines"]


def _records(path):
    from compressor.search.store import TrialStore

    store = TrialStore(path)
    try:
        return [r.to_dict() for r in store.records()]
    finally:
        store.close()
