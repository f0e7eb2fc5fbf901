"""Each concept has one owner: registries answer unknown names the same way, the config
checks every name and names the override that set it, a key typo is answered before torch
loads, and a run directory says how to finish it."""

import subprocess
import sys

import pandas as pd
import pytest

from maskclf.config import ConfigError, load_config
from maskclf.errors import UsageError
from maskclf.registry import FACE_DETECTORS, LOSSES, TASKS, VIEWS, Registry
from maskclf.results.submission import oof_persons, oof_table
from maskclf.runs.directory import RunDir


def test_a_registry_lists_gets_and_suggests():
    shapes = Registry("shape", "draw.shape")
    shapes.register("circle")("o")
    assert shapes.names() == ["circle"] and "CIRCLE" in shapes and shapes.get("circle") == "o"
    with pytest.raises(ConfigError, match=r"draw\.shape: unknown shape 'circel'.*'circle'"):
        shapes.get("circel")
    with pytest.raises(ValueError, match="registered twice"):
        shapes.register("circle")("again")


def test_every_registry_is_filled_by_its_module():
    assert LOSSES.names() == ["cross_entropy", "focal", "label_smoothing", "soft_f1"]
    assert VIEWS.names() == ["hflip", "scale", "shift"]
    assert {"single", "multihead", "mask", "gender", "age"} == set(TASKS.names())
    assert FACE_DETECTORS.names() == ["haar", "mtcnn"]


@pytest.mark.parametrize(("override", "message"), [
    ("loss.name=focl", r"loss\.name: unknown loss 'focl'.*'focal'\? \(from -o loss.name=focl\)"),
    ("loss.name={cross_entropy: 1, soft_f2: 1}", r"unknown loss 'soft_f2'.*'soft_f1'"),
    ("loss.attributes={age: {name: focla}}", r"unknown loss 'focla'"),
    ("model.head=multi", r"model\.head: unknown head 'multi'; known: multihead, per_attribute"),
    ("model.head=mask", r"unknown head 'mask'"),  # a task, but not a head
    ("data.face_detector=yunet", r"data\.face_detector: unknown face detector 'yunet'"),
    ("predict.tta=[vflip]", r"predict\.tta: unknown TTA view 'vflip'.*'hflip'"),
    ("optim.lrr=1", r"optim\.lrr: unknown key \(did you mean 'lr'\?\) \(from -o optim.lrr=1\)"),
    ("data.image_size=128,96", r"write a list in brackets: \[128,96\]"),
])
def test_every_name_is_checked_with_the_config_and_the_override_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_bad_loss_name_fails_before_any_run_directory(synthetic_root, tmp_path):
    from typer.testing import CliRunner

    from maskclf.cli import app

    result = CliRunner().invoke(app, ["train", "--data", str(synthetic_root), "--out",
                                      str(tmp_path / "runs"), "-o", "loss.name=focl"])
    assert result.exit_code == 2 and "Did you mean 'focal'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_a_config_key_typo_is_answered_before_torch_is_imported(tmp_path):
    script = """
import sys
from maskclf.cli import app
try:
    app(["train", "--data", "data", "-o", "optim.lrr=1"], prog_name="maskclf")
except SystemExit as exc:
    print(exc.code, "torch" in sys.modules, "maskclf.config" in sys.modules)
"""
    (tmp_path / "data").mkdir()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.stdout.split() == ["2", "False", "True"], done.stderr
    assert "optim.lrr: unknown key (did you mean 'lr'?) (from -o optim.lrr=1)" in done.stderr


def test_importing_the_config_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, maskclf.config, maskclf.tta; "
                           "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_a_missing_data_folder_is_answered_before_torch_is_imported(tmp_path):
    script = """
import sys
from maskclf.cli import app
try:
    app(["train", "--config", "cpu", "--data", "nowhere"], prog_name="maskclf")
except SystemExit as exc:
    print(exc.code, "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "data folder nowhere does not exist" in done.stderr


def test_an_unfinished_run_says_how_to_finish_it_once(tmp_path):
    run = RunDir.create(tmp_path, "half")
    with pytest.raises(UsageError, match=r"half has not finished \(summary.json is missing\): "
                                         r"finish it with `maskclf train --resume .*half`, or "
                                         "pass --allow"):
        run.require_finished("pass --allow")
    (run.path / RunDir.SUMMARY).write_text("{}")
    assert run.require_finished() is run


def test_the_oof_table_has_a_person_and_old_files_still_name_one():
    table = oof_table(["train/images/p1/mask1.jpg"], [[1.0] + [0.0] * 17], 0, [0], ["p1"])
    assert list(table.columns[-3:]) == ["fold", "class", "person"]
    assert oof_persons(table).tolist() == ["p1"]
    old = pd.DataFrame({"ImageID": ["train/images/000002_male_Asian_30/normal.jpg"]})
    assert oof_persons(old).tolist() == ["000002_male_Asian_30"]


@pytest.mark.slow
def test_a_refit_is_planned_like_any_run_and_records_its_parent(synthetic_root, tmp_path):
    import json

    from maskclf.train.execute import train
    from maskclf.train.plan import plan
    from maskclf.train.request import TrainRequest

    from .conftest import TINY_OVERRIDES

    request = TrainRequest(overrides=(*TINY_OVERRIDES, "data.folds=2"), data=synthetic_root,
                           runs_dir=tmp_path, name="cv")
    parent = train(request, interactive=False)
    oof = pd.read_csv(parent.run / RunDir.OOF, dtype={"person": str})
    assert (oof["person"] == oof_persons(oof.drop(columns="person"))).all()
    planned = plan(TrainRequest(refit=parent.run))
    assert planned.cfg.data.folds == 0 and planned.name == "cv-refit"
    assert planned.record["refit_of"]["run"] == str(parent.run.resolve())
    assert not (tmp_path / "cv-refit").exists()  # a plan writes nothing
    refit = train(TrainRequest(refit=parent.run), interactive=False)
    record = json.loads((refit.run / RunDir.RECORD).read_text())
    assert refit.run.name == "cv-refit"
    assert record["refit_of"]["run"] == str(parent.run.resolve())
    assert record["refit_of"]["best_epochs"] and refit.summary["validation"] is None
    with pytest.raises(UsageError, match="--refit trains the run's own config"):
        plan(TrainRequest(refit=parent.run, fold=0))


def test_a_search_space_value_is_checked_against_the_registries(tmp_path):
    from maskclf.train.tune import load_space

    space = tmp_path / "space.yaml"
    space.write_text("loss.name: {choice: [focl, cross_entropy]}\n")
    with pytest.raises(ConfigError, match=r"(?s)loss\.name does not fit the config:.*unknown loss "
                                          "'focl'"):
        load_space(space, {})
