"""How ``maskclf auto`` divides its budget: a speed probe per candidate, then the stages.

The probe times a few training and prediction steps of each candidate's network on random
batches of its size (no images are read), so the plan is this machine's. Loading and
augmentation are not in the probe: the plan counts an epoch as ``LOADER_FACTOR`` times the
probed compute, and the study replaces that guess with the epochs it has timed as soon as
the first run finishes (:func:`calibrated`).

The plan is successive halving on one fold — every candidate trains ``screen_epochs``, the
best ``1/eta`` go on to ``eta`` times as many epochs, until ``survivors`` are left — then,
when it fits, a k-fold run of each survivor. When k-fold does not fit, the last rung trains
the survivors to ``max_epochs`` instead and the ensemble is chosen on fold 0's persons.
Candidates are dropped from the end of the preset's list (its order is its priority) and
epochs shortened until the plan fits; a budget too small for one epoch is refused.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from maskclf.auto.preset import Preset
from maskclf.config import RunConfig
from maskclf.errors import UsageError

LOADER_FACTOR = 1.6
"""An epoch's wall time over its probed compute, before any epoch has been timed (measured
on faces-real, 2 cores: ~1.5 with the decode-once cache and the strong augmentation)."""
PROBE_STEPS = 2


@dataclass
class Speed:
    """Seconds per image of one candidate on this machine (all of its networks)."""

    train_s: float
    predict_s: float

    def epoch_s(self, n_train: int, n_val: int) -> float:
        return LOADER_FACTOR * (n_train * self.train_s + n_val * self.predict_s)


def probe_speed(cfg: RunConfig) -> Speed:
    """Time ``PROBE_STEPS`` training steps (forward, loss, backward) and prediction steps of
    the candidate's networks at its image size and batch size, after one warm-up step."""
    import torch

    from maskclf.models.factory import build_net
    from maskclf.models.spec import resolve_specs

    use_gpu = cfg.train.accelerator != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda" if use_gpu else "cpu")
    batch = cfg.train.batch_size
    images = torch.rand(batch, 3, *cfg.data.image_size, device=device)
    train_s = predict_s = 0.0
    for spec in resolve_specs(cfg):
        net = build_net(spec).to(device)
        train_s += _timed(lambda net=net: net(images).float().logsumexp(1).mean().backward(),
                          device)
        with torch.no_grad():
            predict_s += _timed(lambda net=net: net(images), device)
    return Speed(train_s / batch, predict_s / batch)


def _timed(step, device) -> float:
    import torch

    step()  # warm-up: allocation, kernel choice
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / PROBE_STEPS


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
    """Epochs of the survivors' k-fold runs; 0: no k-fold stage."""
    folds: int
    epoch_s: dict[str, float]
    """The probe's estimate of one fold-0 epoch per candidate."""
    predict_s: float
    """The estimate for predicting the eval set with the chosen members."""
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
        return self.rungs[-1].count


def ladder(count: int, preset: Preset, final_epochs: int | None) -> list[Rung]:
    """Successive halving from ``count`` candidates: each rung keeps ``ceil(n / eta)`` (at
    least ``survivors``) and multiplies the epochs by ``eta``; ``final_epochs`` (when the
    survivors are not trained k-fold) is what the last rung trains to."""
    rungs = [Rung(count, preset.screen_epochs)]
    while rungs[-1].count > preset.survivors:
        last = rungs[-1]
        rungs.append(Rung(max(preset.survivors, math.ceil(last.count / preset.eta)),
                          min(preset.max_epochs, max(last.epochs + 1, last.epochs * preset.eta))))
    if final_epochs is not None:
        rungs[-1].epochs = max(rungs[-2].epochs + 1 if len(rungs) > 1 else 1, final_epochs)
    return rungs


def ladder_seconds(rungs: list[Rung], epoch_s: list[float]) -> float:
    """Screening's cost: each rung trains its candidates from the previous rung's epochs
    (a continuation); ``epoch_s`` in the candidates' order, the costliest assumed to stay."""
    total, trained = 0.0, 0
    for rung in rungs:
        total += sum(sorted(epoch_s, reverse=True)[:rung.count]) * (rung.epochs - trained)
        trained = rung.epochs
    return total


def plan_study(budget_s: float, preset: Preset, names: list[str], epoch_s: dict[str, float],
               predict_s: float) -> StudyPlan:
    """The largest plan that fits ``budget_s`` less the reserve for prediction, selection
    and the report: k-fold of the survivors when it fits for at least half of
    ``max_epochs``; else successive halving alone, its last rung as long as fits."""
    reserve = reserve_seconds(budget_s, preset, predict_s)
    available = budget_s - reserve
    for count in range(len(names), 0, -1):
        chosen = names[:count]
        costs = [epoch_s[n] for n in chosen]
        survivors = min(preset.survivors, count)
        screening = ladder(count, preset, None)
        kfold_epoch = preset.folds * sum(sorted(costs, reverse=True)[:survivors])
        left = available - ladder_seconds(screening, costs)
        kfold_epochs = min(preset.max_epochs, int(left // kfold_epoch)) if left > 0 else 0
        if kfold_epochs >= max(1, preset.max_epochs // 2):
            return _plan(budget_s, chosen, screening, kfold_epochs, preset, epoch_s, predict_s,
                         {"screening": ladder_seconds(screening, costs),
                          "kfold": kfold_epochs * kfold_epoch})
        for final in range(preset.max_epochs, preset.screen_epochs - 1, -1):
            rungs = ladder(count, preset, final)
            if ladder_seconds(rungs, costs) <= available:
                return _plan(budget_s, chosen, rungs, 0, preset, epoch_s, predict_s,
                             {"screening": ladder_seconds(rungs, costs), "kfold": 0.0})
    cheapest = min(epoch_s.values())
    raise UsageError(f"a budget of {budget_s:.0f}s cannot train one candidate for "
                     f"{preset.screen_epochs} epoch(s) here (about {cheapest:.0f}s an epoch, "
                     f"plus {reserve:.0f}s to predict and choose): give at least "
                     f"--budget {math.ceil((cheapest * preset.screen_epochs + reserve) * 1.2)}s")


def reserve_seconds(budget_s: float, preset: Preset, predict_s: float) -> float:
    return max(budget_s * preset.reserve, 1.5 * predict_s)


def _plan(budget_s: float, names: list[str], rungs: list[Rung], kfold_epochs: int,
          preset: Preset, epoch_s: dict[str, float], predict_s: float,
          stage_s: dict[str, float]) -> StudyPlan:
    return StudyPlan(budget_s, names, rungs, kfold_epochs, preset.folds,
                     {n: epoch_s[n] for n in names}, predict_s,
                     reserve_seconds(budget_s, preset, predict_s),
                     {**{k: round(v, 1) for k, v in stage_s.items()},
                      "finish": round(reserve_seconds(budget_s, preset, predict_s), 1)})
