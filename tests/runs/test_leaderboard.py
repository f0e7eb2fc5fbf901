import json

import pytest
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.config import dump_config
from maskclf.runs.leaderboard import config_diff, leaderboard
from tests.conftest import tiny_config


def _fake_run(folder, name, oof, cfg, finished=True):
    run = folder / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    if finished:
        validation = {"macro_f1": oof, "attribute_f1": {"mask": 0.9, "gender": 0.8, "age": oof},
                      "interval": {"level": 0.95, "persons": 100, "draws": 1000,
                                   "macro_f1": {"value": oof, "low": oof - 0.05,
                                                "high": oof + 0.04}}}
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


def test_a_note_round_trips_and_the_board_shows_the_latest_score_and_text(tmp_path):
    from maskclf.runs.leaderboard import add_note

    run = _fake_run(tmp_path, "a", 0.5, tiny_config())
    result = CliRunner().invoke(app, ["note", str(run), "--lb", "0.771", "first submission"])
    assert result.exit_code == 0, result.output
    add_note(run, None, "rerun with TTA")
    notes = json.loads((run / "notes.json").read_text())["notes"]
    assert [(n["lb"], n["text"]) for n in notes] == [(0.771, "first submission"),
                                                     (None, "rerun with TTA")]
    row = leaderboard(tmp_path).iloc[0]
    assert (row["lb"], row["note"]) == (0.771, "rerun with TTA")
    for bad in (["note", str(run)], ["note", str(run), "--lb", "77.1"]):
        assert CliRunner().invoke(app, bad).exit_code == 2


def test_the_board_tracks_data_epochs_and_how_cv_predicts_the_public_score(tmp_path):
    from maskclf.runs.leaderboard import add_note, lb_correlation

    for name, oof, lb in (("a", 0.5, 0.52), ("b", 0.6, 0.58), ("c", 0.7, 0.71), ("d", 0.8, None)):
        run = _fake_run(tmp_path, name, oof, tiny_config("train.epochs=7"))
        (run / "run.json").write_text(json.dumps({"started": "2026-12-01T10:00:00",
                                                  "data": "/somewhere/faces-real"}))
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "n_images": 3829}))
        if lb is not None:
            add_note(run, lb, None)
    table = leaderboard(tmp_path)
    assert set(table["data"]) == {"faces-real (3829)"} and set(table["epochs"]) == {7}
    found = lb_correlation(table)
    assert found["runs"] == 3 and found["pearson"] > 0.95 and found["spearman"] == 1.0
    assert lb_correlation(table.head(2)) is None


def test_runs_fit_80_columns_without_truncated_cells(tmp_path):
    cfg = tiny_config("model.name=efficientnet_lite0")
    for name in ("a-rather-long-run-name-2026-12-01", "b"):
        _fake_run(tmp_path, name, 0.61234, cfg)
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert all(column in result.output for column in ("oof_f1", "oof_ci", "lb", "note", "data"))
    assert ".56-.65" in result.output
    chosen = CliRunner(env={"COLUMNS": "80"}).invoke(
        app, ["runs", str(tmp_path), "--columns", "name,mask_f1,age_f1"])
    assert "age_f1" in chosen.output and "backbone" not in chosen.output
    wrong = CliRunner().invoke(app, ["runs", str(tmp_path), "--columns", "name,nope"])
    assert wrong.exit_code == 2 and "nope" in wrong.output


def test_a_run_saved_without_its_interval_gets_it_from_its_oof_rows(tmp_path):
    import numpy as np

    from maskclf.atomic import write_csv
    from maskclf.results.submission import oof_table

    run = _fake_run(tmp_path, "old", 0.5, tiny_config())
    summary = json.loads((run / "summary.json").read_text())
    del summary["validation"]["interval"]
    (run / "summary.json").write_text(json.dumps(summary))
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 18, 140)
    probs = np.eye(18)[np.where(rng.random(140) < 0.7, truth, 0)] * 0.8 + 0.2 / 18
    write_csv(oof_table([f"i{k}" for k in range(140)], probs, np.zeros(140), truth,
                        np.repeat(np.arange(20), 7)), run / "oof.csv")
    interval = leaderboard(tmp_path).iloc[0]["oof_ci"]
    low, high = (float("0" + part) for part in interval.split("-"))
    assert 0 < low < high < 1
