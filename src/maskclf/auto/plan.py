"""How ``maskclf auto`` divides its budget: a speed probe per candidate, then the stages.

The probe (:mod:`maskclf.auto.probe`) times a few warm batches of each candidate's real
training and validation, so the plan is this machine's and this data's; the study replaces
its estimate with the epochs it has timed as soon as the first run finishes
(:func:`calibrated`).

The plan is successive halving on one fold — every candidate trains ``screen_epochs``, the
best ``1/eta`` go on to ``eta`` times as many epochs, until ``survivors`` are left — then,
when it fits, a k-fold run of each survivor. When k-fold does not fit, the last rung trains
the survivors to ``max_epochs`` instead and the ensemble is chosen on fold 0's persons.
Candidates are dropped from the end of the preset's list (its order is its priority) and
epochs shortened until the plan fits; a budget too small for one epoch is refused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from maskclf.auto.preset import Preset
from maskclf.config import RunConfig
from maskclf.errors import UsageError

FINISH_S = 8.0
"""``finish`` besides predicting: reading the members' OOF rows, the selection and its
held-out check, decision tuning, the report and its plot (a few seconds on 2 cores)."""
NETWORK_LOAD_S = 1.0
"""Loading one network's checkpoint and building its loader, per network predicted."""


def epoch_images(cfg: RunConfig, n_train: int) -> int:
    """Images a training epoch of ``cfg`` reads when ``n_train`` are the competition's:
    outside sources add their shares of the epoch (split BatchNorm: as many again)."""
    if cfg.model.outside_batchnorm == "split":
        return 2 * n_train
    return round(n_train / (1 - sum(source.share or 0.0 for source in cfg.data.external)))


@dataclass
class Rung:
    """One rung of successive halving on fold 0: how many candidates train to ``epochs``."""

    count: int
    epochs: int


@dataclass
class StudyPlan:
    """The stages, decided once per study (``plan.json``) and shared by every worker."""

    budget_s: float
    """The budget left when the plan was made (after the data check and the caches)."""
    candidates: list[str]
    rungs: list[Rung]
    kfold_epochs: int
    """Epochs the survivors' k-fold runs are expected to fit (they train up to the
    preset's ``max_epochs`` as time allows); 0: no k-fold stage."""
    folds: int
    epoch_s: dict[str, float]
    """The probe's estimate of one fold-0 epoch per candidate."""
    network_predict_s: float
    """The estimate for predicting the eval set with one network."""
    reserve_s: float
    """Kept for ``finish``: prediction, selection, the report."""
    stage_s: dict[str, float] = field(default_factory=dict)
    """Planned seconds per stage: screening, kfold, finish."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> StudyPlan:
        return cls(**{**raw, "rungs": [Rung(**r) for r in raw["rungs"]]})

    @property
    def survivors(self) -> int:
        return self.rungs[-1].count if self.rungs else len(self.candidates)


def ladder(count: int, preset: Preset, final_epochs: int | None,
           keep: int | None = None) -> list[Rung]:
    """Successive halving from ``count`` candidates: each rung keeps ``ceil(n / eta)`` (at
    least ``keep``, by default the preset's ``survivors``) and multiplies the epochs by
    ``eta``; ``final_epochs`` (when the survivors are not trained k-fold) is what the last
    rung trains to."""
    keep = keep or preset.survivors
    rungs = [Rung(count, preset.screen_epochs)]
    while rungs[-1].count > keep:
        last = rungs[-1]
        rungs.append(Rung(max(keep, math.ceil(last.count / preset.eta)),
                          min(preset.max_epochs, max(last.epochs + 1, last.epochs * preset.eta))))
    if final_epochs is not None:
        rungs[-1].epochs = max(rungs[-2].epochs + 1 if len(rungs) > 1 else 1, final_epochs)
    return rungs


def rung_seconds(rungs: list[Rung], index: int, epoch_s: float) -> float:
    """One candidate's cost at rung ``index``: the epochs beyond the previous rung's (a
    continuation) at ``epoch_s``. The one cost model of a rung, for the plan and the
    schedule."""
    before = rungs[index - 1].epochs if index else 0
    return (rungs[index].epochs - before) * epoch_s


def kfold_seconds(folds: int, epochs: int, epoch_s: float) -> float:
    """One candidate's k-fold run: ``folds`` runs of ``epochs`` epochs at ``epoch_s``."""
    return folds * epochs * epoch_s


def ladder_seconds(rungs: list[Rung], epoch_s: list[float]) -> float:
    """Screening's cost: each rung trains its candidates from the previous rung's epochs;
    ``epoch_s`` in the candidates' order, the costliest assumed to stay."""
    costliest = sorted(epoch_s, reverse=True)
    return sum(rung_seconds(rungs, i, cost) for i, rung in enumerate(rungs)
               for cost in costliest[:rung.count])


class BudgetTooShort(UsageError):
    """No plan fits: ``needs`` says what one epoch costs here, ``least_s`` the seconds a plan
    needs (the caller adds what the start already took and names the budget typed)."""

    def __init__(self, needs: str, least_s: float):
        super().__init__(f"the budget cannot train one candidate for one epoch here ({needs}): "
                         f"give at least --budget {least_s:.0f}s")
        self.needs, self.least_s = needs, least_s


def plan_study(budget_s: float, preset: Preset, names: list[str], epoch_s: dict[str, float],
               network_predict_s: float) -> StudyPlan:
    """The plan that buys breadth last, in ``budget_s`` less the reserve for prediction
    (``network_predict_s`` per network), selection and the report: the most candidates (at
    least ``survivors``) whose survivors' k-fold runs fit ``min_final_epochs``; else members
    on fold 0 as long as fit, from ``max_epochs`` down to ``min_final_epochs``, each length
    with the most candidates that fit it (at least ``survivors``, an ensemble); else the
    longest members that fit at all, fewer or shorter. On a short budget, two-epoch screening of
    more candidates chose by noise on faces-real, where longer members won. Members of full
    length with time to spare become more survivors (a larger ensemble); the study then
    trains the final stage as far as the time left allows (up to ``max_final_epochs``)."""
    members = min(preset.survivors, len(names))
    for count in range(len(names), members - 1, -1):
        found = _kfold_plan(budget_s, preset, names[:count], epoch_s, network_predict_s)
        if found is not None:
            return found
    for fewest, least in ((members, preset.min_final_epochs), (1, 1)):
        for final in range(preset.max_epochs, least - 1, -1):
            for count in range(len(names), fewest - 1, -1):
                found = _fold0_plan(budget_s, preset, names[:count], epoch_s,
                                    network_predict_s, final)
                if found is not None:
                    return found
    cheapest = min(epoch_s.values())
    reserve = reserve_seconds(budget_s, preset, network_predict_s)
    raise BudgetTooShort(f"about {cheapest:.0f}s an epoch, plus {reserve:.0f}s to predict "
                         "and choose", math.ceil((cheapest + reserve) * 1.3))


def _kfold_plan(budget_s: float, preset: Preset, chosen: list[str], epoch_s: dict[str, float],
                network_predict_s: float) -> StudyPlan | None:
    """Screening ``chosen``, then its survivors k-fold for at least ``min_final_epochs``
    (up to ``max_epochs``); None when that does not fit. No more candidates than survivors:
    nothing to screen, the k-fold runs come first."""
    costs = [epoch_s[n] for n in chosen]
    survivors = min(preset.survivors, len(chosen))
    screening = ladder(len(chosen), preset, None) if len(chosen) > survivors else []
    reserve = reserve_seconds(budget_s, preset, network_predict_s * preset.folds * survivors)
    kfold_epoch = sum(kfold_seconds(preset.folds, 1, cost)
                      for cost in sorted(costs, reverse=True)[:survivors])
    left = budget_s - reserve - ladder_seconds(screening, costs)
    fits = min(preset.max_epochs, int(left // kfold_epoch)) if left > 0 else 0
    if fits < preset.min_final_epochs:
        return None
    return _plan(budget_s, chosen, screening, fits, preset, epoch_s, network_predict_s,
                 reserve, fits * kfold_epoch)


def _fold0_plan(budget_s: float, preset: Preset, chosen: list[str], epoch_s: dict[str, float],
                network_predict_s: float, final: int) -> StudyPlan | None:
    """Screening ``chosen`` until its survivors train ``final`` epochs on fold 0; at the
    full ``max_epochs``, as many survivors as fit. None when not even the preset's
    ``survivors`` fit."""
    costs = [epoch_s[n] for n in chosen]
    fewest = min(preset.survivors, len(chosen))
    found = None
    for keep in range(fewest, (len(chosen) if final == preset.max_epochs else fewest) + 1):
        rungs = ladder(len(chosen), preset, final, keep)
        reserve = reserve_seconds(budget_s, preset, network_predict_s * keep)
        if ladder_seconds(rungs, costs) > budget_s - reserve:
            break
        found = _plan(budget_s, chosen, rungs, 0, preset, epoch_s, network_predict_s, reserve,
                      0.0)
    return found


def _plan(budget_s: float, chosen: list[str], rungs: list[Rung], kfold_epochs: int,
          preset: Preset, epoch_s: dict[str, float], network_predict_s: float,
          reserve: float, kfold_s: float) -> StudyPlan:
    costs = [epoch_s[n] for n in chosen]
    return StudyPlan(budget_s, chosen, rungs, kfold_epochs, preset.folds,
                     {n: epoch_s[n] for n in chosen}, network_predict_s, reserve,
                     {"screening": round(ladder_seconds(rungs, costs), 1),
                      "kfold": round(kfold_s, 1), "finish": round(reserve, 1)})


def reserve_seconds(budget_s: float, preset: Preset, predict_s: float) -> float:
    """What ``finish`` keeps: the preset's share, or its fixed work and 1.5 x the eval
    prediction's estimate."""
    return max(budget_s * preset.reserve, FINISH_S + 1.5 * predict_s)
