"""maskclf from Python: the same workflows and checks as the CLI, results as objects."""

from __future__ import annotations

import pandas as pd
import pytest

import maskclf
from maskclf.api import as_overrides
from maskclf.errors import ConfigError, MissingFileError, UsageError
from maskclf.labels import CLASS_COLUMNS
from tests.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow  # trains a tiny model


def test_overrides_from_a_dict_read_as_the_command_line_reads_them():
    assert as_overrides({"train": {"epochs": 3}, "data.image_size": [64, 48],
                         "data.corrections": False, "optim.lr": 1e-3}) == (
        "train.epochs=3", "data.image_size=[64, 48]", "data.corrections=false",
        "optim.lr=0.001")
    assert as_overrides(["a=1"]) == ("a=1",)


def test_a_run_trained_from_python_gives_its_results_as_objects(synthetic_root, tmp_path):
    run = maskclf.Run.train({"train": {"epochs": 1}}, data=synthetic_root, out=tmp_path,
                            name="api", overrides=TINY_OVERRIDES)
    assert run.config.train.epochs == 1
    assert run.path == tmp_path / "api" and repr(run).startswith("Run(")
    assert run.scores == run.summary["validation"] and 0 <= run.scores["macro_f1"] <= 1
    assert list(run.oof.columns[:19]) == ["ImageID", *CLASS_COLUMNS]
    predictions = run.predict()
    info = pd.read_csv(synthetic_root / "eval" / "info.csv")
    assert predictions["ImageID"].tolist() == info["ImageID"].tolist()
    assert (run.path / "submission.csv").is_file()
    images = run.predict(images=[synthetic_root / "eval" / "images"])
    assert len(images) == len(info) and set(images["gender"]) <= {"male", "female"}
    result = maskclf.compare(run, run.path / "oof.csv", draws=100)
    assert result["systems"][1]["verdict"]["macro_f1"] == "within noise"
    assert run.report().name == "report.md"
    exported = run.export(tmp_path / "export")
    assert isinstance(exported, maskclf.Export)
    onnx = exported.predict(data=synthetic_root)
    assert onnx["ImageID"].tolist() == predictions["ImageID"].tolist()
    assert (onnx[CLASS_COLUMNS] - predictions[CLASS_COLUMNS]).abs().to_numpy().max() < 1e-4


def test_bad_input_is_one_of_maskclfs_exceptions_before_any_work(synthetic_root, tmp_path):
    with pytest.raises(ConfigError, match="trian"):
        maskclf.Run.train(data=synthetic_root, out=tmp_path / "runs",
                          overrides={"trian.epochs": 1})
    with pytest.raises(ConfigError, match="epochz"):
        maskclf.Run.train({"train": {"epochz": 1}}, data=synthetic_root, out=tmp_path / "runs")
    with pytest.raises(MissingFileError, match="nowhere"):
        maskclf.Run.train(data=tmp_path / "nowhere", out=tmp_path / "runs")
    with pytest.raises(MissingFileError):
        maskclf.Run(tmp_path / "not-a-run")
    with pytest.raises(UsageError):
        maskclf.Run.train(data=synthetic_root, out=tmp_path / "runs", fold=-3,
                          overrides=[*TINY_OVERRIDES, "data.folds=2"])
    with pytest.raises(UsageError, match="--budget"):
        maskclf.run_auto(synthetic_root, "5 parsecs", out=tmp_path / "auto")
    with pytest.raises(MissingFileError, match="not an export"):
        maskclf.Export(tmp_path)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "auto").exists()
