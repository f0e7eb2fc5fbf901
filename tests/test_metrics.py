import numpy as np
import pandas as pd
import pytest

from maskclf.metrics import confusion, score, score_files


def test_scores_on_a_handmade_case():
    truth = [0, 0, 7, 7, 17]
    preds = [0, 1, 7, 6, 17]  # two age errors: 0->1 and 7->6
    result = score(truth, preds)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["attribute_f1"]["mask"] == pytest.approx(1.0)
    assert result["attribute_f1"]["gender"] == pytest.approx(1.0)
    assert result["class_f1"][17] == pytest.approx(1.0)
    assert result["class_support"][7] == 2
    # classes present in labels or predictions: 0, 1, 6, 7, 17 -> macro over five
    f1 = {0: 2 / 3, 1: 0.0, 6: 0.0, 7: 2 / 3, 17: 1.0}
    assert result["macro_f1"] == pytest.approx(sum(f1.values()) / 5)


def test_confusion_sums_to_count():
    assert confusion([0, 1, 2], [0, 2, 2]).sum() == 3


def test_score_files_aligns_by_id_and_rejects_mismatch(tmp_path):
    pd.DataFrame({"ImageID": ["a", "b"], "class": [3, 4]}).to_csv(tmp_path / "l.csv", index=False)
    pd.DataFrame({"ImageID": ["b", "a"], "ans": [4, 3]}).to_csv(tmp_path / "s.csv", index=False)
    assert score_files(tmp_path / "s.csv", tmp_path / "l.csv")["accuracy"] == 1.0
    pd.DataFrame({"ImageID": ["b", "z"], "ans": [4, 3]}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(ValueError, match="different ImageIDs"):
        score_files(tmp_path / "s.csv", tmp_path / "l.csv")


def test_the_18_class_figure_alone_leaves_out_rows_that_do_not_know_every_attribute():
    from maskclf import labels
    from maskclf.metrics import known_macro_f1

    truth = np.array([0, 7, 7, 17])
    predicted = np.array([0, 7, 6, 17])
    doubted = truth + labels.NUM_CLASSES * np.array([0, 0, labels.UNKNOWN_BITS["age"], 0])
    assert known_macro_f1(truth, predicted) == pytest.approx(score(truth, predicted)["macro_f1"])
    assert known_macro_f1(truth, predicted) < 1.0
    assert known_macro_f1(doubted, predicted) == 1.0 == score(doubted, predicted)["macro_f1"]
