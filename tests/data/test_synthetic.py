import hashlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from maskclf.data.layout import read_tables
from maskclf.data.synthetic import STEMS, make_synthetic
from maskclf.errors import MaskclfError


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_layout_is_the_competition_layout(synthetic_root):
    train = pd.read_csv(synthetic_root / "train" / "train.csv", dtype=str)
    assert list(train.columns) == ["id", "gender", "race", "age", "path"]
    assert len(train) == 12
    suffixes = set()
    for folder in train["path"]:
        files = sorted((synthetic_root / "train" / "images" / folder).iterdir())
        assert sorted(f.stem for f in files) == sorted(STEMS)
        suffixes |= {f.suffix for f in files}
        with Image.open(files[0]) as image:
            assert image.size == (384, 512)
    assert suffixes == {".jpg", ".jpeg", ".png"}
    info = pd.read_csv(synthetic_root / "eval" / "info.csv")
    truth = pd.read_csv(synthetic_root / "eval" / "labels.csv")
    assert list(info.columns) == ["ImageID", "ans"]
    assert info["ImageID"].tolist() == truth["ImageID"].tolist()
    assert len(info) == 2 * 7
    assert truth["class"].between(0, 17).all()
    assert all((synthetic_root / "eval" / "images" / i).is_file() for i in info["ImageID"])


def test_generated_set_passes_every_check(synthetic_root):
    records, info = read_tables(synthetic_root)
    assert len(records) == 84 and len(info) == 14
    assert records["id"].duplicated().any()  # a reused id: two persons, one id
    assert records["id"].str.endswith("-1").any()


def test_all_classes_present_with_enough_persons(tmp_path):
    root = make_synthetic(tmp_path / "d", persons=6, eval_persons=1, seed=3)
    records, _ = read_tables(root)
    assert sorted(records["class"].unique()) == list(range(18))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = make_synthetic(tmp_path / "a", persons=6, eval_persons=1, seed=7)
    second = make_synthetic(tmp_path / "b", persons=6, eval_persons=1, seed=7)
    third = make_synthetic(tmp_path / "c", persons=6, eval_persons=1, seed=8)
    assert _digest(first) == _digest(second)
    assert _digest(first) != _digest(third)


def test_refuses_to_overwrite(synthetic_root):
    with pytest.raises(MaskclfError, match="already holds a dataset"):
        make_synthetic(synthetic_root, persons=6, eval_persons=1)
