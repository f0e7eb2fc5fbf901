"""No silent stretch: loops without a bar log progress with a time left estimated from the
items done, and a run's first epoch gets an ETA from its first batches."""

import logging
import time
from types import SimpleNamespace

from maskclf.ticker import Ticker, duration
from maskclf.train.progress import RunClock


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
    clock = RunClock(total_epochs=4)
    trainer = SimpleNamespace(num_training_batches=100)
    clock.on_train_epoch_start(trainer, None)
    assert clock.eta() == "eta ?"
    clock._started -= 10.0  # 10 s into the epoch
    for i in range(RunClock.MIN_BATCHES + 7):  # 10 batches: 1 s a batch
        clock.on_train_batch_end(trainer, None, None, None, i)
    # 4 epochs of 100 s, 10 s of them done
    assert clock.eta() in {"eta 6m30s", "eta 6m29s"}
    clock.on_train_epoch_end(trainer, None)
    assert clock.eta().startswith("eta ")
