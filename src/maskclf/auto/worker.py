"""A worker of ``maskclf auto``: claim the next unit as an Optuna trial, train it (an
ordinary run directory, resumed when interrupted) within its time, record what it took;
``finish`` for the last unit. Any number of workers can share one study."""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings

import optuna

from maskclf.auto.folder import StudyFolder
from maskclf.auto.schedule import WAIT, Unit, Work
from maskclf.config import apply_overrides, build_config, config_to_dict
from maskclf.errors import MaskclfError, RunInterrupted, first_line
from maskclf.ticker import duration

log = logging.getLogger(__name__)
POLL_S = 2.0
"""How often a worker waiting on other workers' units looks at the study."""


def train_unit(work: Work, unit: Unit, seconds: float) -> dict:
    """Train (or resume) the unit's run within ``seconds``; its summary."""
    from maskclf.train.execute import continue_run, finish_existing, train_run

    limit = f"{max(1, int(seconds))}s"
    existing = finish_existing(work.folder.run(unit.id), work.data)
    if existing is not None:
        return existing
    final = work.is_final(unit)  # the members train as long as the time allows
    average = work.preset.average_checkpoints if final else 0
    epochs = work.epochs_for(unit, seconds)
    if final and epochs > work.preset.max_epochs:
        log.info("auto: %s re-planned from this machine's pace: %d epochs fit its %s (the "
                 "preset's max_epochs: %d)", unit.id, epochs, duration(seconds),
                 work.preset.max_epochs)
    if unit.stage == "screening" and unit.rung:
        parent = work.folder.run(Unit("screening", unit.candidate, unit.rung - 1).id)
        return continue_run(parent, epochs, work.data, unit.id, interactive=False,
                            train={"time_limit": limit, "average_checkpoints": average}
                            ).summary
    cfg = build_config(apply_overrides(config_to_dict(work.configs[unit.candidate]), [
        f"train.epochs={epochs}", f"train.time_limit={limit}",
        f"train.average_checkpoints={average}"]), f"auto unit {unit.id}")
    return train_run(cfg, work.data, work.folder.path / StudyFolder.RUNS, unit.id,
                     fold=0 if unit.stage == "screening" else None,
                     interactive=False).summary


def work_loop(work: Work, finish) -> None:
    """Claim and do units until none is left: ``finish(work)`` does the last one."""
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(work.study)
        unit = work.next_unit()
        if unit is None:
            return
        if unit == WAIT:
            time.sleep(POLL_S)
            continue
        work.study.optimize(lambda trial: _do(trial, work, finish), n_trials=1)


def claim(trial: optuna.Trial, work: Work) -> Unit | None:
    while True:
        unit = work.next_unit(mine=trial.number)
        if unit is None or unit == WAIT:
            return None
        trial.set_user_attr("unit", unit.id)
        work.await_earlier_claims(trial.number)
        if work.owner(unit.id) == trial.number:
            return unit


def _do(trial: optuna.Trial, work: Work, finish) -> float:
    unit = claim(trial, work)
    if unit is None:  # another worker took the last open unit meanwhile
        trial.set_user_attr("unit", "")
        raise optuna.TrialPruned("idle")
    trial.set_user_attr("stage", unit.stage)
    trial.set_user_attr("candidate", unit.candidate)
    trial.set_user_attr("rung", unit.rung)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    if unit.stage == "finish":
        return finish(work)
    seconds = work.allotment(unit)
    if seconds is None:
        log.info("auto: %s skipped: %s of the budget left does not fit it and the rest of "
                 "the plan at this machine's pace", unit.id,
                 duration(max(0.0, work.clock.left())))
        trial.set_user_attr("skipped", "budget")
        raise optuna.TrialPruned("budget")
    log.info("auto: %s (%s, %s of the budget left)", unit.id, duration(seconds),
             duration(work.clock.left()))
    started = time.monotonic()
    try:
        summary = train_unit(work, unit, seconds)
    except RunInterrupted:
        raise
    except Exception as exc:  # this candidate cannot train here (memory, a setting, a
        # weights download): the study goes on without it, the reason in its trial
        reason = str(exc) if isinstance(exc, MaskclfError) else first_line(exc)
        trial.set_user_attr("error", reason)
        log.warning("auto: %s failed and is left out: %s", unit.id, reason)
        raise optuna.TrialPruned(reason) from None
    trial.set_user_attr("run", str(work.folder.run(unit.id)))
    trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
    timing = summary.get("time_limit") or {}
    trial.set_user_attr("epochs", timing.get("epochs"))
    trial.set_user_attr("epoch_s", timing.get("epoch_s"))
    trial.set_user_attr("timed_epochs", timing.get("timed_epochs", 0))
    trial.set_user_attr("at_s", round(work.clock.elapsed(), 1))
    return float(summary["validation"]["macro_f1"])
