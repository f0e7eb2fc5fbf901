"""Person-bootstrap intervals: the figures they rest on, their pairing, their unit."""

from __future__ import annotations

import numpy as np
import pytest

from maskclf.intervals import METRICS, PersonBootstrap, summary_intervals
from maskclf.metrics import score


def _labels(persons: int = 120, images: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(persons), images)
    truth = rng.integers(0, 18, len(person))
    return rng, truth, person


def _noisy(rng, truth, right: float) -> np.ndarray:
    return np.where(rng.random(len(truth)) < right, truth, rng.integers(0, 18, len(truth)))


def test_the_figures_on_all_rows_are_the_metrics_of_the_project():
    rng, truth, person = _labels()
    predicted = _noisy(rng, truth, 0.6)
    figures = PersonBootstrap(truth, person, draws=200).intervals(predicted)
    expected = score(truth, predicted)
    assert figures["macro_f1"].value == pytest.approx(expected["macro_f1"], abs=1e-12)
    assert figures["accuracy"].value == pytest.approx(expected["accuracy"], abs=1e-12)
    for name in ("mask", "gender", "age"):
        assert figures[f"{name}_f1"].value == pytest.approx(expected["attribute_f1"][name],
                                                            abs=1e-12)
    for interval in figures.values():
        assert interval.low < interval.value < interval.high


def test_the_same_inputs_give_the_same_interval_and_a_system_equals_itself():
    rng, truth, person = _labels()
    predicted = _noisy(rng, truth, 0.6)
    first = PersonBootstrap(truth, person, draws=300).compare([predicted, predicted])
    again = PersonBootstrap(truth, person, draws=300).compare([predicted, predicted])
    assert first.scores[0] == again.scores[0]
    for interval in first.difference(1).values():
        assert (interval.value, interval.low, interval.high) == (0, 0, 0)
        assert interval.verdict == "within noise"


def test_a_clear_gain_is_better_beyond_noise_and_its_reverse_worse():
    rng, truth, person = _labels()
    weak, strong = _noisy(rng, truth, 0.4), _noisy(rng, truth, 0.8)
    boot = PersonBootstrap(truth, person, draws=300)
    assert set(boot.compare([weak, strong]).verdicts(1).values()) == {"better"}
    assert set(boot.compare([strong, weak]).verdicts(1).values()) == {"worse"}


def test_a_small_change_is_within_noise():
    rng, truth, person = _labels(persons=40)
    predicted = _noisy(rng, truth, 0.6)
    changed = predicted.copy()
    changed[:3] = truth[:3]  # three more images right: not a finding on 40 persons
    assert boot_verdict(truth, person, predicted, changed) == "within noise"


def boot_verdict(truth, person, a, b) -> str:
    return PersonBootstrap(truth, person, draws=300).compare([a, b]).verdicts(1)["macro_f1"]


def test_pairing_makes_the_difference_finer_than_the_scores():
    """Two systems that share most predictions: the difference's interval is much narrower
    than either score's, because the draws that favour one favour the other."""
    rng, truth, person = _labels()
    a = _noisy(rng, truth, 0.6)
    b = a.copy()
    flip = rng.random(len(a)) < 0.1
    b[flip] = truth[flip]
    result = PersonBootstrap(truth, person, draws=400).compare([a, b])
    score_width = result.scores[0]["macro_f1"].high - result.scores[0]["macro_f1"].low
    difference = result.difference(1)["macro_f1"]
    assert difference.high - difference.low < 0.6 * score_width
    assert difference.verdict == "better"


def test_persons_are_the_unit_more_photos_of_the_same_persons_do_not_narrow_it():
    rng, truth, person = _labels(persons=60, images=1)
    predicted = _noisy(rng, truth, 0.6)
    once = PersonBootstrap(truth, person, draws=300).intervals(predicted)["macro_f1"]
    thrice = PersonBootstrap(np.repeat(truth, 3), np.repeat(person, 3), draws=300).intervals(
        np.repeat(predicted, 3))["macro_f1"]
    assert (thrice.low, thrice.value, thrice.high) == pytest.approx(
        (once.low, once.value, once.high))
    by_image = PersonBootstrap(np.repeat(truth, 3), np.arange(180), draws=300).intervals(
        np.repeat(predicted, 3))["macro_f1"]
    assert by_image.high - by_image.low < 0.8 * (once.high - once.low)  # what it would hide


def test_summary_intervals_say_what_they_rest_on():
    rng, truth, person = _labels(persons=30)
    found = summary_intervals(truth, _noisy(rng, truth, 0.7), person, draws=200)
    assert (found["persons"], found["draws"], found["level"]) == (30, 200, 0.95)
    assert set(METRICS) <= set(found)
    assert found["macro_f1"]["low"] <= found["macro_f1"]["value"] <= found["macro_f1"]["high"]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="labels for"):
        PersonBootstrap([1, 2], ["a"])
    with pytest.raises(ValueError, match="draws"):
        PersonBootstrap([1, 2], ["a", "b"], draws=1)
    with pytest.raises(ValueError, match="predictions for"):
        PersonBootstrap([1, 2], ["a", "b"]).compare([np.array([1])])
