"""What ``maskclf auto`` does next and with how much time: the units of the study (the rungs
of successive halving on fold 0, a k-fold run of each survivor, ``finish``), which are done
or claimed (read from the study's trials each time, so every worker sees the same state),
this machine's pace, and each unit's time (:func:`allot`, a pure function)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from maskclf.auto.clock import BudgetClock
from maskclf.auto.folder import StudyFolder
from maskclf.auto.plan import StudyPlan, kfold_seconds, rung_seconds
from maskclf.auto.preset import Preset
from maskclf.auto.selection import survivors as rung_survivors
from maskclf.config import RunConfig
from maskclf.intervals import Interval
from maskclf.runs.directory import RunDir

log = logging.getLogger(__name__)
HEADROOM = 1.2
"""A unit's time limit over its estimated need while the plan is on time."""


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
CLAIM_WAIT_S = 30.0
"""The longest a claim waits for an earlier trial to name its unit (a worker that died
between starting its trial and naming the unit)."""
CLAIM_POLL_S = 0.2


@dataclass(frozen=True)
class Pace:
    """Seconds of planned work on this machine: ``epoch_factor`` x the probe's epoch
    seconds, plus ``fixed_s`` per fold run."""

    epoch_factor: float = 1.0
    fixed_s: float = 0.0

    def seconds(self, planned_epoch_s: float, runs: int) -> float:
        return self.epoch_factor * planned_epoch_s + self.fixed_s * runs


def allot(left_s: float, one_epoch_s: float, need_s: float, rest_s: float,
          drop: bool) -> float | None:
    """Seconds for a unit (a pure function of the study's state): its share of ``left_s``
    (the time left less the reserve) in proportion to its need among the open work
    (``rest_s``), at least one epoch (``one_epoch_s``); while the rest still fits, up to
    ``HEADROOM`` x its need, so a timing a few percent off does not cost it an epoch.
    None (skipped) when one epoch does not fit, or when the unit is to be dropped."""
    if left_s < one_epoch_s or drop:
        return None
    share = left_s * need_s / max(need_s + rest_s, 1e-9)
    return max(one_epoch_s, share, min(HEADROOM * need_s, left_s - rest_s))


def final_epochs(seconds: float, pace: Pace, planned_epoch_s: float, runs: int,
                 done_before: int, least: int, most: int) -> int:
    """The epochs of a member's run re-planned from the pace measured so far (a pure
    function): as many as its ``seconds`` fit over ``runs`` fold runs after the
    ``done_before`` epochs it continues from — at least ``least`` (the time limit then cuts
    a run slower than planned), at most ``most``. Time a dropped candidate or a fast run
    freed reaches the members this way instead of being left over."""
    per_epoch = pace.epoch_factor * planned_epoch_s * runs
    fit = int(max(0.0, seconds - pace.fixed_s * runs) // max(per_epoch, 1e-9))
    return max(least, min(most, done_before + fit))


def fold_runs(attrs: dict) -> int:
    """How many fold runs a finished unit's trial trained (one per fold, from its
    ``epochs`` record): the divisor of every per-run second."""
    return len(attrs.get("epochs") or [1])


class Work:
    """Which units exist, which are done, and what each is given: read from the study's
    trials each time, so every worker sees the same state."""

    def __init__(self, study: optuna.Study, plan: StudyPlan, preset: Preset,
                 configs: dict[str, RunConfig], folder: StudyFolder, data: Path,
                 clock: BudgetClock):
        self.study, self.plan, self.preset, self.configs = study, plan, preset, configs
        self.folder, self.data, self.clock = folder, data, clock
        self._survivors: dict[int, tuple[list[str], dict[str, dict]]] = {}

    # the study's state
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if "unit" in t.user_attrs]

    def done(self) -> dict[str, optuna.trial.FrozenTrial]:
        """Units finished (COMPLETE) or given up (PRUNED: skipped or failed by their
        config), by id."""
        ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return {t.user_attrs["unit"]: t for t in self.trials() if t.state in ended}

    def owner(self, unit_id: str) -> int | None:
        """The trial that holds a unit: the lowest-numbered of its running or finished
        claims (see :meth:`await_earlier_claims`)."""
        claims = [t.number for t in self.trials() if t.user_attrs["unit"] == unit_id
                  and t.state in (optuna.trial.TrialState.RUNNING,
                                  optuna.trial.TrialState.COMPLETE)]
        return min(claims, default=None)

    def await_earlier_claims(self, number: int) -> None:
        """Wait until every running trial numbered below ``number`` has named its unit.
        The lowest number holds a unit, so a trial that checked before an earlier one named
        the same unit would take it too (two workers reaching the study's last unit at
        once both finished the study). A trial whose worker died holds this up until the
        heartbeat fails it, at most ``CLAIM_WAIT_S``."""
        deadline = time.monotonic() + CLAIM_WAIT_S
        while time.monotonic() < deadline and any(
                t.number < number and "unit" not in t.user_attrs
                for t in self.study.get_trials(deepcopy=False,
                                               states=(optuna.trial.TrialState.RUNNING,))):
            time.sleep(CLAIM_POLL_S)

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
                alive = self.survivors(rung_index - 1, alive, rung.count)
            if not alive:  # every run of the rung before was skipped
                break
            stages.append([Unit("screening", c, rung_index) for c in alive])
        if self.plan.kfold_epochs and alive:
            last = stages[-1] if stages else []  # no screening: the k-fold runs first
            if any(u.id not in done for u in last):
                return stages + [WAIT]
            stages.append([Unit("kfold", c) for c in alive])
        stages.append([Unit("finish")])
        return stages

    def survivors(self, rung_index: int, alive: list[str], count: int) -> list[str]:
        """Who goes on from a finished rung (``selection.survivors``: the preset's order
        among those within noise of the best), decided once and kept with its gaps."""
        if rung_index not in self._survivors:
            units = {c: Unit("screening", c, rung_index).id for c in alive}
            scores = {c: s for c, u in units.items() if (s := self.scores([u]).get(u))
                      is not None}
            oofs = {c: RunDir(self.folder.run(units[c])).require_oof("screening")
                    for c in scores}
            self._survivors[rung_index] = rung_survivors(alive, scores, oofs, count)
            log.info("auto: rung %d: %s go on (gap to the best, 95%% interval over persons: "
                     "%s)", rung_index, ", ".join(self._survivors[rung_index][0]),
                     "; ".join(f"{c} {Interval(**g).text(signed=True)}" for c, g in
                               self._survivors[rung_index][1].items()) or "none")
        return self._survivors[rung_index][0]

    @property
    def screening(self) -> dict[str, dict]:
        """Each finished rung's decision: who went on and each other candidate's gap to the
        best (best minus it) with its interval, for the report."""
        self.stages()
        return {f"rung {r}": {"went_on": went_on, "gap_to_best": gaps}
                for r, (went_on, gaps) in sorted(self._survivors.items())}

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
        """The unit's planned epoch seconds at the probe's pace."""
        if unit.stage == "finish":
            return 0.0
        epoch_s = self.plan.epoch_s[unit.candidate]
        if unit.stage == "kfold":
            return kfold_seconds(self.plan.folds, self.plan.kfold_epochs, epoch_s)
        return rung_seconds(self.plan.rungs, unit.rung, epoch_s)

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
        for index in range(named, len(self.plan.rungs)):
            work += [(rung_seconds(self.plan.rungs, index, costliest), 1)
                     ] * self.plan.rungs[index].count
        if self.plan.kfold_epochs and not any(u.stage == "kfold" for s in stages for u in s):
            work += [(kfold_seconds(self.plan.folds, self.plan.kfold_epochs, costliest),
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
        pace = self.pace()
        folds = self._folds(unit)
        need = pace.seconds(self.unit_cost(unit), folds)
        rest = sum(pace.seconds(cost, runs) for cost, runs in self.open_after(unit))
        return allot(self.clock.left() - self.plan.reserve_s,
                     pace.seconds(folds * self.plan.epoch_s[unit.candidate], folds), need, rest,
                     self._droppable(unit) and (need + rest > self.clock.left()
                                                - self.plan.reserve_s or self._dropped()))

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
                runs = fold_runs(attrs)
                fixed.append(max(0.0, attrs["seconds"] - attrs["epoch_s"] * attrs.get(
                    "timed_epochs", 0)) / runs)
        if not ratios:
            return Pace()
        return Pace(sum(ratios) / len(ratios), sum(fixed) / len(fixed))

    def epochs_for(self, unit: Unit, seconds: float) -> int:
        """A unit's total epochs: its rung's, or for a member (the final stage) as many as
        ``seconds`` fit at this machine's pace, from the preset's ``max_epochs`` up to
        ``max_final_epochs``."""
        if not self.is_final(unit):
            return self.plan.rungs[unit.rung].epochs
        before = (self.plan.rungs[unit.rung - 1].epochs
                  if unit.stage == "screening" and unit.rung else 0)
        return final_epochs(seconds, self.pace(), self.plan.epoch_s[unit.candidate],
                            self._folds(unit), before, self.preset.max_epochs,
                            self.preset.final_epochs_cap)

    def is_final(self, unit: Unit) -> bool:
        """The members' stage: k-fold, or the last rung when there is no k-fold."""
        return unit.stage == "kfold" or (not self.plan.kfold_epochs and unit.stage ==
                                         "screening" and unit.rung == len(self.plan.rungs) - 1)
