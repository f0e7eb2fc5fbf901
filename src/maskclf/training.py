"""The LightningModule that trains a classifier, and the Trainer assembled around it."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from timm.data import Mixup, resolve_model_data_config
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from maskclf.atomic import atomic_write
from maskclf.config import AugConfig, OptimConfig, RunConfig, SchedConfig
from maskclf.data.sampling import class_weights
from maskclf.labels import NUM_CLASSES
from maskclf.losses import create_loss
from maskclf.models.heads import AttributeTask, MultiHeadTask, SingleTask
from maskclf.progress import progress_callback, quiet_lightning
from maskclf.reproducibility import EpochSeed
from maskclf.resume import InterruptCheckpoint
from maskclf.tta import tta_probs

MONITOR = "val/f1"


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


def build_mixup(aug: AugConfig) -> Mixup | None:
    """timm's Mixup/CutMix producing soft 18-class targets, or None when both are off."""
    if aug.mixup_alpha <= 0 and aug.cutmix_alpha <= 0:
        return None
    return Mixup(mixup_alpha=aug.mixup_alpha, cutmix_alpha=aug.cutmix_alpha, prob=aug.mix_prob,
                 switch_prob=aug.switch_prob, label_smoothing=0.0, num_classes=NUM_CLASSES)


def build_task(cfg: RunConfig, attribute: str | None = None,
               counts: np.ndarray | None = None) -> SingleTask:
    """The head's task (outputs, loss, probabilities) with class weights from ``counts``."""
    cube = None if counts is None else np.asarray(counts).reshape(3, 2, 3)
    marginal_axes = {"mask": (1, 2), "gender": (0, 2), "age": (0, 1)}

    def weights(name: str | None):
        if cube is None:
            return None
        per_class = cube.ravel() if name is None else cube.sum(axis=marginal_axes[name])
        return class_weights(per_class, cfg.loss.class_weights, cfg.loss.effective_beta)

    if attribute is not None:
        return AttributeTask(attribute, create_loss(cfg.loss, weights(attribute)))
    if cfg.model.head == "multihead":
        losses = {name: create_loss(cfg.loss.attributes.get(name, cfg.loss), weights(name))
                  for name in marginal_axes}
        return MultiHeadTask(losses, cfg.loss.attribute_weights)
    return SingleTask(create_loss(cfg.loss, weights(None)))


class ClassifierModule(L.LightningModule):
    """Trains an injected network for a task; logs ``train/loss``, ``val/loss``, ``val/f1``.

    With EMA on, validation and prediction use the EMA weights, and checkpoints hold both
    (``net.*`` and ``ema.module.*``).
    """

    def __init__(self, net: torch.nn.Module, task: SingleTask, optim: OptimConfig,
                 sched: SchedConfig, channels_last: bool = False, mixup: Mixup | None = None,
                 mix_off_epoch: int = 0, ema_decay: float | None = None, compile: bool = False,
                 tta: list[str] | None = None):
        super().__init__()
        self.tta = list(tta or [])
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        data_cfg = resolve_model_data_config(net)
        self.register_buffer("mean", 255 * torch.tensor(data_cfg["mean"]).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", 255 * torch.tensor(data_cfg["std"]).view(1, -1, 1, 1),
                             persistent=False)
        self.task = task
        self.optim_cfg, self.sched_cfg = optim, sched
        self.channels_last = channels_last
        self.mixup, self.mix_off_epoch = mixup, mix_off_epoch
        self.ema = ModelEmaV3(self.net, decay=ema_decay) if ema_decay else None
        # kept out of the module tree so checkpoints hold plain ``net.*`` keys
        object.__setattr__(self, "_train_forward", torch.compile(self.net) if compile
                           else self.net)
        classes = task.num_metric_classes
        self.train_acc = MulticlassAccuracy(classes, average="micro")
        self.val_acc = MulticlassAccuracy(classes, average="micro")
        self.val_f1 = MulticlassF1Score(classes, average="macro")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x H x W x C batches from the loader -> normalised float N x C x H x W.

        Float N x C x H x W input passes through (already normalised).
        """
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).float().sub_(self.mean).div_(self.std)
        return images.contiguous(memory_format=torch.channels_last if self.channels_last
                                 else torch.contiguous_format)

    def eval_net(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.eval_net()(self.normalize(images))

    def _mixing(self) -> bool:
        return self.mixup is not None and (self.mix_off_epoch == 0
                                           or self.current_epoch < self.mix_off_epoch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        images = self.normalize(images)
        if self._mixing():
            images, soft = self.mixup(images, targets)
            outputs = self._train_forward(images)
            loss = self.task.loss(outputs, soft)
        else:
            outputs = self._train_forward(images)
            loss = self.task.loss(outputs, targets)
            self.train_acc(self.task.probs(outputs).argmax(dim=1),
                           self.task.metric_targets(targets))
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        outputs = self(images)
        preds = self.task.probs(outputs).argmax(dim=1)
        truth = self.task.metric_targets(targets)
        self.val_acc(preds, truth)
        self.val_f1(preds, truth)
        self.log("val/loss", self.task.loss(outputs, targets), on_epoch=True)
        self.log("val/acc", self.val_acc, on_epoch=True)
        self.log(MONITOR, self.val_f1, on_epoch=True, prog_bar=True)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return tta_probs(lambda images: self.task.probs(self(images)), self.normalize(batch[0]),
                         self.tta)

    def configure_optimizers(self):
        cfg = self.optim_cfg
        name = {"sgd": "sgd" if cfg.nesterov else "momentum"}.get(cfg.name, cfg.name)
        extra = {"momentum": cfg.momentum} if cfg.name == "sgd" else {}
        optimizer = create_optimizer_v2(self.net, opt=name, lr=cfg.lr,
                                        weight_decay=cfg.weight_decay, **extra)
        if self.sched_cfg.name == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=self.sched_cfg.gamma,
                patience=self.sched_cfg.patience)
            return {"optimizer": optimizer, "lr_scheduler": {
                "scheduler": plateau, "monitor": MONITOR, "interval": "epoch"}}
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_multiplier(step, total, per_epoch, self.sched_cfg))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class FreezeBackbone(Callback):
    """Train only the classifier for the first ``epochs`` epochs, then everything."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        frozen = trainer.current_epoch < self.epochs
        for parameter in pl_module.net.parameters():
            parameter.requires_grad = not frozen
        for parameter in pl_module.net.get_classifier().parameters():
            parameter.requires_grad = True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed: never half-written."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def build_trainer(cfg: RunConfig, out_dir: Path, validate: bool,
                  interactive: bool | None = None, run: Path | None = None
                  ) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer logging to ``out_dir`` (metrics.csv, tb/) and checkpointing to checkpoints/.

    Every epoch reseeds from (seed, epoch) and ends with ``checkpoints/last.ckpt``; an
    interrupt saves the current state and prints how to resume ``run``.
    """
    if cfg.sched.name == "plateau" and not validate:
        raise ValueError("sched.name: plateau follows validation macro F1; it needs "
                         "data.val_ratio > 0 or data.folds >= 2")
    if validate:
        checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best",
                                     monitor=MONITOR, mode="max", save_last=True,
                                     auto_insert_metric_name=False)
    else:
        checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="last",
                                     save_top_k=1, monitor=None)
    callbacks = [checkpoint, LearningRateMonitor(logging_interval="epoch"),
                 progress_callback(interactive), EpochSeed(cfg.seed),
                 InterruptCheckpoint(run or out_dir, out_dir / "checkpoints")]
    if cfg.model.freeze_epochs:
        callbacks.append(FreezeBackbone(cfg.model.freeze_epochs))
    loggers = [CSVLogger(save_dir=out_dir, name="", version=""),
               TensorBoardLogger(save_dir=out_dir, name="tb", version="", default_hp_metric=False)]
    if cfg.train.wandb_project is not None:
        from lightning.pytorch.loggers import WandbLogger

        fold = out_dir.relative_to(run) if run is not None else out_dir.name
        loggers.append(WandbLogger(project=cfg.train.wandb_project, save_dir=out_dir,
                                   name=f"{(run or out_dir).name}/{fold}",
                                   config=cfg.model_dump(mode="json")))
    quiet_lightning()
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
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


def build_module(cfg: RunConfig, net: torch.nn.Module, task: SingleTask) -> ClassifierModule:
    """The training module for ``net`` with the optimizer, schedule and tricks of ``cfg``."""
    mixup = build_mixup(cfg.aug)
    if mixup is not None and cfg.train.batch_size % 2:
        raise ValueError(f"mixup/cutmix need an even train.batch_size; got "
                         f"{cfg.train.batch_size}")
    return ClassifierModule(net, task, cfg.optim, cfg.sched,
                            channels_last=cfg.train.channels_last, mixup=mixup,
                            mix_off_epoch=cfg.aug.mix_off_epoch,
                            ema_decay=cfg.train.ema_decay if cfg.train.ema else None,
                            compile=cfg.train.compile, tta=cfg.predict.tta)
