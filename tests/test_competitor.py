"""A competitor's week without friction: paths that travel with a run, packaged recipes,
file modes, and the other rough edges of issue 17."""

import shutil
from pathlib import Path

import pytest
import yaml

from maskclf.config import absolute_paths, load_config, packaged_recipes
from maskclf.pipeline import resume_run, train_run
from maskclf.predict import predict_run
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

    from maskclf.progress import RunClock, RunProgressBar

    clock = RunClock(total_epochs=4)
    clock.label = "age fold 1/2"
    bar = RunProgressBar(clock)
    bar._trainer = SimpleNamespace(max_epochs=1)
    assert bar._get_train_description(0) == "age fold 1/2 epoch 1/1"  # not "Epoch 0/0"
    clock.seconds, clock.trained, clock.done = 30.0, 1, 1
    assert clock.eta() == "eta 1m30s"  # three epochs left at 30 s each
