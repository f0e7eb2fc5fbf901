"""Requests of the training commands: every mistake answered before torch loads."""

import subprocess
import sys


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


def test_training_without_a_config_says_which_recipe_it_uses(tmp_path):
    from typer.testing import CliRunner

    from maskclf.cli import app

    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no --config" in result.output and "efficientnet_b0" in result.output
    assert "maskclf recipes" in result.output
    listed = CliRunner().invoke(app, ["recipes", "--json"])
    assert listed.exit_code == 0 and '"name": "cpu"' in listed.stdout
