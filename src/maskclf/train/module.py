"""The LightningModule that trains a classifier: loss, mixing, distillation, EMA, the
optimizer and its schedule."""

from __future__ import annotations

import logging
import math

import torch
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from maskclf import metrics
from maskclf.config import AugConfig, SchedConfig
from maskclf.labels import NUM_CLASSES, ClassCounts
from maskclf.models.factory import checkpoint_hparams
from maskclf.models.heads import SingleTask, build_task
from maskclf.models.spec import ModelSpec, Preprocessing
from maskclf.predict.module import InferenceModule
from maskclf.train.mixing import HalfFaceMix

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
            rows = self.task.metric_known(targets)  # outside rows may not know it
            if bool(rows.any()):
                self.train_acc(self.task.probs(outputs[rows]).argmax(dim=1),
                               self.task.metric_targets(targets[rows] % NUM_CLASSES))
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
        rows = self.task.metric_known(targets)  # a label made unknown is not scored
        preds = self.task.probs(outputs[rows]).argmax(dim=1)
        truth = self.task.metric_targets(targets[rows] % NUM_CLASSES)
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


def build_module(spec: ModelSpec, net: torch.nn.Module,
                 class_counts: ClassCounts | None = None,
                 partial: bool = False) -> ClassifierModule:
    """The training module for ``net`` with the task, optimizer, schedule and tricks of
    ``spec``; class weights (when asked for) come from the training-class counts;
    ``partial``: a row may not know every attribute."""
    return ClassifierModule(net, build_task(spec, class_counts, partial), spec,
                            mixup=build_mixup(spec.cfg.aug))
