"""Runs and exports written before maskclf's modules moved into packages still load: nothing
saved names a module (checkpoints hold plain data read with ``weights_only=True``; run
directories and exports are CSV, JSON, YAML and ONNX).

``fixtures/before-packages`` was written by the flat-layout code (commit ac19429): a
``test_efficientnet`` run of one epoch on ``make_synthetic(persons=12, eval_persons=2,
seed=0)`` (the ``synthetic_root`` data) and its export; only the files that prediction,
reports and the leaderboard read are kept (the finished run's ``last.ckpt`` and logs are
not).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.data.layout import read_eval
from maskclf.models.factory import load_net
from maskclf.predict.run_backend import open_predictor
from maskclf.results.submission import read_submission
from maskclf.runs.directory import RunDir
from maskclf.runs.leaderboard import leaderboard

FIXTURE = Path(__file__).parent / "fixtures" / "before-packages"


@pytest.fixture
def saved(tmp_path) -> tuple[Path, Path]:
    """The saved run (in a runs folder of its own) and export, copied: commands write."""
    shutil.copytree(FIXTURE / "run", tmp_path / "runs" / "old-run")
    shutil.copytree(FIXTURE / "export", tmp_path / "export")
    return tmp_path / "runs" / "old-run", tmp_path / "export"


def test_a_checkpoint_written_before_loads_with_its_spec(saved):
    run, _ = saved
    loaded = load_net(RunDir(run).file("fold0/checkpoints/best.ckpt"))
    assert loaded.spec.task == "single" and loaded.spec.cfg.model.name == "test_efficientnet"
    assert loaded.net.get_classifier().out_features == 18


def test_a_run_and_its_export_written_before_predict_alike(saved, synthetic_root):
    run, export = saved
    paths = read_eval(synthetic_root)["path"].tolist()[:6]
    by_run = open_predictor(run).predict(synthetic_root, paths)
    by_export = open_predictor(export).predict(synthetic_root, paths)
    assert by_run.shape == (6, 18)
    np.testing.assert_allclose(by_run.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(by_run - by_export).max() < 1e-4  # the tolerance the export was made to


def test_a_run_written_before_has_its_oof_rows_and_a_row_on_the_leaderboard(saved):
    run, _ = saved
    oof = RunDir(run).require_oof("this test")
    assert len(oof) == RunDir(run).read_summary()["validation"]["n"]
    board = leaderboard(run.parent)
    assert list(board["name"]) == ["old-run"] and board["status"].iloc[0] == "finished"
    assert board["oof_f1"].iloc[0] == pytest.approx(
        RunDir(run).read_summary()["cv"]["oof_macro_f1"], abs=1e-4)


def test_predict_writes_a_valid_submission_from_a_run_written_before(saved, synthetic_root):
    run, _ = saved
    result = CliRunner().invoke(app, ["predict", str(run), "--data", str(synthetic_root)])
    assert result.exit_code == 0, result.output
    submission = read_submission(run / RunDir.SUBMISSION)
    assert list(submission["ImageID"]) == list(read_eval(synthetic_root)["ImageID"])
