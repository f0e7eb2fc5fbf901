"""A competitor's week without friction: paths that travel with a run, packaged recipes,
file modes, and the other rough edges of issue 17."""

import shutil
from pathlib import Path

import pytest
import yaml

from maskclf.config import absolute_paths, load_config, packaged_recipes
from maskclf.predict.workflows import predict_run
from maskclf.train.execute import resume_run, train_run
from tests.conftest import tiny_config


def test_relative_path_settings_become_absolute_and_names_stay_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pseudo").mkdir()
    (tmp_path / "fixes.yaml").write_text("version: 1\n")
    cfg = absolute_paths(tiny_config("data.extra=[pseudo]", "data.cache_dir=cache",
                                     "data.corrections=fixes.yaml", "aug.pipeline=strong",
                                     "model.weights=efficientnet_lite0"))
    assert cfg.data.extra == [tmp_path / "pseudo"]
    assert cfg.data.cache_dir == tmp_path / "cache"  # made absolute before it exists
    assert cfg.data.corrections == tmp_path / "fixes.yaml"
    assert str(cfg.aug.pipeline) == "strong"  # a preset name, not a file here
    assert str(cfg.model.weights) == "efficientnet_lite0"  # a packaged weights name
    assert absolute_paths(tiny_config()) == tiny_config()  # nothing to change


def test_packaged_recipes_are_listed_and_found_by_name():
    names = [recipe["name"] for recipe in packaged_recipes()]
    assert {"demo", "cpu", "baseline", "multihead", "per_attribute"} <= set(names)
    assert "space" not in names  # a tuning space is not a recipe
    demo = next(r for r in packaged_recipes() if r["name"] == "demo")
    assert demo["model"] == load_config("demo").model.name == "test_byobnet"


@pytest.mark.slow
def test_a_run_moved_to_another_folder_still_resumes_and_predicts(synthetic_root, tmp_path,
                                                                  monkeypatch):
    import timm
    import torch

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    torch.save(timm.create_model("test_byobnet").state_dict(), "start.pth")
    run = train_run(tiny_config("model.weights=start.pth", "data.cache_dir=cache"),
                    synthetic_root, "runs", "r", interactive=False).run
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["weights"] == str(work / "start.pth")
    assert saved["data"]["cache_dir"] == str(work / "cache")
    moved = Path(shutil.move(run, tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path / "elsewhere")
    (moved / "summary.json").unlink()  # as if it had stopped before its summary
    assert resume_run(moved, interactive=False).summary["validation"] is not None
    result = predict_run(moved)  # no data folder given: the one in run.json
    assert result.n_images == 14 and result.submission.is_file()


def test_training_without_a_config_says_which_recipe_it_uses(tmp_path):
    from typer.testing import CliRunner

    from maskclf.cli import app

    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no --config" in result.output and "efficientnet_b0" in result.output
    assert "maskclf recipes" in result.output
    listed = CliRunner().invoke(app, ["recipes", "--json"])
    assert listed.exit_code == 0 and '"name": "cpu"' in listed.stdout


@pytest.mark.slow
def test_progress_lines_name_the_fold_and_the_time_left(synthetic_root, tmp_path, capsys):
    train_run(tiny_config("data.folds=2", "train.epochs=2"), synthetic_root, tmp_path, "p",
              interactive=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if " epoch " in line]
    assert [line.split(" (")[0] for line in lines] == [
        "fold 1/2 epoch 1/2", "fold 1/2 epoch 2/2", "fold 2/2 epoch 1/2", "fold 2/2 epoch 2/2"]
    assert all("eta " in line for line in lines)
    assert lines[-1].split("eta ")[1].startswith("0m00s")  # nothing left after the last


def test_the_bar_counts_epochs_from_one_and_shows_the_time_left():
    from types import SimpleNamespace

    from maskclf.train.progress import RunClock, RunProgressBar

    clock = RunClock(total_epochs=4)
    clock.label = "age fold 1/2"
    bar = RunProgressBar(clock)
    bar._trainer = SimpleNamespace(max_epochs=1)
    assert bar._get_train_description(0) == "age fold 1/2 epoch 1/1"  # not "Epoch 0/0"
    clock.seconds, clock.trained, clock.done = 30.0, 1, 1
    assert clock.eta() == "eta 1m30s"  # three epochs left at 30 s each


@pytest.mark.slow
def test_an_early_stopped_fold_stops_within_patience_of_its_best(synthetic_root, tmp_path):
    import pandas as pd

    cfg = tiny_config("train.epochs=8", "train.early_stopping_patience=2", "optim.lr=1e-12",
                      "sched.name=none")
    run = train_run(cfg, synthetic_root, tmp_path, "es", interactive=False).run
    f1 = pd.read_csv(run / "fold0" / "metrics.csv").dropna(subset=["val/f1"])["val/f1"]
    best_epoch = int(f1.to_numpy().argmax())
    assert len(f1) - 1 - best_epoch == 2 and len(f1) < 8  # stopped, patience epochs after
    with pytest.raises(Exception, match="early_stopping_patience"):
        tiny_config("train.early_stopping_patience=2", "data.val_ratio=0")


@pytest.mark.slow
def test_a_finished_run_trains_longer_as_a_new_run_that_keeps_its_history(synthetic_root,
                                                                          tmp_path):
    import json

    import pandas as pd

    from maskclf.models.weights import safe_torch_load
    from maskclf.train.execute import continue_run
    from maskclf.train.module import lr_multiplier

    parent = train_run(tiny_config("train.epochs=2"), synthetic_root, tmp_path, "short",
                       interactive=False).run
    before = pd.read_csv(parent / "fold0" / "metrics.csv")
    longer = continue_run(parent, 4, interactive=False)
    assert longer.run.name == "short-more"
    after = pd.read_csv(longer.run / "fold0" / "metrics.csv")
    epochs = after.dropna(subset=["val/f1"])["epoch"].tolist()
    assert epochs == [0, 1, 2, 3]  # the parent's epochs, then the new ones
    pd.testing.assert_frame_equal(after.dropna(subset=["val/f1"]).head(2).reset_index(drop=True),
                                  before.dropna(subset=["val/f1"]).reset_index(drop=True),
                                  check_like=True)
    assert pd.read_csv(parent / "fold0" / "metrics.csv").equals(before)  # parent untouched
    record = json.loads((longer.run / "run.json").read_text())
    assert record["continued_from"] == {"run": str(parent.resolve()), "epochs": 2}
    last = safe_torch_load(longer.run / "fold0" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 3
    state = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    f1 = after.dropna(subset=["val/f1"])["val/f1"]
    assert float(state["best_model_score"]) == pytest.approx(f1.max(), abs=1e-6)
    assert state["best_model_path"].startswith(str(longer.run))
    lr = after.dropna(subset=["lr-AdamW/pg1"])["lr-AdamW/pg1"].tolist()
    cfg = tiny_config()  # the 4-epoch cosine (4 steps an epoch) from the first new step
    assert lr[2] == pytest.approx(cfg.optim.lr * lr_multiplier(8, 16, 4, cfg.sched), rel=1e-4)
    assert lr[2] > cfg.optim.lr * lr_multiplier(7, 8, 4, cfg.sched)  # the parent's last rate
    with pytest.raises(Exception, match="already trained 4 epochs"):
        continue_run(longer.run, 3)
