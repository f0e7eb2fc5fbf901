"""The LightningModule that trains a classifier, and the Trainer assembled around it."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta

import lightning as L
import numpy as np
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
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from maskclf import metrics
from maskclf.atomic import atomic_write
from maskclf.config import AugConfig, SchedConfig, TrainConfig
from maskclf.inference import InferenceModule
from maskclf.labels import NUM_CLASSES
from maskclf.mixing import HalfFaceMix
from maskclf.models.factory import checkpoint_hparams
from maskclf.models.heads import SingleTask, build_task
from maskclf.models.spec import ModelSpec, Preprocessing
from maskclf.progress import RunClock, progress_callback
from maskclf.reproducibility import EpochSeed
from maskclf.resume import InterruptCheckpoint
from maskclf.rundir import FoldDir
from maskclf.ticker import duration

log = logging.getLogger(__name__)

MONITOR = metrics.VAL_F1


def lr_multiplier(step: int, total_steps: int, steps_per_epoch: int, cfg: SchedConfig) -> float:
    """Learning-rate factor at optimizer ``step``: linear warmup, then the schedule."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.name == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_epochs)
    return 1.0


def build_mixup(aug: AugConfig) -> Mixup | HalfFaceMix | None:
    """Half-face CutMix (``aug.cutmix_mode: vertical_half``), else timm's Mixup/CutMix, each
    producing soft 18-class targets; None when mixing is off."""
    if aug.cutmix_mode == "vertical_half":
        return HalfFaceMix(aug.mix_prob, aug.cutmix_within_class, aug.half_lambda)
    if aug.mixup_alpha <= 0 and aug.cutmix_alpha <= 0:
        return None
    return Mixup(mixup_alpha=aug.mixup_alpha, cutmix_alpha=aug.cutmix_alpha, prob=aug.mix_prob,
                 switch_prob=aug.switch_prob, label_smoothing=0.0, num_classes=NUM_CLASSES)


def _unpack(batch, teacher: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(images, targets, ages or None, teacher soft targets or None): datasets add ages for
    an age-regression head, then a distilling student's teacher row (training batches)."""
    images, targets, *rest = batch
    soft = rest.pop() if teacher else None
    return images, targets, rest[0] if rest else None, soft


class ClassifierModule(InferenceModule):
    """Trains an injected network for a task; logs ``train/loss``, ``val/loss``, ``val/f1``.

    With EMA on, validation and prediction use the EMA weights, and checkpoints hold both
    (``net.*`` and ``ema.module.*``). Checkpoints also hold the spec and preprocessing
    (``hyper_parameters``), so ``models.load_net`` rebuilds the network from the file alone.
    """

    def __init__(self, net: torch.nn.Module, task: SingleTask, spec: ModelSpec,
                 mixup: Mixup | HalfFaceMix | None = None):
        cfg = spec.cfg
        preprocessing = Preprocessing.of(spec, net)
        super().__init__(net, task, preprocessing, channels_last=cfg.train.channels_last)
        self.save_hyperparameters(checkpoint_hparams(spec, preprocessing), logger=False)
        self.optim_cfg, self.sched_cfg = cfg.optim, cfg.sched
        self.mixup, self.mix_off_epoch = mixup, cfg.aug.mix_off_epoch
        self.distill = cfg.distill if cfg.distill.teacher is not None else None
        self.ema = ModelEmaV3(self.net, decay=cfg.train.ema_decay) if cfg.train.ema else None
        # kept out of the module tree so checkpoints hold plain ``net.*`` keys
        object.__setattr__(self, "_train_forward", torch.compile(self.net)
                           if cfg.train.compile else self.net)
        classes = task.num_metric_classes
        self.train_acc = MulticlassAccuracy(classes, average="micro")
        self.val_acc = MulticlassAccuracy(classes, average="micro")
        self.val_f1 = MulticlassF1Score(classes, average="macro")

    def eval_net(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def _mixing(self) -> bool:
        return self.mixup is not None and (self.mix_off_epoch == 0
                                           or self.current_epoch < self.mix_off_epoch)

    def _mix(self, images: torch.Tensor, targets: torch.Tensor, ages: torch.Tensor | None):
        """Mixed images, soft targets and ages (the config allows ages only with
        ``HalfFaceMix``, which mixes them with the targets' shares)."""
        if isinstance(self.mixup, HalfFaceMix):
            return self.mixup.mix(images, targets, ages)
        return (*self.mixup(images, targets), ages)

    def _distilled(self, loss: torch.Tensor, outputs: torch.Tensor,
                   teacher: torch.Tensor | None) -> torch.Tensor:
        """The true-label loss mixed with the teacher's soft targets (``distill``)."""
        if teacher is None:
            return loss
        alpha = self.distill.alpha
        soft = self.task.distill_loss(outputs, teacher, self.distill.temperature)
        return soft if alpha == 1 else (1 - alpha) * loss + alpha * soft

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets, ages, teacher = _unpack(batch, self.distill is not None)
        images = self.normalize(images)
        if self._mixing():
            images, soft, ages = self._mix(images, targets, ages)
            outputs = self._train_forward(images)
            loss = self.task.loss(outputs, soft, ages)
        else:
            outputs = self._train_forward(images)
            loss = self._distilled(self.task.loss(outputs, targets, ages), outputs, teacher)
            self.train_acc(self.task.probs(outputs).argmax(dim=1),
                           self.task.metric_targets(targets))
            self.log(metrics.TRAIN_ACC, self.train_acc, on_step=False, on_epoch=True)
        # the step value stays local (no all-reduce per step under DDP); the epoch mean is
        # averaged over the ranks once, at the epoch's end
        self.log(metrics.TRAIN_LOSS_STEP, loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log(metrics.TRAIN_LOSS, loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """EMA follows optimizer steps, not batches: with ``train.accumulate`` > 1 a batch
        may not move the weights, and an update per batch would make the decay wrong."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.net)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets, ages, _ = _unpack(batch)
        outputs = self(images)
        preds = self.task.probs(outputs).argmax(dim=1)
        truth = self.task.metric_targets(targets)
        self.val_acc(preds, truth)
        self.val_f1(preds, truth)
        self.log(metrics.VAL_LOSS, self.task.loss(outputs, targets, ages), on_epoch=True,
                 sync_dist=True)
        self.log(metrics.VAL_ACC, self.val_acc, on_epoch=True)
        self.log(MONITOR, self.val_f1, on_epoch=True, prog_bar=True)

    def on_train_start(self) -> None:
        """Set each step schedule's rate for the step training starts at. A resumed fit
        restores the optimizer with the rate it had; a continued run (more epochs) has a
        longer schedule, which must apply from its first step, not its second."""
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                for group, base, rate in zip(scheduler.optimizer.param_groups,
                                             scheduler.base_lrs, scheduler.lr_lambdas,
                                             strict=True):
                    group["lr"] = base * rate(scheduler.last_epoch)

    def configure_optimizers(self):
        cfg = self.optim_cfg
        name = {"sgd": "sgd" if cfg.nesterov else "momentum"}.get(cfg.name, cfg.name)
        extra = {"momentum": cfg.momentum} if cfg.name == "sgd" else {}
        if cfg.layer_decay is not None:
            extra["layer_decay"] = cfg.layer_decay
        optimizer = create_optimizer_v2(self.net, opt=name, lr=cfg.lr,
                                        weight_decay=cfg.weight_decay, **extra)
        if self.sched_cfg.name == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=self.sched_cfg.gamma,
                patience=self.sched_cfg.patience)
            return {"optimizer": optimizer, "lr_scheduler": {
                "scheduler": plateau, "monitor": MONITOR, "interval": "epoch"}}
        total = int(self.trainer.estimated_stepping_batches)
        self.steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs))
        self.planned_steps = total  # TimeBudget shortens it to the epochs that fit
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_multiplier(step, self.planned_steps,
                                                  self.steps_per_epoch, self.sched_cfg))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class TimeBudget(Callback):
    """``train.time_limit`` over a whole run: shared by every fold's Trainer, after the run
    clock (whose epoch times it reads). Once an epoch has been timed, each fold gets the
    run's time left divided by the folds left, trains the epochs that fit (at least one, at
    most ``train.epochs``) and plans its learning-rate schedule for them, so a cosine still
    decays to its end; the clock is told, so the time left counts the epochs planned.
    Rank 0's timing decides for every rank."""

    def __init__(self, limit_s: float, folds: int, clock: RunClock):
        self.clock = clock
        self.deadline = time.monotonic() + limit_s
        self.limit_s, self.folds_left = limit_s, folds
        self.epochs: list[int] = []
        self._fold_started = 0.0
        self._first_epoch = 0
        """The epoch a fold starts this session at (a resumed or continued fold's next)."""

    def skip(self) -> None:
        """A fold finished in an earlier session (a resumed run): one fold fewer to share."""
        self.folds_left = max(1, self.folds_left - 1)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fold_started = time.monotonic()
        self._first_epoch = trainer.current_epoch
        self.epochs.append(trainer.max_epochs)
        if self.clock.trained:
            self._plan(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.clock.trained == 1:  # the run's first timed epoch
            self._plan(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs[-1] = trainer.current_epoch
        self.folds_left = max(1, self.folds_left - 1)

    def _plan(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now, epoch_s = time.monotonic(), self.clock.seconds / self.clock.trained
        share = (self.deadline - now) / self.folds_left + (now - self._fold_started)
        fits = min(trainer.max_epochs, self._first_epoch + max(1, int(share // epoch_s)))
        fits = int(trainer.strategy.broadcast(fits, src=0))
        if fits < trainer.max_epochs:
            log.info("train.time_limit %s: this fold trains %d of %d epochs (%.1fs an "
                     "epoch, %s left)", duration(self.limit_s), fits, trainer.max_epochs,
                     epoch_s, duration(max(0.0, self.deadline - now)))
            self.clock.total_epochs -= trainer.max_epochs - fits
            trainer.fit_loop.max_epochs = fits
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
    several = (isinstance(train.devices, int) and train.devices > 1) or train.num_nodes > 1
    if train.strategy == "ddp" or (train.strategy == "auto" and several):
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


def build_module(spec: ModelSpec, net: torch.nn.Module,
                 class_counts: np.ndarray | None = None) -> ClassifierModule:
    """The training module for ``net`` with the task, optimizer, schedule and tricks of
    ``spec``; class weights (when asked for) come from the training-class counts."""
    return ClassifierModule(net, build_task(spec, class_counts), spec,
                            mixup=build_mixup(spec.cfg.aug))
