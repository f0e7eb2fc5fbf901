"""The Lightning Trainer of one fold and its callbacks: checkpoints (best, last, the top
epochs), the time budget, backbone freezing, loggers and the DDP strategy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy, Strategy

from maskclf.atomic import atomic_write
from maskclf.config import TrainConfig
from maskclf.models.spec import ModelSpec
from maskclf.runs.directory import FoldDir
from maskclf.ticker import duration
from maskclf.train.module import MONITOR, ClassifierModule
from maskclf.train.progress import RunClock, progress_callback
from maskclf.train.reproducibility import EpochSeed
from maskclf.train.resume import InterruptCheckpoint

log = logging.getLogger(__name__)


class TimeBudget(Callback):
    """``train.time_limit`` over a whole run: shared by every fold's Trainer, after the run
    clock. After every epoch each fold re-plans, as Ultralytics' ``time=`` does: the time
    left divided by the folds left, over the pace of its epochs (their mean, the fold's
    first left out once later ones are timed: it pays for warm-up), gives the epochs that
    fit (at least the ones done, at most ``train.epochs``); the learning-rate schedule is
    re-planned for them, so a cosine still decays to its end, and the clock is told, so the
    time left counts the epochs planned. A slow first epoch (a cold cache) no longer leaves
    the rest of the budget unspent. Rank 0's timing decides for every rank."""

    def __init__(self, limit_s: float, folds: int, clock: RunClock,
                 now: Callable[[], float] = time.monotonic):
        self.clock, self.now = clock, now
        self.deadline = now() + limit_s
        self.limit_s, self.folds_left = limit_s, folds
        self.epochs: list[int] = []
        self._cap = 0
        """The fold's ``train.epochs``: re-planning never goes beyond it."""
        self._epoch_started = 0.0
        self._fold_epochs: list[float] = []

    def skip(self) -> None:
        """A fold finished in an earlier session (a resumed run): one fold fewer to share."""
        self.folds_left = max(1, self.folds_left - 1)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._cap, self._fold_epochs = trainer.max_epochs, []
        self.epochs.append(trainer.max_epochs)
        if self.clock.trained:  # a later fold: the run's pace so far plans it from the start
            self._plan(trainer, pl_module, done=trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = self.now()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fold_epochs.append(self.now() - self._epoch_started)
        self._plan(trainer, pl_module, done=trainer.current_epoch + 1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs[-1] = trainer.current_epoch
        self.folds_left = max(1, self.folds_left - 1)

    def epoch_seconds(self) -> float:
        """The pace: this fold's epochs after its first when there are some, else every
        epoch the run has timed."""
        if len(self._fold_epochs) >= 2:
            return sum(self._fold_epochs[1:]) / (len(self._fold_epochs) - 1)
        return self.clock.seconds / self.clock.trained

    def _plan(self, trainer: L.Trainer, pl_module: L.LightningModule, done: int) -> None:
        now, epoch_s = self.now(), self.epoch_seconds()
        share = (self.deadline - now) / self.folds_left
        fits = min(self._cap, max(done, 1, done + int(share // epoch_s)))
        fits = int(trainer.strategy.broadcast(fits, src=0))
        planned = trainer.fit_loop.max_epochs
        if fits != planned:
            log.info("train.time_limit %s: this fold trains %d of %d epochs (%.1fs an epoch, "
                     "%s left)", duration(self.limit_s), fits, self._cap, epoch_s,
                     duration(max(0.0, self.deadline - now)))
            self.clock.total_epochs += fits - planned
            trainer.fit_loop.max_epochs = fits
            if hasattr(pl_module, "steps_per_epoch"):  # a step schedule (not plateau)
                pl_module.planned_steps = fits * pl_module.steps_per_epoch
        self.epochs[-1] = fits

    def record(self) -> dict:
        """For the summary: the limit, the epochs each fold trained, and the epochs timed in
        this session with their mean seconds (``maskclf auto`` plans its next runs by
        them)."""
        trained = self.clock.trained
        return {"limit_s": self.limit_s, "epochs": list(self.epochs), "timed_epochs": trained,
                "epoch_s": self.clock.seconds / trained if trained else None}


class TopEpochs(ModelCheckpoint):
    """The K best epochs kept for checkpoint averaging (``train.average_checkpoints``),
    beside best.ckpt's callback: its own state key, so both resume with their own state."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(kind="top-epochs", monitor=self.monitor,
                                        mode=self.mode)


class FreezeBackbone(Callback):
    """Train only the classifier for the first ``epochs`` epochs, then everything that was
    trainable (stages frozen by ``model.freeze_stages`` stay frozen)."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.trainable: set[int] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        if self.trainable is None:
            self.trainable = {id(p) for p in pl_module.net.parameters() if p.requires_grad}
        frozen = trainer.current_epoch < self.epochs
        for parameter in pl_module.net.parameters():
            parameter.requires_grad = id(parameter) in self.trainable and not frozen
        for parameter in pl_module.net.get_classifier().parameters():
            parameter.requires_grad = True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed: never half-written."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def build_strategy(train: TrainConfig) -> Strategy | str:
    """``train.strategy``; DDP (asked for, or chosen for several devices) with the configured
    timeout, so a rank that died fails the others instead of hanging them."""
    if train.strategy == "ddp" or (train.strategy == "auto" and train.several_devices):
        return DDPStrategy(timeout=timedelta(seconds=train.ddp_timeout_s))
    return train.strategy


@dataclass(frozen=True)
class FitOptions:
    """How a run's Trainers are dressed beyond the config: the progress display (None:
    a bar on a terminal) and extra callbacks (e.g. a tuning study's pruner)."""

    interactive: bool | None = None
    callbacks: tuple[Callback, ...] = ()
    clock: RunClock = field(default_factory=lambda: RunClock(0))
    """Shared by the run's folds: the fold label and the run's time left."""
    budget: TimeBudget | None = None
    """Shared by the run's folds when ``train.time_limit`` is set."""


def build_trainer(spec: ModelSpec, fold: FoldDir, validate: bool,
                  options: FitOptions) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer logging to the fold's folder (metrics.csv, tb/) and checkpointing to its
    checkpoints/.

    Every epoch reseeds from (seed, epoch) and ends with ``checkpoints/last.ckpt``; an
    interrupt saves the current state and says how to resume the run.
    """
    cfg = spec.cfg
    # last.ckpt at the end of every epoch: Lightning's save_last only writes it in epochs
    # that also wrote a best checkpoint, which would make resumes replay several epochs
    last = ModelCheckpoint(dirpath=fold.checkpoints, filename=FoldDir.LAST, save_top_k=1,
                           monitor=None)
    checkpoint = (ModelCheckpoint(dirpath=fold.checkpoints, filename=FoldDir.BEST, monitor=MONITOR,
                                  mode="max", auto_insert_metric_name=False)
                  if validate else last)
    top = cfg.train.average_checkpoints
    soup = ([TopEpochs(dirpath=fold.checkpoints, filename=f"{FoldDir.TOP}-{{epoch:03d}}",
                       monitor=MONITOR, mode="max", save_top_k=top, save_weights_only=True,
                       auto_insert_metric_name=False)]
            if validate and top >= 2 else [])
    callbacks = [*([checkpoint] if validate else []), last, *soup,
                 LearningRateMonitor(logging_interval="epoch"), options.clock,
                 progress_callback(options.clock, options.interactive), EpochSeed(cfg.seed),
                 InterruptCheckpoint(fold), *options.callbacks,
                 *([options.budget] if options.budget is not None else [])]
    if cfg.model.freeze_epochs:
        callbacks.append(FreezeBackbone(cfg.model.freeze_epochs))
    if validate and cfg.train.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max",
                                       patience=cfg.train.early_stopping_patience))
    loggers = [CSVLogger(save_dir=fold.path, name="", version=""),
               TensorBoardLogger(save_dir=fold.path, name=FoldDir.TENSORBOARD, version="",
                                 default_hp_metric=False)]
    if cfg.train.wandb_project is not None:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(project=cfg.train.wandb_project, save_dir=fold.path,
                                   name=f"{fold.run.name}/{fold.path.relative_to(fold.run)}",
                                   config=cfg.model_dump(mode="json")))
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        num_nodes=cfg.train.num_nodes,
        strategy=build_strategy(cfg.train),
        precision=cfg.train.precision,
        accumulate_grad_batches=cfg.train.accumulate,
        gradient_clip_val=cfg.train.grad_clip,
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=cfg.train.log_every_n_steps,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        limit_val_batches=1.0 if validate else 0,
        deterministic=cfg.train.deterministic,
    )
    return trainer, checkpoint


