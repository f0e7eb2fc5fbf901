"""The LightningModule that trains a classifier, and the Trainer assembled around it."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from timm.optim import create_optimizer_v2
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from maskclf.atomic import atomic_write
from maskclf.config import OptimConfig, RunConfig, SchedConfig
from maskclf.labels import NUM_CLASSES
from maskclf.losses import create_loss
from maskclf.progress import progress_callback, quiet_lightning

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


class ClassifierModule(L.LightningModule):
    """Trains an injected network; logs ``train/loss``, ``val/loss``, ``val/acc``, ``val/f1``."""

    def __init__(self, net: torch.nn.Module, loss: torch.nn.Module, optim: OptimConfig,
                 sched: SchedConfig, channels_last: bool = False,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.loss = loss
        self.optim_cfg, self.sched_cfg = optim, sched
        self.channels_last = channels_last
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.loss(logits, targets)
        self.train_acc(logits.argmax(dim=1), targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        preds = logits.argmax(dim=1)
        self.val_acc(preds, targets)
        self.val_f1(preds, targets)
        self.log("val/loss", self.loss(logits, targets), on_epoch=True, prog_bar=False)
        self.log("val/acc", self.val_acc, on_epoch=True)
        self.log(MONITOR, self.val_f1, on_epoch=True, prog_bar=True)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return torch.softmax(self(batch[0]).float(), dim=1)

    def configure_optimizers(self):
        cfg = self.optim_cfg
        extra = {"momentum": cfg.momentum, "nesterov": True} if cfg.name == "sgd" else {}
        optimizer = create_optimizer_v2(self.net, opt=cfg.name, lr=cfg.lr,
                                        weight_decay=cfg.weight_decay, **extra)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_multiplier(step, total, per_epoch, self.sched_cfg))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed: never half-written."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def build_trainer(cfg: RunConfig, out_dir: Path, validate: bool,
                  interactive: bool | None = None) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer logging to ``out_dir`` (metrics.csv, tb/) and checkpointing to checkpoints/."""
    if validate:
        checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best",
                                     monitor=MONITOR, mode="max", save_last=True,
                                     auto_insert_metric_name=False)
    else:
        checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="last",
                                     save_top_k=1, monitor=None)
    loggers = [CSVLogger(save_dir=out_dir, name="", version=""),
               TensorBoardLogger(save_dir=out_dir, name="tb", version="", default_hp_metric=False)]
    quiet_lightning()
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        precision=cfg.train.precision,
        logger=loggers,
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="epoch"),
                   progress_callback(interactive)],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=cfg.train.log_every_n_steps,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        limit_val_batches=1.0 if validate else 0,
        deterministic=False,
    )
    return trainer, checkpoint


def build_module(cfg: RunConfig, net: torch.nn.Module, class_weights=None) -> ClassifierModule:
    """The training module for ``net`` with the loss, optimizer and schedule of ``cfg``."""
    return ClassifierModule(net, create_loss(cfg.loss, class_weights), cfg.optim, cfg.sched,
                            channels_last=cfg.train.channels_last)
