"""One process per run: a live run is locked, a second trainer is refused naming the holder,
predict says the run is still training, runs shows it running, a dead holder's lock is
taken over with a warning."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from maskclf.errors import UsageError
from maskclf.runs.directory import RunDir
from maskclf.runs.lock import LOCK, live_holder, training_lock
from tests.conftest import tiny_config


def _hold(run: RunDir, pid: int) -> None:
    (run.path / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                             "started": "2026-12-01T10:00:00",
                                             "command": "maskclf train --resume r"}))


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    return int(done.stdout)


def test_a_lock_is_held_while_training_and_released_after(tmp_path):
    run = RunDir.create(tmp_path, "r")
    with training_lock(run.path, "maskclf train"):
        holder = live_holder(run.path)
        assert holder["pid"] == os.getpid() and holder["command"] == "maskclf train"
        refused = pytest.raises(UsageError, match=rf"being trained by process {os.getpid()} on ")
        with refused, training_lock(run.path, "a second trainer"):
            pass
    assert not (run.path / LOCK).exists()
    with pytest.raises(RuntimeError), training_lock(run.path, "fails"):
        raise RuntimeError("boom")
    assert not (run.path / LOCK).exists()  # released when training fails too


def test_a_dead_process_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    run = RunDir.create(tmp_path, "r")
    dead = _dead_pid()
    _hold(run, dead)
    assert live_holder(run.path) is None and not run.running
    with caplog.at_level(logging.WARNING, logger="maskclf"), training_lock(run.path, "again"):
        assert live_holder(run.path)["pid"] == os.getpid()
    assert f"process {dead}" in caplog.text and "no longer running" in caplog.text


def test_a_live_run_is_still_training_for_predict_and_running_for_runs(tmp_path):
    from maskclf.runs.leaderboard import leaderboard

    run = RunDir.create(tmp_path, "live")
    run.write_config(tiny_config())
    run.write_record({"folds": [0], "resumed": [], "started": "2026-12-01T10:00:00"})
    _hold(run, os.getpid())
    with pytest.raises(UsageError, match=r"is still training \(process \d+ on .*\); wait"):
        run.require_finished()
    assert leaderboard(tmp_path)["status"].tolist() == ["running"]
    (run.path / LOCK).unlink()
    assert leaderboard(tmp_path)["status"].tolist() == ["unfinished"]


@pytest.mark.slow
def test_a_second_resume_of_a_live_run_is_refused_before_it_writes(synthetic_root, tmp_path):
    from maskclf.train.execute import resume_run, train_run

    result = train_run(tiny_config(), synthetic_root, tmp_path, "r", interactive=False)
    run = RunDir(result.run)
    (run.path / RunDir.SUMMARY).unlink()  # as if it were still training
    _hold(run, os.getpid())
    before = (run.path / RunDir.RECORD).read_text()
    with pytest.raises(UsageError, match="being trained by process"):
        resume_run(run.path, interactive=False)
    assert (run.path / RunDir.RECORD).read_text() == before  # no interruption recorded
