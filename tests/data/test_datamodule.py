"""The fold's data module: which rows train (boundary ages left out), which validate."""

import numpy as np
import pandas as pd
import pytest

from maskclf import labels
from maskclf.config import ConfigError
from maskclf.data.datamodule import excluded_from_training, training_rows
from maskclf.data.layout import read_train
from maskclf.train.execute import train_run
from tests.conftest import tiny_config


def _records(ages: list[int], folds: list[int]) -> pd.DataFrame:
    rows = [(f"p{i}/mask{k}.jpg", f"p{i}", age, fold, 0)
            for i, (age, fold) in enumerate(zip(ages, folds, strict=True)) for k in range(7)]
    return pd.DataFrame(rows, columns=["path", "person", "age", "fold", "target"])


def test_boundary_ages_leave_training_but_not_validation():
    records = _records([20, 27, 29, 30, 45, 57, 59, 60, 28, 58], [0, 0, 0, -1, -1, -1, -1, -1,
                                                                  -1, -1])
    cfg = tiny_config("data.exclude_ages=[[27, 29], [57, 59]]")
    trained = set(training_rows(records, 0, cfg)["person"])
    assert trained == {"p3", "p4", "p7"}  # 30, 45, 60 only: 28, 57, 58, 59 are left out
    assert set(records[records["fold"] == 0]["person"]) == {"p0", "p1", "p2"}  # validated
    default = set(training_rows(records, 0, tiny_config())["person"])
    assert default == set(records[records["fold"] != 0]["person"])  # unchanged by default
    assert excluded_from_training(records, cfg.data.exclude_ages) == {
        "ranges": [[27, 29], [57, 59]], "persons": 6, "images": 42}
    assert excluded_from_training(records, []) is None


def test_unknown_ages_of_pseudo_labels_are_never_excluded():
    assert not labels.in_age_ranges(np.array([-1]), [(0, 100)]).any()


def test_a_reversed_range_is_a_config_error():
    with pytest.raises(ConfigError, match="exclude_ages"):
        tiny_config("data.exclude_ages=[[29, 27]]")


@pytest.mark.slow
def test_the_run_summary_says_who_was_left_out(synthetic_root, tmp_path):
    plain = train_run(tiny_config(), synthetic_root, tmp_path, "plain", interactive=False)
    cut = train_run(tiny_config("data.exclude_ages=[[20, 40]]"), synthetic_root, tmp_path,
                    "cut", interactive=False)
    records = read_train(synthetic_root)
    inside = records[records["age"].between(20, 40)]
    assert cut.summary["excluded_from_training"] == {
        "ranges": [[20, 40]], "persons": inside["person"].nunique(), "images": len(inside)}
    assert len(inside) > 0
    assert cut.summary["validation"]["n"] == plain.summary["validation"]["n"]
    assert "excluded_from_training" not in plain.summary
