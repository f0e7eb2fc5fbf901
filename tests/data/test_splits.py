import numpy as np
import pandas as pd
import pytest

from maskclf import labels
from maskclf.data.splits import TRAIN_ONLY, attach_folds, holdout_split, kfold_split, make_folds


def _records(n_persons: int, seed: int = 0) -> pd.DataFrame:
    """A records table like the reader's: 7 images a person, gender x age drawn unevenly."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_persons):
        gender = int(rng.random() < 0.6)
        age = int(rng.choice(3, p=[0.5, 0.35, 0.15]))
        for mask in (0, 0, 0, 0, 0, 1, 2):
            rows.append((f"person{p}", mask, gender, age, labels.encode_class(mask, gender, age)))
    return pd.DataFrame(rows, columns=["person", "mask", "gender", "age_group", "class"])


def test_no_person_on_both_sides_and_everyone_placed():
    records = _records(300)
    folds = holdout_split(records, val_ratio=0.2, seed=1)
    assert folds["person"].is_unique
    assert set(folds["person"]) == set(records["person"])
    split = attach_folds(records, folds)
    sides = split.groupby("person")["fold"].nunique()
    assert (sides == 1).all()
    assert set(split["fold"]) == {0, TRAIN_ONLY}


def test_ratio_and_class_proportions_kept():
    records = _records(400)
    split = attach_folds(records, holdout_split(records, val_ratio=0.25, seed=3))
    val = split[split["fold"] == 0]
    assert val["person"].nunique() == 100
    overall = records["class"].value_counts(normalize=True).sort_index()
    in_val = val["class"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
    assert np.abs(overall - in_val).max() < 0.02


def test_seed_reproducible_and_matters():
    records = _records(100)
    first = holdout_split(records, 0.2, seed=5)
    assert first.equals(holdout_split(records, 0.2, seed=5))
    assert not first.equals(holdout_split(records, 0.2, seed=6))


def test_zero_ratio_trains_on_everyone():
    folds = holdout_split(_records(20), 0.0, seed=0)
    assert (folds["fold"] == TRAIN_ONLY).all()


@pytest.mark.parametrize(("persons", "ratio"), [(3, 0.1), (2, 0.2), (3, 0.99)])
def test_a_small_dataset_keeps_one_person_on_each_side(persons, ratio):
    folds = holdout_split(_records(persons), ratio, seed=0)
    assert (folds["fold"] == 0).sum() >= 1 and (folds["fold"] != 0).sum() >= 1


def test_one_person_cannot_be_split_and_the_message_says_what_to_do():
    with pytest.raises(ValueError, match="val_ratio=0 to train on everyone"):
        holdout_split(_records(1), 0.2, seed=0)


def check_valid_kfold(records: pd.DataFrame, folds: pd.DataFrame, n_folds: int) -> None:
    """Every person in exactly one fold; folds disjoint by person; all folds used."""
    assert folds["person"].is_unique
    assert set(folds["person"]) == set(records["person"])
    assert sorted(folds["fold"].unique()) == list(range(n_folds))
    split = attach_folds(records, folds)
    assert (split.groupby("person")["fold"].nunique() == 1).all()


@pytest.mark.parametrize("n_folds", [2, 5])
def test_kfold_is_person_disjoint_and_covers_everyone(n_folds):
    records = _records(200, seed=2)
    check_valid_kfold(records, kfold_split(records, n_folds, seed=0), n_folds)


def test_kfold_keeps_class_proportions():
    records = _records(500, seed=4)
    split = attach_folds(records, kfold_split(records, 5, seed=0))
    overall = records["class"].value_counts(normalize=True).sort_index()
    for _, rows in split.groupby("fold"):
        share = rows["class"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert np.abs(share - overall).max() < 0.03
        assert abs(len(rows) / len(records) - 0.2) < 0.02


def test_kfold_reproducible_from_seed():
    records = _records(100)
    assert kfold_split(records, 3, seed=1).equals(kfold_split(records, 3, seed=1))
    assert not kfold_split(records, 3, seed=1).equals(kfold_split(records, 3, seed=2))


def test_kfold_needs_a_person_per_fold():
    with pytest.raises(ValueError, match="needs at least 5 persons"):
        kfold_split(_records(3), 5, seed=0)


def test_make_folds_chooses_the_protocol():
    records = _records(50)
    assert set(make_folds(records, 0, 0.2, seed=0)["fold"]) == {0, TRAIN_ONLY}
    assert set(make_folds(records, 3, 0.2, seed=0)["fold"]) == {0, 1, 2}


def test_folds_refuse_persons_added_or_removed_since_they_were_made():
    records = _records(6)
    folds = holdout_split(records, 0.3, seed=0)
    assert attach_folds(records, folds)["fold"].notna().all()
    grown = pd.concat([records, _records(7).tail(7).assign(person="newcomer")])
    with pytest.raises(ValueError, match=r"1 added \['newcomer'\], 0 removed"):
        attach_folds(grown, folds)
    with pytest.raises(ValueError, match="0 added .*1 removed"):
        attach_folds(records[records["person"] != records["person"].iloc[0]], folds)


def test_a_class_rarer_than_the_folds_is_said_in_a_log_line_not_a_warning(caplog):
    import logging
    import warnings

    records = pd.DataFrame({"person": [f"p{i}" for i in range(10)], "class": [0] * 9 + [5]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning reaching the console fails
        with caplog.at_level(logging.INFO, logger="maskclf.data.splits"):
            folds = kfold_split(records, 3, seed=0)
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    assert "fewer images than folds" in caplog.text
