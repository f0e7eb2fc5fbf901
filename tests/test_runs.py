import json

import pytest
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.config import dump_config
from maskclf.runs import config_diff, leaderboard
from tests.conftest import tiny_config


def _fake_run(folder, name, oof, cfg, finished=True):
    run = folder / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    if finished:
        validation = {"macro_f1": oof, "attribute_f1": {"mask": 0.9, "gender": 0.8, "age": oof}}
        (run / "summary.json").write_text(json.dumps({
            "validation": validation, "seconds": 120.0,
            "cv": {"macro_f1_mean": oof - 0.01, "macro_f1_std": 0.02, "oof_macro_f1": oof}}))
    return run


def test_leaderboard_ranks_runs_by_their_own_f1(tmp_path):
    _fake_run(tmp_path, "low", 0.5, tiny_config())
    _fake_run(tmp_path, "high", 0.7, tiny_config("model.head=multihead", "data.folds=5"))
    _fake_run(tmp_path, "cut", 0.0, tiny_config(), finished=False)
    table = leaderboard(tmp_path)
    assert table["name"].tolist() == ["high", "low", "cut"]
    high = table.iloc[0]
    assert high["oof_f1"] == 0.7 and high["cv_f1"] == pytest.approx(0.69)
    assert high["head"] == "multihead" and high["folds"] == 5 and high["minutes"] == 2.0
    assert high["age_f1"] == 0.7 and table.iloc[2]["status"] == "unfinished"
    assert leaderboard(tmp_path, sort="name", ascending=True)["name"].tolist() == [
        "cut", "high", "low"]
    with pytest.raises(ValueError, match="cannot sort by"):
        leaderboard(tmp_path, sort="nope")


def test_diff_lists_only_settings_that_differ(tmp_path):
    a = _fake_run(tmp_path, "a", 0.5, tiny_config())
    b = _fake_run(tmp_path, "b", 0.6, tiny_config("optim.lr=0.01", "model.head=multihead"))
    diff = config_diff(a, b)
    assert set(diff["key"]) == {"optim.lr", "model.head"}
    row = diff.set_index("key").loc["model.head"]
    assert (row["a"], row["b"]) == ("single", "multihead")


def test_runs_command_prints_the_board_and_the_diff(tmp_path):
    _fake_run(tmp_path, "a", 0.5, tiny_config())
    _fake_run(tmp_path, "b", 0.6, tiny_config("optim.lr=0.01"))
    result = CliRunner().invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["name"] for r in rows] == ["b", "a"]
    result = CliRunner().invoke(app, ["runs", "--diff", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0 and "optim.lr" in result.output
