"""The speed probe of ``maskclf auto``: a few warm batches of each candidate's real training.

The probe runs after the decode-once caches exist and trains each candidate's networks for
a handful of batches on fold 0 of the data, through the same loaders, augmentation, outside
sources and Lightning loop as its runs: the first batches of each loop (worker start-up,
kernel choice, allocation) are left out, and the wall time between the ends of the others
(their loading included) is what an epoch of that candidate costs per image. So a cold
start, heavy augmentation or large outside photos are in the estimate, not guessed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from maskclf.config import RunConfig

WARM_BATCHES = 2
"""Batches of each loop left out of the timing: loader workers starting, the first steps."""
TIMED_BATCHES = 6
"""Batches timed after the warm ones (more than the loaders' prefetched batches, so a
pipeline slower than the network shows)."""


@dataclass
class Speed:
    """Wall seconds per image of one candidate on this machine (all of its networks):
    a training batch (loading, augmentation, forward, backward, step) and a validation one."""

    train_s: float
    predict_s: float

    def epoch_s(self, n_train: int, n_val: int) -> float:
        return n_train * self.train_s + n_val * self.predict_s


class BatchPace(Callback):
    """Wall seconds and images of each loop's batches, from the end of one batch to the end
    of the next (so the loading of the next is in it): those after the loop's first
    ``warm``, and every batch for a loop too short to leave any out."""

    def __init__(self, warm: int) -> None:
        self.warm = warm
        self.timed: dict[tuple[str, bool], tuple[float, int]] = {}
        self._last = 0.0

    def _start(self, *_) -> None:
        self._last = time.perf_counter()

    on_train_epoch_start = on_validation_epoch_start = _start

    def _tick(self, loop: str, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        for warm in {False, batch_idx >= self.warm}:
            seconds, images = self.timed.get((loop, warm), (0.0, 0))
            self.timed[loop, warm] = (seconds + now - self._last, images + len(batch[0]))
        self._last = now

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._tick("train", batch, batch_idx)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx,
                                dataloader_idx=0) -> None:
        self._tick("val", batch, batch_idx)

    def per_image(self, loop: str) -> float:
        """Seconds an image of the warm batches (of all when none was warm; 0: no batch)."""
        seconds, images = self.timed.get((loop, True), self.timed.get((loop, False), (0.0, 1)))
        return seconds / images


def probe_speed(cfg: RunConfig, data_root: Path) -> Speed:
    """Train every network of ``cfg`` for ``WARM_BATCHES + TIMED_BATCHES`` batches of fold 0
    and validate as many, on one device, writing nothing; its seconds per image. A fold too
    small for the warm batches times what it has (start-up included: an overestimate)."""
    from maskclf.data.datamodule import FoldDataModule
    from maskclf.models.factory import training_net
    from maskclf.predict.module import quiet_lightning
    from maskclf.train.module import build_module
    from maskclf.train.plan import outside_rows, plan_new

    plan = plan_new(cfg, data_root, fold=0)
    extra = outside_rows(plan.cfg, plan.root)
    train_s = predict_s = 0.0
    for spec in plan.specs:
        data = FoldDataModule(spec.cfg, plan.root, plan.records, 0, extra,
                              with_ages=spec.regresses_age, attribute=spec.attribute)
        module = build_module(spec, training_net(spec), data.class_counts(),
                              data.partial_targets)
        pace = BatchPace(WARM_BATCHES)
        batches = WARM_BATCHES + TIMED_BATCHES
        with quiet_lightning():
            trainer = L.Trainer(max_epochs=1, limit_train_batches=batches,
                                limit_val_batches=batches if data.validates else 0,
                                accelerator=spec.cfg.train.accelerator, devices=1,
                                precision=spec.cfg.train.precision, logger=False,
                                callbacks=[pace], enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                num_sanity_val_steps=0)
            trainer.fit(module, datamodule=data)
        train_s += pace.per_image("train")
        predict_s += pace.per_image("val")
    return Speed(train_s, predict_s)
