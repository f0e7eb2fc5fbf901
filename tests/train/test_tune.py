"""Optuna studies: search spaces, failed and pruned trials, and two workers sharing a study
through SQLite and through a real PostgreSQL server."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.config import ConfigError
from maskclf.errors import UsageError
from maskclf.train.tune import load_space, run_study, sample
from tests.conftest import TINY_OVERRIDES

POSTGRES_URL = os.environ.get("MASKCLF_TEST_POSTGRES",
                              "postgresql+psycopg://maskclf:maskclf@127.0.0.1:5432/maskclf_test")
GOOD_LR, BAD_LR = 0.01, 1e-9  # validation F1 after epoch 2: 0.050 vs 0.003 on this data


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("optim.lr: {uniform: [0.1, 1]}", "uniform"),
    ("optim.lr: {float: [0.1, 1], choice: [1]}", "exactly one"),
    ("optim.lrr: {float: [0.1, 1]}", "did you mean 'lr'"),
    ("loss.gamma: {float: [1, 2], when: {loss.name: focal}}", "does not sample"),
    ("data.image_size: {choice: [[64]]}", "data.image_size"),
])
def test_bad_spaces_are_named_before_any_trial(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_space(_space(tmp_path, text), {})


def test_conditional_keys_are_sampled_only_when_they_apply(tmp_path):
    space = load_space(_space(tmp_path, "loss.name: {choice: [cross_entropy, focal]}\n"
                                        "loss.gamma: {float: [1, 3], when: {loss.name: focal}}\n"
                                        "data.image_size: {choice: [[64, 48], [32, 24]]}\n"),
                       {})
    focal = sample(optuna.trial.FixedTrial({"loss.name": '"focal"', "loss.gamma": 2.5,
                                            "data.image_size": "[32, 24]"}), space)
    assert focal == {"loss.name": "focal", "loss.gamma": 2.5, "data.image_size": [32, 24]}
    plain = sample(optuna.trial.FixedTrial({"loss.name": '"cross_entropy"',
                                            "data.image_size": "[64, 48]"}), space)
    assert plain == {"loss.name": "cross_entropy", "data.image_size": [64, 48]}


def test_an_invalid_combination_fails_its_trial_and_the_study_goes_on(synthetic_root, tmp_path):
    raw = {"aug": {"mixup_alpha": 0.2}, "train": {"epochs": 1}}
    space = _space(tmp_path, "train.batch_size: {choice: [7, 8]}\n")
    state = run_study(raw, synthetic_root, space, trials=1, study_name="s", out=tmp_path,
                      sampler_seed=0)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.enqueue_trial({"train.batch_size": "7"})
    run_study(raw, synthetic_root, space, trials=1, study_name="s", out=tmp_path)
    failed = [t for t in optuna.load_study(study_name="s", storage=f"sqlite:///"
                                           f"{tmp_path / 'study.db'}").trials
              if t.state == optuna.trial.TrialState.FAIL]
    assert failed and "even train.batch_size" in failed[-1].user_attrs["error"]
    assert state["trials"] == 1


def _postgres_or_skip() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), connect_timeout=3):
            return POSTGRES_URL
    except Exception as exc:  # no driver, no server, no role or database
        reason = f"no PostgreSQL at {POSTGRES_URL.split('@')[-1]}: {type(exc).__name__}: {exc}"
        if os.environ.get("MASKCLF_REQUIRE_POSTGRES"):
            pytest.fail(reason + " (MASKCLF_REQUIRE_POSTGRES is set: CI must have one)")
        pytest.skip(reason)


@pytest.mark.slow
def test_two_workers_share_one_study(synthetic_root, tmp_path):
    """Through PostgreSQL: SQLite cannot lock rows, so two workers may pop one queued trial
    (optuna/optuna#4002) — the README says SQLite is for one worker at a time."""
    out = tmp_path / "study"
    out.mkdir()
    url = _postgres_or_skip()
    name = f"shared-{uuid.uuid4().hex[:8]}"
    # known trials first: two that learn (the pruner's startup trials), then four that do not
    seeded = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for lr in (GOOD_LR, GOOD_LR, BAD_LR, BAD_LR, BAD_LR, BAD_LR):
        seeded.enqueue_trial({"optim.lr": lr})
    space = _space(tmp_path, "optim.lr: {log_float: [1.0e-9, 0.05]}\n")
    overrides = [*TINY_OVERRIDES, "train.epochs=3", "data.val_ratio=0.5"]
    command = [sys.executable, "-m", "maskclf", "tune", "--study", name, "--storage", url,
               "--out", str(out), "--data", str(synthetic_root), "--space", str(space),
               "--trials", "3", "--threads", "1", "--startup-trials", "2",
               "--warmup-epochs", "0", *[a for o in overrides for a in ("-o", o)]]
    workers = [subprocess.Popen([*command, "--sampler-seed", str(seed)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [worker.communicate(timeout=240) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]

    trials = optuna.load_study(study_name=name, storage=url).trials
    assert sorted(t.number for t in trials) == list(range(6))  # the counts add up, unique
    states = [t.state for t in trials]
    assert optuna.trial.TrialState.PRUNED in states
    assert optuna.trial.TrialState.RUNNING not in states
    for trial in trials:
        assert (out / "runs" / f"trial-{trial.number:04d}" / "config.yaml").is_file()

    report = tmp_path / "report"
    result = CliRunner().invoke(app, ["tune", "--study", name, "--storage", url, "--out",
                                      str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    best = yaml.safe_load((report / "best.yaml").read_text())
    assert best["optim"]["lr"] == pytest.approx(GOOD_LR)
    trained = CliRunner().invoke(app, ["train", "--config", str(report / "best.yaml"), "--data",
                                       str(synthetic_root), "--out", str(tmp_path / "final"),
                                       "-o", "train.epochs=1"])
    assert trained.exit_code == 0, trained.output


def test_a_search_space_value_is_checked_against_the_registries(tmp_path):
    from maskclf.train.tune import load_space

    space = tmp_path / "space.yaml"
    space.write_text("loss.name: {choice: [focl, cross_entropy]}\n")
    with pytest.raises(ConfigError, match=r"(?s)loss\.name does not fit the config:.*unknown loss "
                                          "'focl'"):
        load_space(space, {})


def test_a_worker_that_loses_the_race_to_create_the_tables_opens_them_after(tmp_path,
                                                                            monkeypatch):
    """Two workers opening a new PostgreSQL database at once both create Optuna's tables;
    the loser's unique violation means the tables are there a moment later."""
    import optuna
    import sqlalchemy

    from maskclf.train import tune

    calls = []

    def storage(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise sqlalchemy.exc.IntegrityError(
                "CREATE TYPE studydirection", {}, Exception(
                    'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'
                    "\nDETAIL: Key (typname, typnamespace)=(studydirection, 2200) already "
                    "exists."))
        if "refused" in url:
            raise sqlalchemy.exc.OperationalError("connect", {}, Exception("refused"))
        return "opened"

    monkeypatch.setattr(optuna.storages, "RDBStorage", storage)
    monkeypatch.setattr(tune, "SCHEMA_WAIT_S", 0.0)
    assert tune.open_storage("postgresql+psycopg://u:p@db/new", tmp_path) == "opened"
    assert len(calls) == 2
    calls.clear()
    calls.append("the race is already lost once: the next failure is not a race")
    with pytest.raises(UsageError, match=r"cannot open the study storage db/refused"):
        tune.open_storage("postgresql+psycopg://u:p@db/refused", tmp_path)
    assert len(calls) == 2  # a server that refuses is not retried
