import json
import subprocess
import sys

import pandas as pd
from typer.testing import CliRunner

from maskclf.cli import app

runner = CliRunner()


def test_make_synthetic_then_check_data(tmp_path):
    target = tmp_path / "d"
    result = runner.invoke(app, ["make-synthetic", str(target), "--persons", "6",
                                 "--eval-persons", "1", "--seed", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["check-data", str(target), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload == {"persons": 6, "train_images": 42, "eval_images": 7}


def test_bad_data_is_one_clear_error(dataset_copy):
    (dataset_copy / "train" / "train.csv").unlink()
    result = runner.invoke(app, ["check-data", str(dataset_copy)])
    assert result.exit_code == 2
    assert "train.csv: file is missing" in result.output
    assert "Traceback" not in result.output


def test_score_prints_json_last(tmp_path):
    pd.DataFrame({"ImageID": ["a", "b", "c"], "class": [0, 6, 12]}).to_csv(
        tmp_path / "labels.csv", index=False)
    pd.DataFrame({"ImageID": ["a", "b", "c"], "ans": [0, 6, 13]}).to_csv(
        tmp_path / "sub.csv", index=False)
    result = runner.invoke(app, ["score", str(tmp_path / "sub.csv"), "--labels",
                                 str(tmp_path / "labels.csv"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["accuracy"] == 2 / 3
    assert payload["attribute_f1"]["mask"] == 1.0


def test_validate_command(tmp_path):
    pd.DataFrame({"ImageID": ["a", "b"], "ans": [0, 0]}).to_csv(tmp_path / "info.csv",
                                                                index=False)
    pd.DataFrame({"ImageID": ["b", "a"], "ans": [1, 2]}).to_csv(tmp_path / "s.csv", index=False)
    result = runner.invoke(app, ["validate", str(tmp_path / "s.csv"), "--info",
                                 str(tmp_path / "info.csv")])
    assert result.exit_code == 2 and "not in info.csv order" in result.output


def test_config_error_names_key(synthetic_root, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(synthetic_root), "--out",
                                 str(tmp_path), "-o", "optim.lrr=1"])
    assert result.exit_code == 2
    assert "optim.lrr: unknown key" in result.output


def test_python_dash_m_works():
    completed = subprocess.run([sys.executable, "-m", "maskclf", "--help"], capture_output=True,
                               text=True, check=True)
    assert "make-synthetic" in completed.stdout and "demo" in completed.stdout


def test_resume_keeps_the_run_config(tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "-o", "optim.lr=1"])
    assert result.exit_code == 2 and "drop --config, -o" in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not a maskclf run directory" in result.output
