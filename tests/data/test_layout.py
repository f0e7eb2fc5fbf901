import shutil
from pathlib import Path

import pandas as pd
import pytest

from maskclf import labels
from maskclf.data.layout import DataError, parse_person_folder, read_eval, read_tables, read_train


def _first_person(root: Path) -> Path:
    return sorted((root / "train" / "images").iterdir())[0]


def test_records_follow_label_rules(synthetic_root):
    records = read_train(synthetic_root)
    assert len(records) == 12 * 7
    for row in records.to_dict("records"):
        folder = parse_person_folder(row["person"])
        assert row["mask"] == labels.MASK_STEMS[Path(row["path"]).stem]
        assert row["gender"] == folder.gender
        assert row["age"] == folder.age
        assert row["age_group"] == labels.age_bucket(folder.age)
        assert row["class"] == 6 * row["mask"] + 3 * row["gender"] + row["age_group"]


def test_person_is_the_folder_not_the_id(synthetic_root):
    records = read_train(synthetic_root)
    per_id = records.groupby("id")["person"].nunique()
    assert per_id.max() == 2  # the generator reuses one id for two persons
    assert records["person"].nunique() == 12


def test_hidden_files_skipped_and_extension_case_ignored(dataset_copy):
    person = _first_person(dataset_copy)
    (person / "._mask1.jpg").write_bytes(b"AppleDouble junk")
    (person / ".DS_Store").write_bytes(b"junk")
    normal = next(person.glob("normal.*"))
    normal.rename(person / f"normal{normal.suffix.upper()}")
    records = read_train(dataset_copy)
    mine = records[records["person"] == person.name]
    assert len(mine) == 7
    assert (mine["mask"] == 2).sum() == 1


def test_parse_folder_with_suffixed_id():
    parsed = parse_person_folder("001498-1_male_Asian_23")
    assert (parsed.id, parsed.gender, parsed.race, parsed.age) == ("001498-1", 0, "Asian", 23)


def _problems(root) -> str:
    with pytest.raises(DataError) as info:
        read_tables(root)
    return str(info.value)


def test_missing_train_csv(dataset_copy):
    (dataset_copy / "train" / "train.csv").unlink()
    assert "train.csv: file is missing" in _problems(dataset_copy)


def test_missing_images_folder(dataset_copy):
    shutil.rmtree(dataset_copy / "train" / "images")
    assert "images: images folder is missing" in _problems(dataset_copy)


def test_unparsable_folder_and_unknown_gender(dataset_copy):
    images = dataset_copy / "train" / "images"
    (images / "garbage").mkdir()
    (images / "000777_robot_Asian_30").mkdir()
    message = _problems(dataset_copy)
    assert "garbage: folder name must look like <id>_<gender>_<race>_<age>" in message
    assert "000777_robot_Asian_30: unknown gender 'robot'" in message


def test_unexpected_stem(dataset_copy):
    person = _first_person(dataset_copy)
    shutil.copy(next(person.glob("normal.*")), person / "selfie.jpg")
    assert "selfie.jpg: unexpected file stem 'selfie'" in _problems(dataset_copy)


def test_folder_and_csv_must_agree(dataset_copy):
    csv_path = dataset_copy / "train" / "train.csv"
    table = pd.read_csv(csv_path, dtype=str)
    dropped = table["path"].iloc[0]
    table.iloc[1:].to_csv(csv_path, index=False)
    ghost = pd.DataFrame([["999999", "male", "Asian", "40", "999999_male_Asian_40"]],
                         columns=table.columns)
    pd.concat([table.iloc[1:], ghost]).to_csv(csv_path, index=False)
    message = _problems(dataset_copy)
    assert f"{dropped}: person folder is not listed in train/train.csv" in message
    assert "lists person '999999_male_Asian_40' with no folder" in message


def test_corrupt_image(dataset_copy):
    person = _first_person(dataset_copy)
    target = next(person.glob("mask2.*"))
    target.write_bytes(target.read_bytes()[:300])
    message = _problems(dataset_copy)
    assert f"{target.name}: cannot be decoded as an image" in message


def test_missing_eval_image(dataset_copy):
    info = pd.read_csv(dataset_copy / "eval" / "info.csv")
    victim = info["ImageID"].iloc[3]
    (dataset_copy / "eval" / "images" / victim).unlink()
    assert f"{victim}: listed in eval/info.csv but missing" in _problems(dataset_copy)


def test_every_problem_reported_at_once(dataset_copy):
    (dataset_copy / "train" / "images" / "garbage").mkdir()
    info = pd.read_csv(dataset_copy / "eval" / "info.csv")
    (dataset_copy / "eval" / "images" / info["ImageID"].iloc[0]).unlink()
    with pytest.raises(DataError) as error:
        read_tables(dataset_copy)
    assert len(error.value.problems) == 2


def test_eval_keeps_info_order(synthetic_root):
    info = read_eval(synthetic_root)
    expected = pd.read_csv(synthetic_root / "eval" / "info.csv")["ImageID"].tolist()
    assert info["ImageID"].tolist() == expected
    assert all(p.startswith("eval/images/") for p in info["path"])
