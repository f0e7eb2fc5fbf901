"""The work of ``maskclf auto`` as Optuna trials, so any number of workers can share it.

A study folder (``auto/NAME/``) holds ``plan.json`` (written once, by whichever worker
gets there first), ``clock.json`` (the budget's deadline, paused on Ctrl+C / SIGTERM) and
``runs/``. The work is a fixed sequence of *units*: each rung of successive halving on
fold 0 (rung 0 trains every candidate; rung r continues the best of rung r-1 for more
epochs), a k-fold run of each survivor, and ``finish`` (selection, decision tuning, the
eval set's submission, the report). A worker claims the next unit by tagging its trial
with the unit's id; when two trials claim one unit, the lower trial number keeps it and
the other takes the next (each tags first, then reads every tag, so one of any two sees
the other). A unit that waits on an unfinished rung waits without holding a trial. Every
unit is an ordinary run directory named by the unit (``runs/r0-recipe``), so an
interrupted unit resumes from its last finished epoch when the same command runs again.

Each training unit gets ``train.time_limit``: its planned share of the time left (less
the reserve for ``finish``), so a slow machine trains fewer epochs instead of overrunning;
a unit that cannot train one epoch in what is left is skipped, and ``finish`` uses the
best results so far.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from maskclf.atomic import write_json
from maskclf.auto.plan import (
    LOADER_FACTOR,
    NETWORK_LOAD_S,
    StudyPlan,
    plan_study,
    probe_speed,
)
from maskclf.auto.preset import Preset
from maskclf.config import RunConfig, apply_overrides, build_config, config_to_dict
from maskclf.errors import MaskclfError, RunInterrupted, UsageError, first_line
from maskclf.runs.directory import RunDir
from maskclf.ticker import duration

log = logging.getLogger(__name__)
POLL_S = 2.0
"""How often a worker waiting on other workers' units looks at the study."""
HEADROOM = 1.2
"""A unit's time limit over its estimated need while the plan is on time."""
HEARTBEAT_S = 20
"""Optuna heartbeat: a trial whose worker died is failed after ``3 x`` this, and redone."""


class StudyFolder:
    """The files of ``auto/NAME/``; runs live in ``runs/``."""

    PLAN = "plan.json"
    CLOCK = "clock.json"
    RUNS = "runs"
    SUMMARY = "summary.json"
    REPORT = "report.md"
    PROGRESS = "progress.png"
    SUBMISSION = RunDir.SUBMISSION
    PREDICTIONS = RunDir.PREDICTIONS
    DATABASE = "study.db"

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def run(self, unit_id: str) -> Path:
        return self.path / self.RUNS / unit_id

    @property
    def finished(self) -> bool:
        return self.file(self.SUMMARY).is_file()


@dataclass(frozen=True)
class Unit:
    """One piece of work: ``screening`` rung r of a candidate, its ``kfold`` run, or
    ``finish``."""

    stage: str
    candidate: str = ""
    rung: int = 0

    @property
    def id(self) -> str:
        if self.stage == "screening":
            return f"r{self.rung}-{self.candidate}"
        return self.stage if self.stage == "finish" else f"kfold-{self.candidate}"


WAIT = "wait"


@dataclass(frozen=True)
class Pace:
    """Seconds of planned work on this machine: ``epoch_factor`` x the probe's epoch
    seconds, plus ``fixed_s`` per fold run."""

    epoch_factor: float = 1.0
    fixed_s: float = 0.0

    def seconds(self, planned_epoch_s: float, runs: int) -> float:
        return self.epoch_factor * planned_epoch_s + self.fixed_s * runs


class BudgetClock:
    """The budget's deadline in ``clock.json``, shared by the workers of a study. Stopping
    (Ctrl+C, SIGTERM) saves the time left, which the next command resumes with."""

    def __init__(self, folder: StudyFolder, budget_s: float, started: float | None = None):
        """``started``: when the command began (its imports count against the budget)."""
        self.path = folder.file(StudyFolder.CLOCK)
        record = json.loads(self.path.read_text()) if self.path.is_file() else {
            "budget_s": budget_s, "left_s": budget_s, "deadline": None}
        if record["deadline"] is None:
            record["deadline"] = (started or time.time()) + record["left_s"]
            write_json(self.path, record)
        self.budget_s, self.deadline = float(record["budget_s"]), float(record["deadline"])

    def left(self) -> float:
        return self.deadline - time.time()

    def elapsed(self) -> float:
        return self.budget_s - self.left()

    def pause(self) -> None:
        write_json(self.path, {"budget_s": self.budget_s, "left_s": max(0.0, self.left()),
                               "deadline": None})


def plan_identity(data: Path, budget_s: float, preset_text: str) -> dict:
    """What a study was started with; the same command must give the same."""
    return {"data": str(data.resolve()), "budget_s": budget_s,
            "preset_sha256": hashlib.sha256(preset_text.encode()).hexdigest()}


def check_identity(folder: StudyFolder, identity: dict) -> None:
    """A study continued with another data folder, budget or preset is refused (before
    its clock restarts)."""
    path = folder.file(StudyFolder.PLAN)
    if not path.is_file():
        return
    record = json.loads(path.read_text())
    for key, value in identity.items():
        if record.get(key) != value:
            raise UsageError(f"{folder.path} was started with another "
                             f"{key.removesuffix('_sha256').removesuffix('_s')} "
                             f"({record.get(key)}, now {value}); run the command it began "
                             "with, or give a new --name")


def open_plan(folder: StudyFolder, identity: dict, preset: Preset,
              configs: dict[str, RunConfig], n_train: int, n_val: int, n_eval: int,
              clock: BudgetClock) -> StudyPlan:
    """The study's plan: read, or measured and written by the first worker (an exclusive
    create, so concurrent workers all follow the one written)."""
    path = folder.file(StudyFolder.PLAN)
    if not path.is_file():
        speeds = {}
        for name, cfg in configs.items():
            try:
                speeds[name] = probe_speed(cfg)
            except Exception as exc:  # no weights offline, no such device: the others go on
                log.warning("auto: candidate %s cannot run on this machine and is left out: "
                            "%s", name, first_line(exc))
                continue
            log.info("speed probe: %s %.1f ms an image to train, %.1f to predict", name,
                     1e3 * speeds[name].train_s, 1e3 * speeds[name].predict_s)
        if not speeds:
            raise UsageError(f"no candidate of the preset can run on this machine "
                             f"({', '.join(configs)}); see the warnings above")
        epoch_s = {name: s.epoch_s(n_train, n_val) for name, s in speeds.items()}
        network_predict_s = NETWORK_LOAD_S + LOADER_FACTOR * n_eval * max(
            s.predict_s for s in speeds.values())
        plan = plan_study(clock.left(), preset, list(speeds), epoch_s, network_predict_s)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**identity, "plan": plan.to_dict()}, indent=2))
        try:
            os.link(tmp, path)  # fails when another worker's plan is already there
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return StudyPlan.from_dict(json.loads(path.read_text())["plan"])


def open_study(folder: StudyFolder, storage: str | None) -> optuna.Study:
    from maskclf.train.tune import open_storage

    return optuna.create_study(study_name=folder.path.name, direction="maximize",
                               storage=open_storage(storage, folder.path, HEARTBEAT_S),
                               load_if_exists=True)


class Work:
    """Which units exist, which are done, and what each is given: read from the study's
    trials each time, so every worker sees the same state."""

    def __init__(self, study: optuna.Study, plan: StudyPlan, preset: Preset,
                 configs: dict[str, RunConfig], folder: StudyFolder, data: Path,
                 clock: BudgetClock):
        self.study, self.plan, self.preset, self.configs = study, plan, preset, configs
        self.folder, self.data, self.clock = folder, data, clock

    # the study's state
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if "unit" in t.user_attrs]

    def done(self) -> dict[str, optuna.trial.FrozenTrial]:
        """Units finished (COMPLETE) or given up (PRUNED: skipped or failed by their
        config), by id."""
        ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return {t.user_attrs["unit"]: t for t in self.trials() if t.state in ended}

    def owner(self, unit_id: str) -> int | None:
        claims = [t.number for t in self.trials() if t.user_attrs["unit"] == unit_id
                  and t.state in (optuna.trial.TrialState.RUNNING,
                                  optuna.trial.TrialState.COMPLETE)]
        return min(claims, default=None)

    def scores(self, unit_ids: list[str]) -> dict[str, float]:
        done = self.done()
        return {u: done[u].value for u in unit_ids
                if u in done and done[u].state == optuna.trial.TrialState.COMPLETE}

    # the units, stage by stage
    def stages(self) -> list[list[Unit]] | str:
        """The units of every stage that can be named yet; ``WAIT`` when a stage's units
        depend on one still being trained."""
        done = self.done()
        stages = []
        alive = list(self.plan.candidates)
        for rung_index, rung in enumerate(self.plan.rungs):
            if rung_index:  # the best of the previous rung go on
                previous = {c: Unit("screening", c, rung_index - 1).id for c in alive}
                if any(u not in done for u in previous.values()):
                    return stages + [WAIT]
                scores = self.scores(list(previous.values()))
                ranked = sorted((c for c in alive if previous[c] in scores),
                                key=lambda c: -scores[previous[c]])
                alive = ranked[:rung.count]
            if not alive:  # every run of the rung before was skipped
                break
            stages.append([Unit("screening", c, rung_index) for c in alive])
        if self.plan.kfold_epochs and alive:
            last = stages[-1]
            if any(u.id not in done for u in last):
                return stages + [WAIT]
            stages.append([Unit("kfold", c) for c in alive])
        stages.append([Unit("finish")])
        return stages

    def next_unit(self, mine: int | None = None) -> Unit | str | None:
        """The first unit nobody has finished or claimed (``mine``: this trial's own claim
        does not count); ``WAIT`` when the rest depend on others' units; None when done."""
        stages = self.stages()
        done = self.done()
        for stage in stages:
            if stage == WAIT:
                return WAIT
            open_units = [u for u in stage if u.id not in done]
            for unit in open_units:
                owner = self.owner(unit.id)
                if owner is None or owner == mine:
                    return unit
            if open_units:  # others are training this stage's last units
                return WAIT
        return None

    # what a unit is given
    def unit_cost(self, unit: Unit) -> float:
        epoch_s = self.plan.epoch_s
        if unit.stage == "kfold":
            return self.plan.folds * self.plan.kfold_epochs * epoch_s[unit.candidate]
        if unit.stage == "finish":
            return 0.0
        before = self.plan.rungs[unit.rung - 1].epochs if unit.rung else 0
        return (self.plan.rungs[unit.rung].epochs - before) * epoch_s[unit.candidate]

    def open_after(self, unit: Unit) -> list[tuple[float, int]]:
        """The planned epoch seconds and fold runs of the work still open after ``unit``:
        units named and unclaimed, then the rungs and k-fold runs not named yet (at the
        costliest candidate's epoch)."""
        stages = [s for s in self.stages() if s != WAIT]
        done = self.done()
        work = [(self.unit_cost(u), self._folds(u)) for stage in stages for u in stage
                if u != unit and u.id not in done and self.owner(u.id) is None]
        costliest = max(self.plan.epoch_s.values())
        named = sum(1 for stage in stages if stage and stage[0].stage == "screening")
        trained = self.plan.rungs[named - 1].epochs if named else 0
        for rung in self.plan.rungs[named:]:
            work += [((rung.epochs - trained) * costliest, 1)] * rung.count
            trained = rung.epochs
        if self.plan.kfold_epochs and not any(u.stage == "kfold" for s in stages for u in s):
            work += [(self.plan.folds * self.plan.kfold_epochs * costliest,
                      self.plan.folds)] * self.plan.survivors
        return work

    def _folds(self, unit: Unit) -> int:
        return {"kfold": self.plan.folds, "finish": 0}.get(unit.stage, 1)

    def allotment(self, unit: Unit) -> float | None:
        """Seconds for ``unit``: its share of the time left (less the reserve), in
        proportion to its planned cost among the work still open at the pace timed so far.
        A run's epochs stay capped by the plan, so what an early unit does not need goes
        to the later ones, and the members of the final stage share what is left evenly;
        while the plan is not behind, a unit gets ``HEADROOM`` x its need (when the rest
        still fits), so a timing a few percent off does not cost it an epoch.
        None (the unit is skipped) when one epoch (per fold) would not fit, or, for a
        candidate's first run, when the plan is behind: then it and the candidates after it
        are dropped, so the final stage keeps its epochs."""
        left = self.clock.left() - self.plan.reserve_s
        pace = self.pace()
        folds = self._folds(unit)
        one_epoch = pace.seconds(folds * self.plan.epoch_s[unit.candidate], folds)
        if left < one_epoch:
            return None
        need = pace.seconds(self.unit_cost(unit), folds)
        rest = sum(pace.seconds(cost, runs) for cost, runs in self.open_after(unit))
        if self._droppable(unit) and (need + rest > left or self._dropped()):
            return None  # behind the plan: drop the lower-priority candidates, not epochs
        share = left * need / max(need + rest, 1e-9)
        return max(one_epoch, share, min(HEADROOM * need, left - rest))

    def _droppable(self, unit: Unit) -> bool:
        """A rung-0 run of a candidate after the first ``survivors`` (the preset's order is
        its priority), when the plan screens more candidates than it keeps."""
        return (unit.stage == "screening" and unit.rung == 0
                and self.plan.candidates.index(unit.candidate) >= self.plan.survivors)

    def _dropped(self) -> bool:
        """A candidate was already dropped: every later one goes too."""
        return any(t.user_attrs.get("skipped") == "budget"
                   and t.user_attrs.get("stage") == "screening" and t.user_attrs["rung"] == 0
                   for t in self.done().values())

    def pace(self) -> Pace:
        """This machine's pace from the finished units: timed epochs over the probe's
        estimate (loading and augmentation are not in the probe), and each fold run's
        fixed seconds (building the network, the last validation, the soup)."""
        ratios, fixed = [], []
        for trial in self.done().values():
            attrs = trial.user_attrs
            if attrs.get("epoch_s") and attrs.get("candidate") in self.plan.epoch_s:
                ratios.append(attrs["epoch_s"] / self.plan.epoch_s[attrs["candidate"]])
                runs = len(attrs.get("epochs") or [1])
                fixed.append(max(0.0, attrs["seconds"] - attrs["epoch_s"] * attrs.get(
                    "timed_epochs", 0)) / runs)
        if not ratios:
            return Pace()
        return Pace(sum(ratios) / len(ratios), sum(fixed) / len(fixed))

    # training a unit
    def train(self, unit: Unit, seconds: float) -> dict:
        """Train (or resume) the unit's run within ``seconds``; its summary."""
        from maskclf.train.execute import continue_run, resume_run, train_run

        path = self.folder.run(unit.id)
        limit = f"{max(1, int(seconds))}s"
        if path.exists() and not RunDir(path).read_record():
            shutil.rmtree(path)  # stopped before its plan was written: nothing to keep
        if RunDir(path).finished:
            return RunDir(path).read_summary()
        if path.exists():
            log.info("auto: resuming %s", path)
            return resume_run(path, self.data, interactive=False).summary
        final = self._is_final(unit)  # the members train as long as the time allows
        average = self.preset.average_checkpoints if final else 0
        epochs = self.preset.max_epochs if final else self.plan.rungs[unit.rung].epochs
        if unit.stage == "screening" and unit.rung:
            parent = self.folder.run(Unit("screening", unit.candidate, unit.rung - 1).id)
            return continue_run(parent, epochs, self.data, unit.id, interactive=False,
                                train={"time_limit": limit, "average_checkpoints": average}
                                ).summary
        cfg = build_config(apply_overrides(config_to_dict(self.configs[unit.candidate]), [
            f"train.epochs={epochs}", f"train.time_limit={limit}",
            f"train.average_checkpoints={average}"]), f"auto unit {unit.id}")
        return train_run(cfg, self.data, self.folder.path / StudyFolder.RUNS, unit.id,
                         fold=0 if unit.stage == "screening" else None,
                         interactive=False).summary

    def _is_final(self, unit: Unit) -> bool:
        """The members' stage: k-fold, or the last rung when there is no k-fold."""
        return unit.stage == "kfold" or (not self.plan.kfold_epochs and unit.stage ==
                                         "screening" and unit.rung == len(self.plan.rungs) - 1)


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


def _claim(trial: optuna.Trial, work: Work) -> Unit | None:
    while True:
        unit = work.next_unit(mine=trial.number)
        if unit is None or unit == WAIT:
            return None
        trial.set_user_attr("unit", unit.id)
        if work.owner(unit.id) == trial.number:
            return unit


def _do(trial: optuna.Trial, work: Work, finish) -> float:
    unit = _claim(trial, work)
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
        summary = work.train(unit, seconds)
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
