import pandas as pd
import pytest

from maskclf import labels
from maskclf.data.corrections import apply_corrections, load_corrections


def _records() -> pd.DataFrame:
    """Three persons on the packaged list and two that are not, seven images each."""
    persons = [("000020", 0, 25), ("006359", 1, 40), ("001009", 0, 35), ("004348", 1, 58),
               ("123456", 0, 22)]
    rows = []
    for pid, gender, age in persons:
        for stem, mask in labels.MASK_STEMS.items():
            group = labels.age_bucket(age)
            rows.append((f"train/images/{pid}_x/{stem}.jpg", f"{pid}_x", pid, age, mask, gender,
                         group, labels.encode_class(mask, gender, group)))
    return pd.DataFrame(rows, columns=["path", "person", "id", "age", "mask", "gender",
                                       "age_group", "class"])


def test_packaged_list_is_complete():
    corrections = load_corrections()
    assert corrections["mask_swapped"] == ["000020", "004418", "005227"]
    assert len(corrections["gender_wrong"]) == 17 and "001498-1" in corrections["gender_wrong"]
    assert corrections["age_under_30"] == ["001009", "001064", "001637", "001666", "001852"]
    assert corrections["age_60_or_over"] == ["004348"]


def test_corrections_change_exactly_the_listed_persons():
    records = _records()
    fixed, report = apply_corrections(records, load_corrections())
    by_id = {pid: rows for pid, rows in fixed.groupby("id")}
    original = {pid: rows for pid, rows in records.groupby("id")}
    swapped = by_id["000020"].set_index("path")["mask"]
    assert swapped["train/images/000020_x/normal.jpg"] == 1
    assert swapped["train/images/000020_x/incorrect_mask.jpg"] == 2
    assert (by_id["000020"]["mask"] == 0).sum() == 5
    assert (by_id["006359"]["gender"] == 0).all()
    assert (by_id["001009"]["age_group"] == 0).all()
    assert (by_id["004348"]["age_group"] == 2).all()
    assert (by_id["004348"]["age"] == 58).all()  # the real age stays in the table
    pd.testing.assert_frame_equal(by_id["123456"], original["123456"])
    assert len(report.changes) == 2 + 7 + 7 + 7
    assert set(report.changes["person"]) == {"000020_x", "006359_x", "001009_x", "004348_x"}
    assert fixed["class"].equals(pd.Series(labels.encode_class(
        fixed["mask"], fixed["gender"], fixed["age_group"]), name="class"))
    assert "004418" in report.absent and "ignored" in report.summary()


def test_own_corrections_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("gender_wrong: ['123456']\n")
    fixed, report = apply_corrections(_records(), load_corrections(path))
    assert set(report.changes["person"]) == {"123456_x"}
    assert (fixed.loc[fixed["id"] == "123456", "gender"] == 1).all()


def test_bad_corrections_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("gender_wrongg: ['1']\n")
    with pytest.raises(ValueError, match="unknown section"):
        load_corrections(path)
