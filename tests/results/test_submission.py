
import numpy as np
import pandas as pd
import pytest

from maskclf.labels import CLASS_COLUMNS
from maskclf.results.submission import (
    SubmissionError,
    checked_submission,
    oof_persons,
    oof_table,
    prediction_table,
    validate_submission,
)

INFO = pd.DataFrame({"ImageID": ["c.jpg", "a.jpg", "b.jpg"], "ans": 0})


def test_valid_submission_keeps_the_given_order():
    table = checked_submission(["c.jpg", "a.jpg", "b.jpg"], [0, 17, 5], INFO, "s.csv")
    assert table["ans"].tolist() == [0, 17, 5]
    assert table["ImageID"].tolist() == INFO["ImageID"].tolist()


@pytest.mark.parametrize(("ids", "answers", "message"), [
    (["a.jpg", "c.jpg", "b.jpg"], [0, 0, 0], "not in info.csv order; first at row 1"),
    (["c.jpg", "a.jpg"], [0, 0], "2 rows; info.csv has 3"),
    (["c.jpg", "a.jpg", "b.jpg"], [0, 18, -1], "2 label"),
])
def test_invalid_submissions_are_named(ids, answers, message):
    with pytest.raises(SubmissionError, match=message):
        validate_submission(pd.DataFrame({"ImageID": ids, "ans": answers}), INFO)


def test_invalid_submission_raises_naming_the_target():
    with pytest.raises(SubmissionError, match="out/submission.csv"):
        checked_submission(["a.jpg", "c.jpg", "b.jpg"], [1, 2, 3], INFO, "out/submission.csv")


def test_prediction_table_has_classes_and_marginals():
    probs = np.random.default_rng(0).dirichlet(np.ones(18), size=4)
    table = prediction_table(list("wxyz"), probs)
    assert table.columns[0] == "ImageID"
    np.testing.assert_allclose(table[CLASS_COLUMNS].sum(axis=1), 1.0)
    for name, width in (("mask", 3), ("gender", 2), ("age", 3)):
        np.testing.assert_allclose(table[[f"{name}_{i}" for i in range(width)]].sum(axis=1), 1.0)


def test_the_oof_table_has_a_person_and_old_files_still_name_one():
    table = oof_table(["train/images/p1/mask1.jpg"], [[1.0] + [0.0] * 17], 0, [0], ["p1"])
    assert list(table.columns[-3:]) == ["fold", "class", "person"]
    assert oof_persons(table).tolist() == ["p1"]
    old = pd.DataFrame({"ImageID": ["train/images/000002_male_Asian_30/normal.jpg"]})
    assert oof_persons(old).tolist() == ["000002_male_Asian_30"]
