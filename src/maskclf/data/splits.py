"""Person-level splits: no person is ever on both sides.

A person is the folder (``records["person"]``). Every person in this competition has all
three mask states, so stratifying persons by gender x age keeps the 18-class proportions.

>>> import pandas as pd
>>> records = pd.DataFrame({"person": list("aabbccdd"), "class": [0, 6, 0, 6, 3, 9, 3, 9]})
>>> split = holdout_split(records, val_ratio=0.5, seed=0)
>>> sorted(split.columns), sorted(split["fold"].value_counts().tolist())
(['fold', 'person'], [2, 2])
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from maskclf import labels
from maskclf.errors import UsageError

log = logging.getLogger(__name__)

TRAIN_ONLY = -1
"""The ``fold`` of a person who is never validated (folds.csv)."""
PSEUDO = -2
"""The ``fold`` of pseudo-labelled rows (``data.extra``): always trained, never validated."""


def person_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per person with its gender x age stratum (``class`` with the mask removed)."""
    persons = records.groupby("person", sort=True)["class"].first().reset_index()
    _, gender, age = labels.decode_class(persons["class"].to_numpy())
    persons["stratum"] = labels.encode_class(0, gender, age)
    return persons[["person", "stratum"]]


def holdout_split(records: pd.DataFrame, val_ratio: float, seed: int) -> pd.DataFrame:
    """``person, fold`` with fold 0 for validation persons and -1 for the rest.

    Stratified by gender x age; strata too small to split are pooled, with a warning.
    ``val_ratio == 0`` puts everyone in training.
    """
    persons = person_table(records)
    if val_ratio <= 0:
        return persons.assign(fold=TRAIN_ONLY)[["person", "fold"]]
    if len(persons) < 2:
        raise UsageError(f"data.val_ratio={val_ratio} needs at least 2 persons, one to hold out; "
                         f"the dataset has {len(persons)}: add persons, or set "
                         "data.val_ratio=0 to train on everyone without validation")
    # at least one person on each side, however small the dataset
    n_val = min(len(persons) - 1, max(1, int(round(val_ratio * len(persons)))))
    strata = persons["stratum"].copy()
    counts = strata.map(strata.value_counts())
    if (counts < 2).any():
        warnings.warn("some gender x age strata have a single person; they are pooled for "
                      "stratification", stacklevel=2)
        strata[counts < 2] = -1
    try:
        _, val_persons = train_test_split(persons["person"], test_size=n_val, stratify=strata,
                                          random_state=seed)
    except ValueError:
        warnings.warn(f"too few persons to stratify a {n_val}-person validation set; "
                      "splitting persons at random", stacklevel=2)
        _, val_persons = train_test_split(persons["person"], test_size=n_val, random_state=seed)
    fold = np.where(persons["person"].isin(set(val_persons)), 0, TRAIN_ONLY)
    return persons.assign(fold=fold)[["person", "fold"]]


def kfold_split(records: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """``person, fold`` from scikit-learn's StratifiedGroupKFold on the 18-class labels.

    Every person is in exactly one fold; fold sizes and class proportions are as even as
    the persons allow. The same seed gives the same folds.
    """
    persons = records["person"].nunique()
    if persons < n_folds:
        raise UsageError(f"data.folds={n_folds} needs at least {n_folds} persons; got {persons}")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of: dict[str, int] = {}
    with warnings.catch_warnings(record=True) as said:  # scikit-learn's, said our way below
        warnings.simplefilter("always", UserWarning)
        splits = list(splitter.split(records, records["class"], groups=records["person"]))
    for warning in said:
        if "least populated class" not in str(warning.message):
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    if any("least populated class" in str(w.message) for w in said):
        log.info("%d folds: some classes have fewer images than folds, so not every fold "
                 "holds every class", n_folds)
    for fold, (_, val_index) in enumerate(splits):
        fold_of.update(dict.fromkeys(records["person"].iloc[val_index], fold))
    table = pd.DataFrame({"person": sorted(fold_of)})
    return table.assign(fold=table["person"].map(fold_of).astype(int))


def make_folds(records: pd.DataFrame, n_folds: int, val_ratio: float, seed: int) -> pd.DataFrame:
    """K-fold when ``n_folds >= 2``, else a single split holding out ``val_ratio``."""
    if n_folds >= 2:
        return kfold_split(records, n_folds, seed)
    return holdout_split(records, val_ratio, seed)


def attach_folds(records: pd.DataFrame, folds: pd.DataFrame, source: str = "the run's folds"
                 ) -> pd.DataFrame:
    """The records table with each image's ``fold`` taken from its person.

    The persons must be exactly those the folds were made for: a person added since (a
    resumed run over changed data) would have no fold and train in every fold.
    """
    now, then = set(records["person"]), set(folds["person"])
    if now != then:
        added, removed = sorted(now - then), sorted(then - now)
        raise UsageError(
            f"the dataset's persons differ from those {source} were made for: "
            f"{len(added)} added {added[:5]}{'...' if len(added) > 5 else ''}, {len(removed)} "
            f"removed {removed[:5]}{'...' if len(removed) > 5 else ''}; resume with the data "
            "the run started with (--data), or start a new run")
    return records.drop(columns="fold", errors="ignore").merge(folds, on="person", how="left",
                                                               validate="many_to_one")
