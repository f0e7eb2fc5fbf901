"""K-fold runs: fresh weights per fold, out-of-fold coverage, label options."""

import copy
import json
import logging

import pandas as pd
import pytest
import torch

from maskclf.data.datamodule import training_classes
from maskclf.data.layout import read_train
from maskclf.train import fold as fold_fitting
from maskclf.train.execute import train_run
from maskclf.train.plan import prepare_records
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # trains real (tiny) models end to end


@pytest.fixture(scope="module")
def kfold_run(synthetic_root, tmp_path_factory):
    """A 3-fold run that records each network's weights when it is created."""
    created = []
    real_build = fold_fitting.training_net

    def recording_build(*args, **kwargs):
        net = real_build(*args, **kwargs)
        created.append((copy.deepcopy(net.state_dict()), net))
        return net

    patch = pytest.MonkeyPatch()
    patch.setattr(fold_fitting, "training_net", recording_build)
    try:
        result = train_run(tiny_config("data.folds=3", "train.epochs=2"), synthetic_root,
                                    tmp_path_factory.mktemp("runs"), "kf", interactive=False)
    finally:
        patch.undo()
    return result, created


def test_no_fold_starts_from_another_folds_weights(kfold_run):
    _, created = kfold_run
    assert len(created) == 3
    first_start, first_net = created[0]
    first_end = first_net.state_dict()
    key = next(k for k, v in first_start.items() if v.is_floating_point())
    assert not torch.equal(first_start[key], first_end[key])  # fold 0 did train
    for start, _ in created[1:]:
        assert torch.equal(start[key], first_start[key])  # same fresh seeded init
        assert not torch.equal(start[key], first_end[key])


def test_each_fold_has_its_own_checkpoints(kfold_run):
    result, _ = kfold_run
    for k in range(3):
        assert (result.run / f"fold{k}/checkpoints/best.ckpt").is_file()
        assert (result.run / f"fold{k}/confusion.csv").is_file()
    folds = pd.read_csv(result.run / "folds.csv")
    assert sorted(folds["fold"].unique()) == [0, 1, 2]


def test_oof_covers_every_training_image_once(kfold_run, synthetic_root):
    result, _ = kfold_run
    oof = pd.read_csv(result.run / "oof.csv")
    records = read_train(synthetic_root)
    assert oof["ImageID"].is_unique
    assert set(oof["ImageID"]) == set(records["path"])
    folds = pd.read_csv(result.run / "folds.csv").set_index("person")["fold"]
    persons = oof["ImageID"].str.split("/").str[2]
    assert (oof["fold"].to_numpy() == persons.map(folds).to_numpy()).all()


def test_summary_has_per_fold_spread_and_pooled_oof(kfold_run):
    result, _ = kfold_run
    summary = json.loads((result.run / "summary.json").read_text())
    f1s = [f["macro_f1"] for f in summary["folds"]]
    assert len(f1s) == 3
    assert summary["cv"]["macro_f1_mean"] == pytest.approx(sum(f1s) / 3)
    assert summary["cv"]["oof_macro_f1"] == summary["validation"]["macro_f1"]
    assert summary["validation"]["n"] == 84
    confusion = pd.read_csv(result.run / "confusion.csv", index_col=0)
    assert confusion.to_numpy().sum() == 84


def test_single_fold_option(synthetic_root, tmp_path):
    result = train_run(tiny_config("data.folds=3"), synthetic_root, tmp_path, "one",
                                fold=1, interactive=False)
    assert [f["fold"] for f in result.summary["folds"]] == [1]
    assert not (result.run / "fold0").exists()
    with pytest.raises(ValueError, match="--fold 7 does not exist"):
        train_run(tiny_config("data.folds=3"), synthetic_root, tmp_path, "bad", fold=7)


def test_age_threshold_moves_training_labels_not_scores(synthetic_root):
    records, _ = prepare_records(tiny_config("data.age_old_threshold=45"),
                                          synthetic_root)
    scored = records["class"].to_numpy()
    plain = training_classes(records, 60)
    moved = training_classes(records, 45)
    assert (plain == scored).all()  # the default cut trains on the true buckets
    changed = moved != plain
    expected = ((records["age"] >= 45) & (records["age"] < 60)).to_numpy()
    assert changed.any() and (changed == expected).all()
    assert (moved[changed] % 3 == 2).all()


def test_corrections_are_logged_in_the_run(synthetic_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="maskclf")
    own = tmp_path / "fix.yaml"
    person = read_train(synthetic_root)["id"].iloc[10]
    own.write_text(f"gender_wrong: ['{person}', '777777']\n")
    result = train_run(tiny_config(f"data.corrections={own}", "data.val_ratio=0.3"),
                                synthetic_root, tmp_path / "runs", "fix", interactive=False)
    changes = pd.read_csv(result.run / "corrections.csv", dtype=str)
    records = read_train(synthetic_root)
    assert len(changes) == 7 * records.loc[records["id"] == person, "person"].nunique()
    assert "777777" in caplog.text
