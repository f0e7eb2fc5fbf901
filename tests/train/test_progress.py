"""No silent stretch: loops without a bar log progress with a time left estimated from the
items done, and a run's first epoch gets an ETA from its first batches."""

import logging
import time
from types import SimpleNamespace

import pytest

from maskclf.ticker import Ticker, duration
from maskclf.train.execute import train_run
from maskclf.train.progress import RunClock
from tests.conftest import tiny_config


def test_a_ticker_logs_at_most_every_interval_with_the_time_left(caplog):
    log = logging.getLogger("maskclf.test")
    ticker = Ticker("decoding", 100, log, every_s=0.05)
    assert ticker.tick(10) is None  # too soon after the start
    time.sleep(0.06)
    with caplog.at_level(logging.INFO, logger="maskclf.test"):
        line = ticker.tick(15)
    assert line is not None and line.startswith("decoding: 25/100 (25%), eta 0m00s")
    assert caplog.messages == [line]
    assert ticker.tick(1) is None  # the next line waits for the interval again


def test_durations_read_as_minutes_or_hours():
    assert duration(65) == "1m05s" and duration(3725) == "1h02m"


def test_the_first_epoch_gets_an_eta_from_its_first_batches():
    now = [100.0]
    clock = RunClock(total_epochs=4, now=lambda: now[0])
    trainer = SimpleNamespace(num_training_batches=100)
    clock.on_train_epoch_start(trainer, None)
    assert clock.eta() == "eta ?"
    now[0] += 10.0  # 10 s into the epoch
    for i in range(RunClock.MIN_BATCHES + 7):  # 10 batches: 1 s a batch
        clock.on_train_batch_end(trainer, None, None, None, i)
    assert clock.eta() == "eta 6m30s"  # 4 epochs of 100 s, 10 s of them done
    now[0] += 110.0  # the epoch took 120 s in all
    clock.on_train_epoch_end(trainer, None)
    assert clock.eta() == "eta 6m00s"  # three epochs left at the timed 120 s


@pytest.mark.slow
def test_progress_lines_name_the_fold_and_the_time_left(synthetic_root, tmp_path, capsys):
    train_run(tiny_config("data.folds=2", "train.epochs=2"), synthetic_root, tmp_path, "p",
              interactive=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if " epoch " in line]
    assert [line.split(" (")[0] for line in lines] == [
        "fold 1/2 epoch 1/2", "fold 1/2 epoch 2/2", "fold 2/2 epoch 1/2", "fold 2/2 epoch 2/2"]
    assert all("eta " in line for line in lines)
    assert lines[-1].split("eta ")[1].startswith("0m00s")  # nothing left after the last


def test_the_bar_counts_epochs_from_one_and_shows_the_time_left():
    from maskclf.train.progress import RunClock

    clock = RunClock(total_epochs=4)
    clock.label = "age fold 1/2"
    assert clock.where(0, 1) == "age fold 1/2 epoch 1/1"  # not "Epoch 0/0"
    clock.seconds, clock.trained, clock.done = 30.0, 1, 1
    assert clock.eta() == "eta 1m30s"  # three epochs left at 30 s each
