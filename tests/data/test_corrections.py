import pandas as pd
import pytest
import yaml

from maskclf import labels
from maskclf.data.corrections import Corrections, apply_corrections, load_corrections
from maskclf.errors import InputFileError
from maskclf.train.execute import train_run
from tests.conftest import tiny_config


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
    corrections = load_corrections().persons
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
    pd.testing.assert_frame_equal(by_id["123456"].drop(columns=["unknown", "folder_class"]),
                                  original["123456"])
    assert len(report.changes) == 2 + 7 + 7 + 7
    assert (fixed["unknown"] == 0).all()
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


def test_unknown_labels_keep_the_folder_class_and_say_what_is_unknown(tmp_path):
    path = tmp_path / "unsure.yaml"
    path.write_text(yaml.safe_dump({
        "gender_unknown": ["123456"], "age_30_to_59": ["000020"],
        "images": {"004348_x/mask1.jpg": {"gender": "unknown", "age": "unknown"},
                   "train/images/004348_x/normal.jpg": {"mask": "incorrect"},
                   "999999_x/mask1.jpg": {"mask": "unknown"}}}))
    records = _records()
    fixed, report = apply_corrections(records, load_corrections(path))
    fixed = fixed.set_index("path")
    person = fixed[fixed["id"] == "123456"]
    assert (person["unknown"] == labels.UNKNOWN_BITS["gender"]).all()
    assert (person["class"] == records.set_index("path").loc[person.index, "class"]).all()
    assert fixed.loc["train/images/004348_x/mask1.jpg", "unknown"] == 2 + 4
    assert fixed.loc["train/images/004348_x/normal.jpg", "mask"] == 1
    assert (fixed.loc[fixed["id"] == "000020", "age_group"] == 1).all()
    counts = report.counts()
    assert counts["unknown_images"] == {"mask": 0, "gender": 7 + 1, "age": 1}
    assert counts["changed_images"] == 1 + 7 and counts["changed_persons"] == 2
    assert counts["absent"] == ["999999_x/mask1.jpg"]
    assert "made unknown" in report.summary() and "gender 8" in report.summary()


def test_scores_leave_an_unknown_attribute_out(tmp_path):
    from maskclf.metrics import score

    records = _records()
    truth = records.assign(unknown=0)
    truth.loc[truth["id"] == "123456", "unknown"] = labels.UNKNOWN_BITS["gender"]
    wrong_gender = labels.encode_class(records["mask"], 1 - records["gender"],
                                       records["age_group"])
    predicted = records["class"].where(truth["unknown"] == 0, wrong_gender)
    scored = score(labels.truth_codes(truth), predicted)
    assert scored["attribute_f1"]["gender"] == 1.0 and scored["macro_f1"] == 1.0
    assert scored["unknown"] == {"mask": 0, "gender": 7, "age": 0}
    assert score(records["class"], predicted)["attribute_f1"]["gender"] < 1.0


@pytest.mark.parametrize(("text", "message"), [
    ("gender_wrongg: ['1']\n", "unknown section 'gender_wrongg' .did you mean 'gender_wrong'"),
    ("images: {'a_x/mask1.jpg': {hair: unknown}}\n", "no attribute 'hair'"),
    ("images: {'a_x/mask1.jpg': {age: '60+'}}\n", "age '60.' is not one of"),
    ("images: {'a_x/mask1.jpg': unknown}\n", "must map attributes to values"),
    ("gender_unknown: {a: 1}\n", "gender_unknown must be a list"),
    ("- 1\n", "must map sections"),
])
def test_bad_corrections_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputFileError, match=message) as raised:
        load_corrections(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_file_another_process_is_writing_is_refused(synthetic_root, tmp_path):
    import json
    import socket
    import subprocess
    import sys

    path = tmp_path / "corrections.yaml"
    path.write_text("gender_wrong: ['1']\n")
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "corrections.yaml.lock").write_text(json.dumps(
            {"host": socket.gethostname(), "pid": writer.pid, "started": "now",
             "command": "maskclf review run"}))
        with pytest.raises(InputFileError, match=f"being written by process {writer.pid}"):
            train_run(tiny_config(f"data.corrections={path}"), synthetic_root,
                      tmp_path / "runs", "x", interactive=False)
        assert not (tmp_path / "runs").exists()
    finally:
        writer.kill()
        writer.wait()
    assert load_corrections(path).persons["gender_wrong"] == ["1"]  # its writer is gone


@pytest.mark.parametrize(("text", "fragment"), [
    ("images: {'a_x/mask1.jpg': {gender: other}}\n", "gender 'other' is not one of"),
    ("age_unknwon: ['1']\n", "did you mean 'age_unknown'"),
    ("!!python/object/apply:os.system ['touch /tmp/maskclf-hostile-pwned']\n", "not plain YAML"),
])
def test_train_with_a_bad_corrections_file_is_one_line_and_writes_nothing(
        synthetic_root, tmp_path, text, fragment):
    from typer.testing import CliRunner

    from maskclf.cli import app
    from tests.helpers.cli_result import TINY, assert_clear_error_or_works

    path = tmp_path / "corrections.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["train", "--data", str(synthetic_root), "--out",
                                      str(tmp_path / "runs"), *TINY,
                                      "-o", f"data.corrections={path}"])
    assert_clear_error_or_works(result, 2, fragment)
    assert str(path) in result.output and not (tmp_path / "runs").exists()


def test_corrections_never_move_a_person_between_training_and_validation():
    from maskclf.data.corrections import folder_labels
    from maskclf.data.splits import make_folds

    records = pd.concat([_records().assign(
        person=lambda r, k=k: r["person"] + f"{k}", id=lambda r, k=k: r["id"] + f"{k}")
        for k in range(6)], ignore_index=True)
    flips = Corrections(persons={**Corrections().persons, "gender_wrong": [
        f"{pid}{k}" for pid in ("000020", "001009") for k in range(6)]})
    fixed, _ = apply_corrections(records, flips)
    assert not fixed["class"].equals(records["class"])
    plain = make_folds(records, 3, 0.0, seed=7)
    corrected = make_folds(folder_labels(fixed), 3, 0.0, seed=7)
    pd.testing.assert_frame_equal(plain, corrected)
    assert not make_folds(fixed, 3, 0.0, seed=7).equals(plain)  # stratified on the flips
