import numpy as np
from sklearn.metrics import f1_score

from maskclf.metrics import macro_f1
from maskclf.results.decisions import apply_biases, cross_validate, fit_biases


def _imbalanced_case(n: int = 600, seed: int = 0):
    """Class 1 is rare and its probability is systematically under-stated."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    p1 = np.clip(np.where(y == 1, 0.4, 0.15) + rng.normal(0, 0.08, n), 0.01, 0.99)
    probs = np.zeros((n, 18))
    probs[:, 0], probs[:, 1] = 1 - p1, p1
    return probs, y


def test_tuning_raises_macro_f1_on_an_imbalanced_case():
    probs, y = _imbalanced_case()
    plain = f1_score(y, probs.argmax(1), average="macro")
    biases = fit_biases(probs, y)
    tuned = f1_score(y, apply_biases(probs, biases), average="macro")
    assert tuned > plain + 0.1
    assert biases[1] > biases[0]


def test_cross_validated_gain_is_measured_on_held_out_rows():
    probs, y = _imbalanced_case(seed=1)
    report = cross_validate(probs, y, groups=np.arange(len(y)) // 7)
    assert report["tuned_macro_f1"] > report["plain_macro_f1"] + 0.05
    assert report["gain"]["low"] > 0 and report["applied"]  # beyond noise: applied


def test_a_gain_within_noise_keeps_argmax():
    """Probabilities that say nothing: on these 20 persons tuning lifts the held-out figure
    by 0.02 by chance, within what other persons would give, so argmax stays (before the
    interval, any gain applied the biases)."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 140)
    probs = np.zeros((140, 18))
    probs[:, :3] = rng.dirichlet([1, 1, 1], 140)
    report = cross_validate(probs, y, groups=np.arange(len(y)) // 7)
    assert report["tuned_macro_f1"] > report["plain_macro_f1"]
    assert report["gain"]["low"] < 0 < report["gain"]["high"]
    assert report["applied"] is False


def test_optimal_predictions_are_left_alone():
    y = np.array([0, 1, 2, 3] * 5)
    probs = np.full((20, 18), 0.01)
    probs[np.arange(20), y] = 0.9
    biases = fit_biases(probs, y)
    assert not biases.any()
    assert (apply_biases(probs, biases) == y).all()


def test_fast_macro_f1_equals_scikit_learn():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n, classes = rng.integers(1, 60), rng.integers(1, 19)
        y, predicted = rng.integers(0, classes, n), rng.integers(0, classes, n)
        if trial % 3 == 0:
            predicted[:] = rng.integers(0, 18)  # one predicted class, maybe absent in y
        expected = f1_score(y, predicted, average="macro", zero_division=0)
        assert abs(macro_f1(y, predicted) - expected) < 1e-12


def test_attribute_biases_are_sums_of_mask_gender_and_age_values():
    from maskclf import labels
    from maskclf.results.decisions import bias_design

    design = bias_design("attribute")
    assert design.shape == (18, 8) and (design.sum(axis=1) == 3).all()
    theta = np.arange(8.0)
    biases = design @ theta
    for cls in range(18):
        mask, gender, age = labels.decode_class(cls)
        assert biases[cls] == theta[mask] + theta[3 + gender] + theta[5 + age]


def test_tuning_that_does_not_help_held_out_persons_keeps_argmax(tmp_path):
    import json

    from maskclf.atomic import write_csv
    from maskclf.results.decisions import load_biases, tune_run
    from maskclf.results.submission import prediction_table
    from maskclf.runs.directory import RunDir
    from tests.conftest import tiny_config

    run = RunDir.create(tmp_path, "r")
    run.write_config(tiny_config())
    y = np.arange(60) % 18
    probs = np.full((60, 18), 0.01)
    probs[np.arange(60), y] = 0.83  # already right: nothing to gain
    ids = [f"train/images/p{i // 3}/mask1.jpg" for i in range(60)]
    write_csv(prediction_table(ids, probs).assign(fold=0, **{"class": y}), run.file(RunDir.OOF))
    report = tune_run(run.path)
    assert report["applied"] is False and report["per"] == "attribute"
    assert not load_biases(run.path).any()
    assert json.loads(run.file(RunDir.BIASES).read_text())["applied"] is False


def test_labels_made_unknown_neither_fit_nor_judge_the_biases():
    """Rows whose class is the tuned class's probabilities' opposite but whose label a
    review made unknown: counted out, the tuning sees the clean rows alone."""
    from maskclf import labels
    from maskclf.results.decisions import tune_biases

    probs, y = _imbalanced_case(seed=1)
    persons = np.arange(len(y)) // 7
    clean, clean_biases = tune_biases(probs, y, persons)
    noisy = np.concatenate([y, 1 - y[:200]])  # 200 rows more, their class the other one
    doubted = noisy + labels.NUM_CLASSES * np.r_[np.zeros(len(y), int),
                                                  np.full(200, labels.UNKNOWN_BITS["gender"])]
    rows = np.concatenate([probs, probs[:200]])
    report, biases = tune_biases(rows, doubted, np.r_[persons, persons[:200] + 10_000])
    assert report["unknown_rows"] == 200 and clean["unknown_rows"] == 0
    np.testing.assert_allclose(biases, clean_biases)
    assert report["tuned_macro_f1"] == clean["tuned_macro_f1"] and report["applied"]
    taken, _ = tune_biases(rows, noisy, np.r_[persons, persons[:200] + 10_000])
    assert taken["plain_macro_f1"] < clean["plain_macro_f1"]  # as rows they would count
