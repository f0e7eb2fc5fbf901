"""End to end: train a tiny model, predict, and check the run directory contract."""

import json
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from maskclf.data.layout import DataError
from maskclf.data.synthetic import make_synthetic
from maskclf.labels import CLASS_COLUMNS
from maskclf.predict.workflows import predict_run
from maskclf.train.execute import train_run
from tests.conftest import TINY_OVERRIDES, tiny_config

pytestmark = pytest.mark.slow  # trains real (tiny) models end to end


@pytest.fixture(scope="module")
def learnable_root(tmp_path_factory):
    """Enough persons for a validation F1 that means something (48 persons)."""
    return make_synthetic(tmp_path_factory.mktemp("learn") / "data", persons=48, eval_persons=3,
                          seed=1)


@pytest.fixture(scope="module")
def trained(learnable_root, tmp_path_factory):
    cfg = tiny_config("train.epochs=20", "optim.lr=0.005", "data.val_ratio=0.25",
                      "data.image_size=[96,72]", "sched.warmup_epochs=1")
    return train_run(cfg, learnable_root, tmp_path_factory.mktemp("runs"), "tiny",
                     interactive=False)


def test_validation_f1_clearly_above_chance(trained):
    validation = trained.summary["validation"]
    # uniform guessing over 18 classes scores a macro F1 near 0.05
    assert validation["macro_f1"] > 0.15  # measured 0.254, deterministic on CPU
    assert validation["attribute_f1"]["gender"] > 0.7


def test_run_directory_contract(trained):
    run = trained.run
    for name in ("config.yaml", "folds.csv", "oof.csv", "summary.json", "run.json",
                 "fold0/metrics.csv", "fold0/checkpoints/best.ckpt",
                 "fold0/checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert list((run / "fold0" / "tb").glob("events.out.tfevents.*"))
    record = json.loads((run / "run.json").read_text())
    assert record["versions"]["torch"] == metadata.version("torch")
    assert record["versions"]["maskclf"] and record["versions"]["lightning"]
    assert record["command"] and record["folds"] == [0] and record["data"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["epochs"] == 20 and config["model"]["name"] == "test_byobnet"
    metrics = pd.read_csv(run / "fold0" / "metrics.csv")
    assert {"train/loss_epoch", "val/f1", "val/acc", "val/loss"} <= set(metrics.columns)
    assert metrics["val/f1"].notna().sum() == 20
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validation"]["macro_f1"] == pytest.approx(metrics["val/f1"].max(), abs=1e-3)


def test_best_checkpoint_is_the_best_epoch(trained):
    state = torch.load(trained.run / "fold0/checkpoints/best.ckpt", weights_only=True)
    callback = next(v for k, v in state["callbacks"].items() if "ModelCheckpoint" in k)
    metrics = pd.read_csv(trained.run / "fold0" / "metrics.csv")
    assert float(callback["best_model_score"]) == pytest.approx(metrics["val/f1"].max(), abs=1e-6)


def test_oof_covers_validation_persons_only(trained, learnable_root):
    folds = pd.read_csv(trained.run / "folds.csv")
    oof = pd.read_csv(trained.run / "oof.csv")
    val_persons = set(folds.loc[folds["fold"] == 0, "person"])
    oof_persons = {path.split("/")[2] for path in oof["ImageID"]}
    assert oof_persons == val_persons
    assert len(oof) == 7 * len(val_persons)
    assert oof[CLASS_COLUMNS].sum(axis=1).round(4).eq(1).all()


def test_predict_follows_shuffled_info_order(trained, learnable_root, tmp_path):
    import shutil

    data = shutil.copytree(learnable_root, tmp_path / "data")
    info = pd.read_csv(data / "eval" / "info.csv")
    shuffled = info.sample(frac=1.0, random_state=3)
    assert shuffled["ImageID"].tolist() != info["ImageID"].tolist()
    shuffled.to_csv(data / "eval" / "info.csv", index=False)
    result = predict_run(trained.run, data)
    submission = pd.read_csv(result.submission)
    assert submission["ImageID"].tolist() == shuffled["ImageID"].tolist()
    predictions = pd.read_csv(result.predictions)
    assert predictions["ImageID"].tolist() == shuffled["ImageID"].tolist()
    assert (predictions[CLASS_COLUMNS].to_numpy().argmax(axis=1) == submission["ans"]).all()
    # rows are paired with their own image: predicting in the original order gives the same
    # answer for each ImageID
    info.to_csv(data / "eval" / "info.csv", index=False)
    again = pd.read_csv(predict_run(trained.run, data).submission)
    merged = submission.merge(again, on="ImageID", suffixes=("_shuffled", "_plain"))
    assert (merged["ans_shuffled"] == merged["ans_plain"]).all()


def test_second_run_with_same_name_gets_new_directory(synthetic_root, tmp_path):
    cfg = tiny_config("data.val_ratio=0", "train.report=true")
    first = train_run(cfg, synthetic_root, tmp_path, "same", interactive=False)
    marker = first.run / "config.yaml"
    before = marker.read_text()
    second = train_run(cfg, synthetic_root, tmp_path, "same", interactive=False)
    assert first.run.name == "same" and second.run.name == "same-2"
    assert marker.read_text() == before
    assert second.summary["validation"] is None
    assert (second.run / "fold0/checkpoints/last.ckpt").is_file()
    assert not (second.run / "fold0/checkpoints/best.ckpt").exists()
    report = (second.run / "report/report.md").read_text()  # curves, but nothing to score
    assert "without validation" in report and (second.run / "report/curves.png").is_file()


def test_bad_data_fails_before_any_run_directory(dataset_copy, tmp_path):
    (dataset_copy / "train" / "images" / "not_a_person").mkdir()
    runs = tmp_path / "runs"
    with pytest.raises(DataError, match="not_a_person"):
        train_run(tiny_config(), dataset_copy, runs, "x", interactive=False)
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize("head", ["multihead", "per_attribute"])
def test_a_run_with_an_outside_source_trains_and_reports_it(synthetic_root, tmp_path, head):
    from tests.data.test_external import make_source

    folder = make_source(tmp_path / "faces", [
        {"file": f"{i}.jpg", "gender": ("male", "female", "")[i % 3], "age": str(20 + 7 * i)}
        for i in range(12)], images_from=synthetic_root)
    result = train_run(tiny_config(f"model.head={head}",
                                   f"data.external=[{{path: {folder}, weight: 0.5}}]"),
                       synthetic_root, tmp_path, head, interactive=False)
    [source] = result.summary["external"]
    assert source["rows"] == 12 and source["weight"] == 0.5
    assert source["known"] == {"mask": 0, "gender": 8, "age": 12}
    oof = pd.read_csv(result.run / "oof.csv")
    assert not oof["ImageID"].str.contains("faces").any()  # never validated
    from maskclf.reports.run_report import write_report

    report = Path(write_report(result.run, synthetic_root)["report"]).read_text()
    assert "outside data: `faces` (every row each epoch, loss weight 0.5)" in report
    assert "| faces | 12 | 0 | 8 | 12 |" in report


def test_split_batchnorm_keeps_outside_statistics_apart_from_the_ones_inference_uses(
        synthetic_root, tmp_path):
    import torch

    from maskclf.models.factory import load_net
    from maskclf.models.weights import safe_torch_load
    from tests.data.test_external import make_source

    grey = make_source(tmp_path / "grey", [{"file": f"{i}.png", "age": "70"} for i in range(40)])
    result = train_run(tiny_config("model.outside_batchnorm=split", "train.epochs=3",
                                   f"data.external=[{{path: {grey}, share: 0.3}}]"),
                       synthetic_root, tmp_path, "split", interactive=False)
    checkpoint = result.run / "fold0" / "checkpoints" / "last.ckpt"
    state = safe_torch_load(checkpoint, "test")["state_dict"]
    main = state["net.stem.bn.running_var"]
    outside = state["net.stem.bn.aux_bn.0.running_var"]
    assert (outside < main).all() and outside.mean() < main.mean() / 2  # grey squares: flat
    net = load_net(checkpoint).net  # the inference network: no auxiliary layers
    assert not any("aux_bn" in name for name in net.state_dict())
    assert torch.equal(net.state_dict()["stem.bn.running_var"], main)
    oof = pd.read_csv(result.run / "oof.csv")
    assert len(oof) and not oof["ImageID"].str.contains("grey").any()


def test_a_bad_outside_source_refuses_the_run_before_anything_is_written(synthetic_root,
                                                                          tmp_path):
    from typer.testing import CliRunner

    from maskclf.cli import app
    from tests.data.test_external import make_source

    folder = make_source(tmp_path / "faces", [{"file": "a.jpg", "gender": "femal"}])
    result = CliRunner().invoke(app, [
        "train", "--data", str(synthetic_root), "--out", str(tmp_path / "runs"),
        *[arg for o in TINY_OVERRIDES for arg in ("-o", o)],
        "-o", f"data.external=[{folder}]"])
    assert result.exit_code == 2
    assert "row 2, column gender: unknown gender 'femal'" in result.output
    assert "did you mean 'female'?" in result.output
    assert not (tmp_path / "runs").exists()


def test_labels_made_unknown_train_as_partial_rows_and_leave_their_scores(synthetic_root,
                                                                          tmp_path):
    from maskclf.metrics import macro_f1
    from maskclf.reports.run_report import write_report

    first_masks = sorted((synthetic_root / "train" / "images").glob("*/mask1.*"))
    persons = [path.parent.name for path in first_masks]
    corrections = tmp_path / "corrections.yaml"
    corrections.write_text(yaml.safe_dump({  # every person's mask1 photo: gender unknown
        "images": {f"{path.parent.name}/{path.name}": {"gender": "unknown"}
                   for path in first_masks},
        "age_unknown": ["000002-1"]}))
    result = train_run(tiny_config(f"data.corrections={corrections}", "model.head=multihead"),
                       synthetic_root, tmp_path, "unsure", interactive=False)
    counts = result.summary["corrections"]
    assert counts["unknown_images"] == {"mask": 0, "gender": len(persons), "age": 7}
    oof = pd.read_csv(result.run / "oof.csv")
    unsure = oof["ImageID"].str.contains("/mask1.")
    assert unsure.any()
    assert (oof.loc[unsure, "unknown"] & 2).all() and not (oof.loc[~unsure, "unknown"] & 2).any()
    predicted = oof[CLASS_COLUMNS].to_numpy().argmax(axis=1)
    known = ~unsure.to_numpy()
    validation = result.summary["validation"]
    assert validation["unknown"]["gender"] == int(unsure.sum())
    assert validation["attribute_f1"]["gender"] == pytest.approx(
        macro_f1((oof["class"].to_numpy() // 3 % 2)[known], (predicted // 3 % 2)[known]))
    assert validation["attribute_f1"]["mask"] == pytest.approx(
        macro_f1(oof["class"].to_numpy() // 6, predicted // 6))  # every row knows its mask
    report = Path(write_report(result.run, synthetic_root)["report"]).read_text()
    assert f"made unknown: gender of {len(persons)}, age of 7 image(s)" in report


def test_labels_made_unknown_refuse_a_setting_that_needs_every_label(synthetic_root, tmp_path):
    from maskclf.errors import ConfigError

    corrections = tmp_path / "corrections.yaml"
    corrections.write_text("gender_unknown: ['" + sorted(
        p.name for p in (synthetic_root / "train" / "images").iterdir())[0].split("_")[0]
        + "']\n")
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="made|makes labels of 7 image.s. unknown, which "
                                          "aug.mixup_alpha"):
        train_run(tiny_config(f"data.corrections={corrections}", "aug.mixup_alpha=0.2"),
                  synthetic_root, runs, "x", interactive=False)
    assert not runs.exists()
