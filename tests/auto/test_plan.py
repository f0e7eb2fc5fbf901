"""``maskclf auto``'s pure parts: presets, the budget plan, ensemble selection."""

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from maskclf.auto.plan import ladder, ladder_seconds, plan_study
from maskclf.auto.preset import Preset, load_preset
from maskclf.auto.selection import held_out_check, select
from maskclf.config import ConfigError
from maskclf.errors import UsageError
from maskclf.labels import encode_class
from maskclf.metrics import macro_f1
from tests.helpers.fake_runs import fake_run, labelled_persons, probabilities


def _preset(**changes) -> Preset:
    return Preset.model_validate({"base": "demo", "candidates": [{"name": f"c{i}"}
                                                                for i in range(9)],
                                  "folds": 5, "screen_epochs": 2, "eta": 3, "max_epochs": 10,
                                  "survivors": 2, **changes})


def test_successive_halving_keeps_a_third_and_triples_the_epochs():
    rungs = ladder(9, _preset(), None)
    assert [(r.count, r.epochs) for r in rungs] == [(9, 2), (3, 6), (2, 10)]
    # without a k-fold stage the last rung trains the survivors to the epochs asked for
    assert [(r.count, r.epochs) for r in ladder(5, _preset(), 8)] == [(5, 2), (2, 8)]
    # screening's cost: rung 0 trains 2 epochs of all, rung 1 4 more of the survivors
    assert ladder_seconds(ladder(5, _preset(), 6), [1.0, 2.0, 3.0, 4.0, 5.0]) == (
        2 * 15 + 4 * (5 + 4))


def test_a_large_budget_adds_kfold_and_a_small_one_drops_candidates_first():
    names = [f"c{i}" for i in range(5)]
    epoch_s = dict.fromkeys(names, 10.0)
    preset = _preset(candidates=[{"name": n} for n in names])
    large = plan_study(10_000, preset, names, epoch_s, 20)
    assert large.kfold_epochs == 10 and large.candidates == names
    assert sum(large.stage_s.values()) <= 10_000
    # 5 x 2 + 2 x 8 epochs of 10 s fit 600 s less the reserve; k-fold (10 networks, their
    # prediction reserved as well) does not fit its 7 epochs
    medium = plan_study(600, preset, names, epoch_s, 20)
    assert medium.kfold_epochs == 0 and medium.candidates == names
    assert medium.stage_s["screening"] <= 600 - medium.reserve_s
    assert medium.rungs[-1].epochs == 10
    # the members have their full 10 epochs with time to spare: four of the five go on
    # (a larger ensemble), not two
    assert [r.count for r in medium.rungs] == [5, 4]
    # 100 s: fewer candidates rather than a final stage under 7 epochs
    small = plan_study(100, preset, names, epoch_s, 2)
    assert small.candidates == ["c0"] and small.rungs[-1].epochs == 8
    # 25 s: one epoch of one candidate is all that fits (8 s + 1.5 x 2 s are kept to
    # finish); 9 s not even that
    assert plan_study(25, preset, names, epoch_s, 2).rungs[-1].epochs == 1
    with pytest.raises(UsageError, match=r"give at least --budget \d+s"):
        plan_study(9, preset, names, epoch_s, 2)


def test_the_cpu_preset_buys_full_length_members_before_screening():
    """faces-real's measured epoch seconds (2 cores): at 30 minutes two members of the
    preset's full 15 epochs and nothing screened; at an hour five screened, four go on;
    at an hour and a half or two the survivors k-fold. Members are never cut short for one
    more screened candidate."""
    settings, configs, _ = load_preset("cpu")
    epoch_s = {"freeze2": 48.4, "recipe": 58.9, "boundary-ages": 54.2, "half-cutmix": 54.2,
               "multihead": 53.5}
    names = list(configs)
    half_hour = plan_study(1793, settings, names, epoch_s, 6.4)
    assert half_hour.candidates == ["freeze2", "recipe"] and half_hour.kfold_epochs == 0
    assert [(r.count, r.epochs) for r in half_hour.rungs] == [(2, 15)]
    hour = plan_study(3590, settings, names, epoch_s, 6.4)
    assert [(r.count, r.epochs) for r in hour.rungs] == [(5, 2), (4, 15)]
    assert plan_study(7190, settings, names, epoch_s, 6.4).kfold_epochs >= 9
    # an hour and a half: the first two k-fold, with no two-epoch screening both would pass
    hour_and_half = plan_study(5400, settings, names, epoch_s, 6.4)
    assert hour_and_half.rungs == [] and hour_and_half.kfold_epochs >= 9
    assert hour_and_half.candidates == ["freeze2", "recipe"]
    # with an outside source (40 % of each epoch: slower epochs) two members of 15 epochs
    # do not fit half an hour: shorter members, still nothing screened
    settings, configs, _ = load_preset("cpu", {Path("/faces"): 300})
    outside = plan_study(1793, settings, list(configs), {**epoch_s, "outside": 98.0}, 6.4)
    assert outside.candidates == ["outside", "freeze2"]
    assert [(r.count, r.epochs) for r in outside.rungs] == [(2, 12)]


def test_packaged_presets_build_every_candidate():
    for name in ("cpu", "gpu", "demo"):
        settings, configs, _ = load_preset(name)
        assert list(configs) == [c.name for c in settings.candidates if not c.outside_share]
        assert all(cfg.data.folds == settings.folds for cfg in configs.values())
        _, with_outside, _ = load_preset(name, {Path("/faces"): 10})
        assert list(with_outside) == [c.name for c in settings.candidates]


def test_outside_candidates_split_their_share_between_the_sources_by_size():
    from maskclf.auto.plan import epoch_images

    _, configs, _ = load_preset("cpu", {Path("/faces"): 300, Path("/masks"): 100})
    sources = configs["outside"].data.external
    assert [(str(s.path), s.share) for s in sources] == [("/faces", pytest.approx(0.3)),
                                                         ("/masks", pytest.approx(0.1))]
    assert not configs["recipe"].data.external  # the others train on the competition's rows
    assert epoch_images(configs["outside"], 600) == 1000  # 40 % of the epoch is outside
    assert epoch_images(configs["recipe"], 600) == 600
    split = configs["outside"].model_copy(update={"model": configs["outside"].model.model_copy(
        update={"outside_batchnorm": "split"})})
    assert epoch_images(split, 600) == 1200  # half of every batch


@pytest.mark.parametrize(("text", "message"), [
    ("base: demo\ncandidates: [{name: a, overrides: [optim.lrr=1]}]\n",
     r"candidate 'a'.*optim\.lrr"),
    ("base: demo\ncandidates: [{name: a}, {name: a}]\n", r"candidate names repeat"),
    ("base: demo\ncandidates: [{name: A b}]\n", r"lower-case"),
    ("base: demo\nsurvivor: 2\ncandidates: [{name: a}]\n", r"survivor: Extra inputs"),
    ("base: demo\ncandidates: []\n", r"candidates"),
    ("base: !!python/object:os.system x\n", r"not plain YAML"),
])
def test_a_bad_preset_is_named_with_the_file_and_the_candidate(tmp_path, text, message):
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_preset(str(path))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def _members(rng: np.random.Generator, y: np.ndarray, knows: list[str], noise: float):
    """Class probabilities as the product of attribute marginals: peaked at the truth (a
    ``noise`` share of rows at a wrong value) for the attributes in ``knows``, flat for the
    rest."""
    from maskclf import labels

    parts = dict(zip(labels.ATTRIBUTES, labels.decode_class(y), strict=True))
    marginals = []
    for name, size in labels.ATTRIBUTE_SIZES.items():
        if name not in knows:
            marginals.append(np.full((len(y), size), 1.0 / size))
            continue
        value = np.where(rng.random(len(y)) < noise, rng.integers(0, size, len(y)),
                         parts[name])
        marginal = np.full((len(y), size), 0.1 / size)
        marginal[np.arange(len(y)), value] += 0.9
        marginals.append(marginal)
    mask, gender, age = marginals
    classes = np.arange(18)
    m, g, a = labels.decode_class(classes)
    assert np.array_equal(encode_class(m, g, a), classes)
    return mask[:, m] * gender[:, g] * age[:, a]


def test_the_ensemble_never_scores_below_its_best_member_on_the_rows_it_was_fitted_on():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 18, 300)
        probs = [rng.dirichlet(np.ones(18), 300) for _ in range(4)]
        chosen = select(probs, y, np.arange(300) // 5, rounds=8, finalists=[0, 1])
        assert chosen.ensemble_f1 >= max(macro_f1(y, p.argmax(1)) for p in probs) - 1e-12
        assert chosen.weights.sum() == pytest.approx(1.0)


def test_members_that_know_different_attributes_are_combined_and_hold_up_on_new_persons():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 18, 900)
    mask_expert = _members(rng, y, ["mask"], 0.1)
    person_expert = _members(rng, y, ["gender", "age"], 0.1)
    confidently_wrong = _members(rng, y, ["mask", "gender", "age"], 1.0)  # random, peaked
    chosen = select([confidently_wrong, mask_expert, person_expert], y, np.arange(900) // 7,
                    finalists=[0, 1, 2])
    assert chosen.used_ensemble and chosen.way == "greedy"  # the wrong member is left out
    assert chosen.weights[0] == 0 and chosen.weights[1] > 0 and chosen.weights[2] > 0
    held = chosen.check["held_out"]
    assert held["greedy"] > max(held["best member"], held["uniform"]) + 0.05
    assert chosen.ensemble_f1 > chosen.best_member_f1 + 0.05


def test_a_blend_replaces_the_best_member_only_beyond_noise():
    rng = np.random.default_rng(2)
    fallbacks = 0
    for _ in range(10):  # pure-noise members: any gain on the fitted rows is chance
        y = rng.integers(0, 18, 120)
        probs = [rng.dirichlet(np.ones(18), 120) for _ in range(5)]
        persons = np.arange(120) // 4
        chosen = select(probs, y, persons, rounds=10, finalists=[0, 1])
        splits, decided = held_out_check(probs, y, persons, 10, [0, 1])
        assert splits == 5
        assert chosen.check["held_out"] == {w: macro_f1(y, d) for w, d in decided.items()}
        gains = chosen.check["gain_over_best_member"]
        assert set(gains) == {"uniform", "greedy"}
        for gain in gains.values():
            assert gain["low"] <= gain["value"] <= gain["high"]
        if chosen.way == "best member":
            fallbacks += 1
            assert np.array_equal(chosen.weights, np.eye(5)[chosen.best_member])
            assert chosen.ensemble_f1 == pytest.approx(chosen.best_member_f1)
        else:
            assert gains[chosen.way]["low"] > 0
    assert fallbacks >= 9  # before the interval, chance gains chose a blend in 7 of these 10


def test_strong_finalists_that_disagree_by_chance_are_averaged_uniformly():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 18, 700)
    finalists = [_members(rng, y, ["mask", "gender", "age"], 0.45) for _ in range(3)]
    weak = _members(rng, y, ["mask"], 0.3)
    chosen = select([*finalists, weak], y, np.arange(700) // 7, finalists=[0, 1, 2])
    held = chosen.check["held_out"]
    assert held["uniform"] > held["best member"]  # independent errors average out
    assert chosen.way in ("uniform", "greedy") and chosen.weights[3] <= 0.2


class _Clock:
    budget_s = 1000.0

    def left(self) -> float:
        return 900.0

    def elapsed(self) -> float:
        return 100.0


def _work(tmp_path, rungs, kfold_epochs=0):
    import optuna

    from maskclf.auto.folder import StudyFolder
    from maskclf.auto.plan import Rung, StudyPlan
    from maskclf.auto.schedule import Work

    names = ["a", "b", "c"][:rungs[0][0] if rungs else 2]
    plan = StudyPlan(1000.0, names, [Rung(*r) for r in rungs], kfold_epochs, 3,
                     dict.fromkeys(names, 10.0), 1.0, 50.0)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}",
                                direction="maximize")
    preset = _preset(candidates=[{"name": n} for n in names], max_epochs=4,
                     min_final_epochs=2, screen_epochs=1)
    return Work(study, plan, preset, {}, StudyFolder(tmp_path), tmp_path, _Clock()), study


def test_two_trials_that_claim_one_unit_leave_it_to_the_lower_number(tmp_path):
    from maskclf.auto.schedule import Unit
    from maskclf.auto.worker import claim

    work, study = _work(tmp_path, [(2, 1)])
    first, second = study.ask(), study.ask()
    for trial in (first, second):  # both tag the same unit at once
        trial.set_user_attr("unit", "r0-a")
    assert work.owner("r0-a") == first.number
    assert claim(second, work) == Unit("screening", "b", 0)  # the other takes the next
    assert claim(study.ask(), work) is None  # nothing open: finish waits for both
    for trial, value in ((first, 0.5), (second, 0.4)):
        study.tell(trial, value)
    assert work.next_unit() == Unit("finish")


def test_a_rung_waits_for_the_one_before_and_takes_its_best(tmp_path):
    from maskclf.auto.schedule import WAIT, Unit

    work, study = _work(tmp_path, [(3, 1), (2, 3)], kfold_epochs=4)
    rng, ids, truth, person = labelled_persons()
    trials = {}
    for name, right in (("a", 0.2), ("b", 0.6), ("c", 0.55)):  # c is within noise of b
        fake_run(tmp_path / "runs" / f"r0-{name}", ids, probabilities(rng, truth, right),
                 truth, person)
        trials[name] = study.ask()
        trials[name].set_user_attr("unit", f"r0-{name}")
    study.tell(trials["a"], 0.2)
    study.tell(trials["b"], 0.6)
    assert work.stages()[-1] == WAIT and work.next_unit() == WAIT
    study.tell(trials["c"], 0.4)
    assert [u.candidate for u in work.stages()[1]] == ["b", "c"]  # a: worse beyond noise
    assert work.next_unit() == Unit("screening", "b", 1)
    # the plan's cost after a unit: the other rung-1 run, then two 3-fold runs of 4 epochs
    assert work.open_after(Unit("screening", "b", 1)) == [(20.0, 1)] + [(120.0, 3)] * 2
    assert work.allotment(Unit("screening", "b", 1)) == pytest.approx(850 * 20 / 280)
    # on time, a unit whose share is under its need x headroom gets the headroom
    work.plan.reserve_s = 900 - 285.0  # 285 s left: need 20, the rest 260
    assert work.allotment(Unit("screening", "b", 1)) == pytest.approx(24.0)


def test_candidates_within_noise_of_the_best_go_on_in_the_presets_order(tmp_path):
    from maskclf.auto.selection import survivors

    rng, ids, truth, person = labelled_persons()
    oofs = {}
    for name, right in (("recipe", 0.50), ("costly", 0.53), ("weak", 0.2)):
        fake_run(tmp_path / name, ids, probabilities(rng, truth, right), truth, person)
        oofs[name] = pd.read_csv(tmp_path / name / "oof.csv", dtype={"ImageID": str})
    scores = {name: macro_f1(oof["class"], oof.filter(like="class_").to_numpy().argmax(1))
              for name, oof in oofs.items()}
    assert scores["costly"] > scores["recipe"] > scores["weak"]
    chosen, gaps = survivors(["recipe", "costly", "weak"], scores, oofs, 1)
    assert chosen == ["recipe"]  # its gap to the best is within noise: the preset's first
    assert gaps["recipe"]["low"] < 0 < gaps["recipe"]["high"]
    assert gaps["weak"]["low"] > 0  # the best beats it beyond noise
    assert survivors(["recipe", "costly", "weak"], scores, oofs, 3)[0] == [
        "recipe", "costly", "weak"]


def test_without_candidates_to_screen_the_kfold_runs_come_first(tmp_path):
    from maskclf.auto.schedule import Unit

    work, _ = _work(tmp_path, [], kfold_epochs=4)  # two candidates, two survivors
    assert work.plan.survivors == 2
    assert [u.id for u in work.stages()[0]] == ["kfold-a", "kfold-b"]
    assert work.next_unit() == Unit("kfold", "a")
    # half the time left less the reserve: 3 folds x 4 epochs x 10 s, twice
    assert work.allotment(Unit("kfold", "a")) == pytest.approx(850 * 120 / 240)


def test_a_member_is_replanned_to_the_epochs_its_time_fits_at_the_measured_pace():
    from maskclf.auto.schedule import Pace, final_epochs

    pace = Pace(epoch_factor=1.5, fixed_s=10.0)  # epochs ran 1.5 x the probe's estimate
    # 3 fold runs of 20 s planned epochs: 90 s an epoch of all folds, 30 s fixed
    assert final_epochs(930.0, pace, 20.0, 3, 0, 6, 15) == 10
    assert final_epochs(3000.0, pace, 20.0, 3, 0, 6, 15) == 15  # at most max_final_epochs
    assert final_epochs(100.0, pace, 20.0, 3, 0, 6, 15) == 6  # at least max_epochs: the
    # time limit cuts a slow run instead
    assert final_epochs(100.0, Pace(), 20.0, 1, 4, 6, 15) == 9  # a continuation: 4 epochs
    # done, 5 more fit


def test_the_final_epochs_cap_defaults_to_half_again_the_planned_ones():
    assert _preset(max_epochs=10).final_epochs_cap == 15
    assert _preset(max_epochs=10, max_final_epochs=12).final_epochs_cap == 12
    with pytest.raises(ValueError, match="max_final_epochs 8 is below max_epochs 10"):
        _preset(max_epochs=10, max_final_epochs=8)


def test_the_report_shows_a_selection_path_only_among_several_members():
    from maskclf.auto.report import _selection_path, stage_name

    path = [{"size": i, "added": "a", "macro_f1": 0.5} for i in range(1, 21)]
    assert _selection_path([{"unit": "a"}], path) == ["One member: nothing to select among.", ""]
    shown = _selection_path([{"unit": "a"}, {"unit": "b"}], path)
    assert sum(line.startswith("|") for line in shown) == 2 + 20
    assert [stage_name("kfold"), stage_name("screening", 1), stage_name("start")] == [
        "k-fold", "screening, rung 1", "start"]


def test_a_plan_without_kfold_names_its_last_rung_the_members_and_plans_it_apart():
    """The log says "no screening" for a plan of members only: the report must not call
    them screening (it did: "screening, rung 0")."""
    from maskclf.auto.report import planned_seconds, stage_name

    names = [f"c{i}" for i in range(5)]
    epoch_s = dict.fromkeys(names, 10.0)
    # 2 candidates of 10 s epochs in 400 s: two fold-0 members of 10 epochs, no k-fold
    members_only = plan_study(400, _preset(candidates=[{"name": n} for n in names[:2]]),
                              names[:2], epoch_s, 2)
    assert len(members_only.rungs) == 1 and not members_only.kfold_epochs
    assert stage_name("screening", 0, members_only) == "members (fold 0)"
    assert set(planned_seconds(members_only)) == {"members (fold 0)", "k-fold", "finish"}
    assert planned_seconds(members_only)["members (fold 0)"] == members_only.stage_s["screening"]
    # 5 in 600 s (as above): 5 screened for 2 epochs, 4 members to 10
    screened = plan_study(600, _preset(candidates=[{"name": n} for n in names]), names,
                          epoch_s, 20)
    assert [r.count for r in screened.rungs] == [5, 4] and not screened.kfold_epochs
    assert [stage_name("screening", i, screened) for i in (0, 1)] == [
        "screening, rung 0", "members (fold 0)"]
    planned = planned_seconds(screened)
    assert planned["screening"] == 5 * 2 * 10.0
    assert planned["screening"] + planned["members (fold 0)"] == pytest.approx(
        screened.stage_s["screening"])


def test_a_claim_waits_for_an_earlier_trial_still_naming_its_unit(tmp_path, monkeypatch):
    """The race two workers met at a study's last unit: the later trial named the unit and
    checked before the earlier one had named it, so both took it (and both finished the
    study). A claim now waits until every earlier running trial has named its unit; one
    whose worker died holds it up at most CLAIM_WAIT_S."""
    import threading

    from maskclf.auto import schedule
    from maskclf.auto.schedule import Unit
    from maskclf.auto.worker import claim

    work, study = _work(tmp_path, [(2, 1)])
    first, second = study.ask(), study.ask()  # the first is still choosing its unit
    naming = threading.Timer(0.5, first.set_user_attr, ("unit", "r0-a"))
    naming.start()
    started = time.monotonic()
    assert claim(second, work) == Unit("screening", "b", 0)  # not r0-a, which first takes
    naming.join()
    assert time.monotonic() - started >= 0.4 and work.owner("r0-a") == first.number

    monkeypatch.setattr(schedule, "CLAIM_WAIT_S", 0.3)
    (tmp_path / "other").mkdir()
    work, study = _work(tmp_path / "other", [(2, 1)])
    dead, late = study.ask(), study.ask()  # the first's worker died before naming a unit
    started = time.monotonic()
    assert claim(late, work) == Unit("screening", "a", 0)
    assert 0.25 <= time.monotonic() - started < 5 and "unit" not in dead.user_attrs
