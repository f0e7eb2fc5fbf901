import numpy as np
import pandas as pd
import pytest

from maskclf import labels
from maskclf.data.splits import TRAIN_ONLY, attach_folds, holdout_split


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


def test_ratio_leaving_no_validation_is_an_error():
    with pytest.raises(ValueError, match="val_ratio"):
        holdout_split(_records(3), 0.1, seed=0)
