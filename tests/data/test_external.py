"""Outside sources (``data.external``): rows that know only some attributes, checked before
anything is written."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from maskclf import labels
from maskclf.config import ExternalSource, load_config
from maskclf.data.external import describe, read_sources
from maskclf.data.layout import read_train
from maskclf.errors import ConfigError, DataError, MaskclfError, MissingFileError


def make_source(folder: Path, rows: list[dict], images_from: Path | None = None) -> Path:
    """A source folder: ``rows`` as labels.csv, each ``file`` a small image (copied from
    ``images_from``'s training images, or a grey square)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    donors = [] if images_from is None else [images_from / p
                                             for p in read_train(images_from)["path"]]
    for i, row in enumerate(rows):
        name = str(row.get("file", row.get("name")))
        if "/" in name:
            continue
        target = folder / "images" / name
        if donors:
            shutil.copy(donors[i % len(donors)], target)
        else:
            from PIL import Image

            Image.new("RGB", (48, 64), (128, 128, 128)).save(target)
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


def test_a_source_row_keeps_what_it_knows_and_unknown_for_the_rest(tmp_path):
    folder = make_source(tmp_path / "faces", [
        {"file": "a.jpg", "gender": "female", "age": "67"},
        {"file": "b.jpg", "gender": "", "age": "12"},
        {"file": "c.jpg", "gender": "Male", "age": ""}])
    rows = read_sources([ExternalSource(path=folder)])
    assert list(rows["mask"]) == [labels.UNKNOWN] * 3  # no mask column: unknown
    assert list(rows["gender"]) == [1, labels.UNKNOWN, 0]
    assert list(rows["age_group"]) == [2, 0, labels.UNKNOWN]
    assert list(rows["age"]) == [67, 12, labels.UNKNOWN]
    assert list(rows["source"]) == [1, 1, 1]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in rows["path"])
    codes = labels.partial_code(rows["mask"].to_numpy(), rows["gender"].to_numpy(),
                                rows["age_group"].to_numpy(), rows["source"].to_numpy())
    _, known, source = labels.split_code(codes)
    assert [list(k) for k in known] == [[False] * 3, [True, False, True], [True, True, False]]
    assert list(source) == [1, 1, 1]
    described = describe(rows, [ExternalSource(path=folder)])[0]
    assert described["rows"] == 3 and described["known"] == {"mask": 0, "gender": 2, "age": 2}
    assert described["values"]["age"] == {"<30": 1, "30-59": 0, ">=60": 1}


def test_a_value_the_folder_shares_fills_its_blank_cells(tmp_path):
    folder = make_source(tmp_path / "masks", [{"file": "a.jpg", "mask": ""},
                                              {"file": "b.jpg", "mask": "incorrect"}])
    rows = read_sources([ExternalSource(path=folder, mask="wear")])
    assert list(rows["mask"]) == [0, 1]  # the file's own cell wins


def _case(tmp_path, rows, **source):
    folder = make_source(tmp_path / "src", rows)
    return [ExternalSource(path=folder, **source)]


@pytest.mark.parametrize(("rows", "fragment"), [
    ([{"name": "a.jpg", "age": "3"}], "lacks column(s) ['file']"),
    ([{"file": "a.jpg", "note": "x"}], "has no attribute column"),
    ([{"file": "a.jpg", "gender": "femal"}],
     "row 2, column gender: unknown gender 'femal' (known: male, female); did you mean "
     "'female'?"),
    ([{"file": "a.jpg", "mask": "mask"}], "row 2, column mask: unknown mask 'mask'"),
    ([{"file": "a.jpg", "age": "forty"}], "row 2, column age: age 'forty' is not a number"),
    ([{"file": "a.jpg", "age": "130"}], "age '130' is not a number of years in 0-120"),
    ([{"file": "a.jpg", "age": "-3"}], "age '-3' is not a number"),
    ([{"file": "a.jpg", "age": "3"}, {"file": "a.jpg", "age": "4"}],
     "lists 'a.jpg' more than once"),
    ([{"file": "../a.jpg", "age": "3"}], "row 2, column file: '../a.jpg' must be a file "
                                         "inside images/"),
    ([{"file": "/etc/passwd", "age": "3"}], "must be a file inside images/"),
])
def test_a_bad_source_is_one_error_naming_the_file_row_and_column(tmp_path, rows, fragment):
    sources = _case(tmp_path, rows)
    with pytest.raises(MaskclfError) as raised:
        read_sources(sources)
    assert fragment in str(raised.value)
    assert "labels.csv" in str(raised.value)


def test_missing_empty_and_undecodable_images_are_named(tmp_path):
    sources = _case(tmp_path, [{"file": "a.jpg", "age": "3"}, {"file": "b.jpg", "age": "4"},
                               {"file": "c.jpg", "age": "5"}])
    folder = sources[0].path / "images"
    (folder / "a.jpg").unlink()
    (folder / "b.jpg").write_bytes(b"")
    (folder / "c.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError) as raised:
        read_sources(sources)
    message = str(raised.value)
    assert "row 2, column file: images/a.jpg does not exist" in message
    assert "row 3, column file: images/b.jpg is empty" in message
    assert "images/c.jpg: is not an image" in message


def test_an_empty_source_a_missing_folder_and_the_competition_folder_are_refused(
        tmp_path, synthetic_root):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels.csv").write_text("file,age\n")
    with pytest.raises(DataError, match="has no rows"):
        read_sources([ExternalSource(path=empty)])
    with pytest.raises(DataError, match="is not a folder"):
        read_sources([ExternalSource(path=tmp_path / "nowhere")])
    with pytest.raises(DataError, match="is a competition data folder"):
        read_sources([ExternalSource(path=synthetic_root)], synthetic_root)
    with pytest.raises(MissingFileError, match="labels.csv"):
        read_sources([ExternalSource(path=tmp_path)])


@pytest.mark.parametrize(("override", "fragment"), [
    ("data.external=[{path: x, share: 1.5}]", "data.external.0.share"),
    ("data.external=[{path: x, weight: 0}]", "data.external.0.weight"),
    ("data.external=[{path: x, share: 0.6}, {path: y, share: 0.5}]", "add up to 1.1"),
    ("data.external=[{path: x, gender: femal}]", "data.external.0.gender"),
    ("data.external=[{path: x, colour: red}]", "data.external.0.colour"),
])
def test_a_share_weight_or_value_out_of_range_is_a_config_error(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize(("override", "setting"), [
    ("aug.mixup_alpha=0.2", "aug.mixup_alpha / aug.cutmix_alpha"),
    ("aug.cutmix_mode=vertical_half", "aug.mixup_alpha / aug.cutmix_alpha"),
    ("distill.teacher=t.csv", "distill.teacher"),
    ("loss.age_ordinal_smoothing=0.1", "loss.age_ordinal_smoothing"),
    ("data.sampler=balanced", "data.sampler: balanced"),
])
def test_settings_that_cannot_read_partial_rows_are_refused_by_name(override, setting):
    with pytest.raises(ConfigError, match=f"data.external with {setting}".replace(".", r"\.")):
        load_config(None, ["data.external=[x]", override])


@pytest.mark.parametrize(("overrides", "setting"), [
    ([], "without data.external"),
    (["data.external=[x]", "train.batch_size=7"], "with an odd train.batch_size"),
    (["data.external=[x]", "train.devices=2"], "with several devices"),
    (["data.external=[x]", "model.head=per_attribute"], "with model.head: per_attribute"),
    (["data.external=[x]", "train.average_checkpoints=3", "data.folds=2"],
     "with train.average_checkpoints"),
])
def test_split_batchnorm_is_refused_where_batches_cannot_be_halved(overrides, setting):
    with pytest.raises(ConfigError, match=f"model.outside_batchnorm: split {setting}"):
        load_config(None, ["model.outside_batchnorm=split", *overrides])


def test_class_counts_count_each_attribute_over_the_rows_that_know_it():
    codes = np.array([labels.encode_class(0, 1, 2),
                      labels.partial_code(labels.UNKNOWN, 0, 2, 1),
                      labels.partial_code(labels.UNKNOWN, labels.UNKNOWN, 1, 2)])
    counts = labels.ClassCounts.of(codes)
    assert counts.classes.sum() == 1 and counts.classes[labels.encode_class(0, 1, 2)] == 1
    assert list(counts.attributes["mask"]) == [1, 0, 0]
    assert list(counts.attributes["gender"]) == [1, 1]
    assert list(counts.attributes["age"]) == [0, 1, 2]


def test_outside_rows_train_never_validate_and_make_their_share_of_each_epoch(
        synthetic_root, tmp_path):
    from maskclf.data.datamodule import FoldDataModule
    from maskclf.data.layout import read_tables
    from maskclf.data.splits import attach_folds, make_folds
    from tests.conftest import tiny_config

    folder = make_source(tmp_path / "ages", [{"file": f"{i}.jpg", "age": str(60 + i)}
                                             for i in range(30)], images_from=synthetic_root)
    cfg = tiny_config(f"data.external=[{{path: {folder}, share: 0.25}}]", "data.folds=2")
    records, _ = read_tables(synthetic_root)
    records = attach_folds(records, make_folds(records, 2, 0.0, cfg.seed))
    outside = read_sources(cfg.data.external)
    data = FoldDataModule(cfg, synthetic_root, records, 0, outside)
    assert not data.val_rows["path"].isin(outside["path"]).any()
    own = (data.train_rows["source"].fillna(0) == 0).sum()
    [(pool, count)] = data.draws()
    assert len(pool) == 30 and count == round(0.25 * own / 0.75)  # a quarter of the epoch
    counts = data.class_counts()
    assert counts.attributes["age"][2] >= 30 and counts.attributes["mask"].sum() == own
    gender_only = FoldDataModule(cfg, synthetic_root, records, 0, outside, attribute="gender")
    assert (gender_only.train_rows["source"].fillna(0) == 0).all()  # they do not know it
    split = FoldDataModule(cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"outside_batchnorm": "split"})}), synthetic_root, records, 0, outside)
    [(pool, count)] = split.draws()
    assert len(pool) == 30 and count == own  # the outside half of every batch
    sampler = split.train_dataloader().sampler
    assert sampler.halves_of == cfg.train.batch_size and len(sampler) % sampler.halves_of == 0


def test_check_data_checks_outside_sources_and_says_what_they_know(synthetic_root, tmp_path):
    from typer.testing import CliRunner

    from maskclf.cli import app

    good = make_source(tmp_path / "masks", [{"file": "a.jpg", "mask": "wear"},
                                            {"file": "b.jpg", "mask": ""}])
    result = CliRunner().invoke(app, ["check-data", str(synthetic_root), "--external",
                                      str(good), "--json"])
    assert result.exit_code == 0, result.output
    import json

    [source] = json.loads(result.stdout)["external"]
    assert source["rows"] == 2 and source["known"] == {"mask": 1, "gender": 0, "age": 0}
    bad = make_source(tmp_path / "bad", [{"file": "a.jpg", "mask": "worn"}])
    result = CliRunner().invoke(app, ["check-data", str(synthetic_root), "--external",
                                      str(bad)])
    assert result.exit_code == 2
    assert "row 2, column mask: unknown mask 'worn'" in result.output
