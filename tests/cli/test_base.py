import json
import subprocess
import sys

import pandas as pd
import pytest
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
    payload = json.loads(result.stdout)
    assert payload == {"persons": 6, "train_images": 42, "eval_images": 7}


def test_bad_data_is_one_clear_error(dataset_copy):
    (dataset_copy / "train" / "train.csv").unlink()
    result = runner.invoke(app, ["check-data", str(dataset_copy)])
    assert result.exit_code == 2
    assert "train.csv: file is missing" in result.output
    assert "Traceback" not in result.output


def test_score_json(tmp_path):
    pd.DataFrame({"ImageID": ["a", "b", "c"], "class": [0, 6, 12]}).to_csv(
        tmp_path / "labels.csv", index=False)
    pd.DataFrame({"ImageID": ["a", "b", "c"], "ans": [0, 6, 13]}).to_csv(
        tmp_path / "sub.csv", index=False)
    result = runner.invoke(app, ["score", str(tmp_path / "sub.csv"), "--labels",
                                 str(tmp_path / "labels.csv"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
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
    assert result.exit_code == 2 and "one override, -o train.epochs=N" in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "--name", "x"])
    assert result.exit_code == 2 and "needs -o train.epochs=N" in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not a maskclf run directory" in result.output


def _json_of(args: list[str]) -> dict:
    """Run a command with --json; stdout must be exactly one JSON document."""
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_json_commands_keep_stdout_for_one_document(synthetic_root, tmp_path):
    from tests.conftest import TINY_OVERRIDES

    overrides = [arg for o in TINY_OVERRIDES for arg in ("-o", o)]
    summary = _json_of(["train", "--data", str(synthetic_root), "--out", str(tmp_path),
                        "--name", "j", *overrides, "-o", "data.val_ratio=0.3"])
    run = tmp_path / "j"
    assert summary["run"] == str(run) and summary["validation"]["n"] > 0
    predicted = _json_of(["predict", str(run), "--data", str(synthetic_root)])
    assert predicted["n_images"] == 14 and len(predicted["checkpoints"]) == 1
    labels_file = str(synthetic_root / "eval" / "labels.csv")
    scores = _json_of(["score", predicted["submission"], "--labels", labels_file])
    assert scores["n"] == 14
    checked = _json_of(["validate", predicted["submission"], "--info",
                        str(synthetic_root / "eval" / "info.csv")])
    assert checked["valid"] and checked["rows"] == 14
    diffed = _json_of(["diff", predicted["submission"], predicted["predictions"]])
    assert diffed["changed"] == 0  # the submission is the argmax of the predictions
    voted = _json_of(["ensemble", predicted["predictions"], predicted["predictions"],
                      "--out", str(tmp_path / "ens")])
    assert voted["mode"] == "soft" and voted["n"] == 14


def test_only_maskclf_errors_become_one_line_messages(monkeypatch, tmp_path):
    from maskclf.results import ensemble

    def broken(*args, **kwargs):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(ensemble, "diff", broken)
    pd.DataFrame({"ImageID": ["a"], "ans": [0]}).to_csv(tmp_path / "s.csv", index=False)
    result = runner.invoke(app, ["diff", str(tmp_path / "s.csv"), str(tmp_path / "s.csv")])
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)


def test_help_groups_every_command_by_job_in_order():
    from typer.testing import CliRunner

    from maskclf.cli import app
    from maskclf.cli.base import JOBS

    text = CliRunner().invoke(app, ["--help"], terminal_width=100).output
    headings = [line[:-1] for line in text.splitlines() if line[:-1] in JOBS]
    assert headings == list(JOBS)
    listed = [line.split()[0] for line in text.split("Start and data:")[1].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    assert sorted(listed) == sorted(name for names in JOBS.values() for name in names)
    assert listed[:2] == ["demo", "check-data"] and "Commands:" not in text
