"""``train.time_limit``: a run trains the epochs that fit its wall time, with the schedule
planned for them, and ends like a finished run."""


import pandas as pd
import pytest

from maskclf.config import (
    ConfigError,
    duration_seconds,
    load_config,
)
from maskclf.train.execute import train_run
from maskclf.train.module import lr_multiplier
from tests.conftest import tiny_config


def test_durations_read_as_seconds_minutes_or_hours():
    assert [duration_seconds(v) for v in ("90s", "20m", "1.5h", "45", 30)] == [
        90, 1200, 5400, 45, 30]
    with pytest.raises(ConfigError, match=r"train\.time_limit: 'soon' is not a duration"):
        load_config(None, ["train.time_limit=soon"])
    assert load_config(None, ["train.time_limit=90"]).train.time_limit_s == 90


@pytest.mark.slow
def test_a_time_limited_run_trains_the_epochs_that_fit_and_finishes(synthetic_root, tmp_path,
                                                                    capfd):
    from maskclf.train.execute import train_run

    cfg = tiny_config("train.epochs=60", "train.time_limit=3s", "sched.warmup_epochs=0")
    result = train_run(cfg, synthetic_root, tmp_path, "limited", interactive=False)
    trained = result.summary["time_limit"]["epochs"]
    epochs = pd.read_csv(result.run / "fold0" / "metrics.csv").dropna(subset=["epoch"])
    assert 1 <= trained[0] < 60 and epochs["epoch"].max() + 1 == trained[0]
    progress = [line for line in capfd.readouterr().err.splitlines() if "eta " in line]
    assert "eta 0m00s" in progress[-1]  # the run's time left counts the epochs planned
    assert result.summary["validation"] is not None  # it ended like a finished run
    assert (result.run / "fold0" / "checkpoints" / "best.ckpt").is_file()
    rates = pd.read_csv(result.run / "fold0" / "metrics.csv").filter(like="lr-").dropna()
    if trained[0] >= 3:  # the cosine was planned for the epochs that fit: it nearly ends
        last = rates.iloc[-1, 0] / rates.iloc[0, 0]
        planned = lr_multiplier(trained[0] - 1, trained[0], 1, cfg.sched)
        assert last == pytest.approx(planned, abs=0.15) and last < 0.6


@pytest.mark.slow
def test_an_early_stopped_fold_stops_within_patience_of_its_best(synthetic_root, tmp_path):
    import pandas as pd

    cfg = tiny_config("train.epochs=8", "train.early_stopping_patience=2", "optim.lr=1e-12",
                      "sched.name=none")
    run = train_run(cfg, synthetic_root, tmp_path, "es", interactive=False).run
    f1 = pd.read_csv(run / "fold0" / "metrics.csv").dropna(subset=["val/f1"])["val/f1"]
    best_epoch = int(f1.to_numpy().argmax())
    assert len(f1) - 1 - best_epoch == 2 and len(f1) < 8  # stopped, patience epochs after
    with pytest.raises(Exception, match="early_stopping_patience"):
        tiny_config("train.early_stopping_patience=2", "data.val_ratio=0")


def test_the_time_limit_replans_after_every_epoch_from_the_pace():
    """A slow first epoch (a cold cache: 30 s) then 10 s epochs, 200 s for one fold of at
    most 40 epochs: planned from the first epoch alone, 6 epochs would fit; re-planned from
    the later pace, the fold trains what the 200 s hold, the schedule following, and never
    more than asked or past the budget."""
    from types import SimpleNamespace

    from maskclf.train.progress import RunClock
    from maskclf.train.trainer import TimeBudget

    now = [0.0]
    clock = RunClock(40, now=lambda: now[0])
    budget = TimeBudget(200, 1, clock, now=lambda: now[0])
    class Trainer(SimpleNamespace):
        max_epochs = property(lambda self: self.fit_loop.max_epochs)

    fit_loop = SimpleNamespace(max_epochs=40)
    trainer = Trainer(fit_loop=fit_loop, current_epoch=0, num_training_batches=5,
                      strategy=SimpleNamespace(broadcast=lambda value, src: value))
    module = SimpleNamespace(steps_per_epoch=5, planned_steps=200)
    budget.on_train_start(trainer, module)
    planned = []
    while trainer.current_epoch < fit_loop.max_epochs:
        for callback in (clock, budget):
            callback.on_train_epoch_start(trainer, module)
        now[0] += 30.0 if trainer.current_epoch == 0 else 10.0
        for callback in (clock, budget):
            callback.on_train_epoch_end(trainer, module)
        planned.append(fit_loop.max_epochs)
        trainer.current_epoch += 1
    assert planned[0] == 1 + int(170 // 30)  # the first epoch's pace alone: 6
    assert trainer.current_epoch == 18 and now[0] == 200  # 30 s + 17 x 10 s: all of it
    assert module.planned_steps == 18 * 5 and clock.total_epochs == 18
    assert budget.record()["epochs"] == [18]
