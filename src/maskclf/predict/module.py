"""Running a trained network: normalisation on the device, TTA, and probabilities.

The smallest LightningModule that predicts — no optimizer, no mixup, no EMA bookkeeping.
Training's ``ClassifierModule`` extends it, so both normalise batches the same way.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from maskclf.data.dataset import ImageDataset
from maskclf.data.loaders import make_loader
from maskclf.models.factory import LoadedNet
from maskclf.models.heads import SingleTask, build_task
from maskclf.models.spec import Preprocessing
from maskclf.ticker import Ticker
from maskclf.tta import tta_probs

log = logging.getLogger(__name__)


class InferenceModule(L.LightningModule):
    """``net`` with its task's probabilities; uint8 N x H x W x C batches are normalised
    with ``preprocessing``'s mean/std on the device."""

    def __init__(self, net: torch.nn.Module, task: SingleTask, preprocessing: Preprocessing,
                 channels_last: bool = False, tta: list[str] | None = None):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.task = task
        self.channels_last = channels_last
        self.tta = list(tta or [])
        self.register_buffer("mean", 255 * torch.tensor(preprocessing.mean).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", 255 * torch.tensor(preprocessing.std).view(1, -1, 1, 1),
                             persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x H x W x C batches from the loader -> normalised float N x C x H x W.

        Float N x C x H x W input passes through (already normalised).
        """
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).float().sub_(self.mean).div_(self.std)
        return images.contiguous(memory_format=torch.channels_last if self.channels_last
                                 else torch.contiguous_format)

    def eval_net(self) -> torch.nn.Module:
        return self.net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.eval_net()(self.normalize(images))

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return tta_probs(lambda images: self.task.probs(self(images)), self.normalize(batch[0]),
                         self.tta)


class EmbeddingModule(InferenceModule):
    """Predicts the backbone's pooled features (timm's pre-logits), not probabilities."""

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        net = self.eval_net()
        return net.forward_head(net.forward_features(self.normalize(batch[0])), pre_logits=True)


class PredictProgress(Callback):
    """A log line at most every 10 s while a network predicts (batches done, time left)."""

    def __init__(self, what: str):
        self.what = what
        self.ticker: Ticker | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ticker = Ticker(self.what, int(sum(trainer.num_predict_batches)), log)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                             dataloader_idx: int = 0) -> None:
        self.ticker.tick()


def _run_predict(kind: type[InferenceModule], model: LoadedNet, dataset: ImageDataset,
                 tta: list[str]) -> np.ndarray:
    cfg = model.spec.cfg
    module = kind(model.net, build_task(model.spec), model.preprocessing,
                  channels_last=cfg.train.channels_last, tta=tta)
    what = f"predicting {len(dataset)} images with {model.checkpoint} (batches)"
    with quiet_lightning():
        trainer = L.Trainer(accelerator=cfg.train.accelerator, devices=1, logger=False,
                            precision=cfg.train.precision, enable_progress_bar=False,
                            enable_checkpointing=False, enable_model_summary=False,
                            callbacks=[PredictProgress(what)])
        try:
            batches = trainer.predict(module, make_loader(dataset, cfg))
        except SystemExit as exc:  # Lightning turns Ctrl+C into exit(1): keep it an interrupt
            if trainer.interrupted:
                raise KeyboardInterrupt from exc
            raise
    return torch.cat(batches).double().numpy()


def predict_probs(model: LoadedNet, dataset: ImageDataset, tta: list[str]) -> np.ndarray:
    """Probabilities of ``model`` on ``dataset`` in dataset order (N x 18, or N x attribute),
    averaged over the ``tta`` views and the plain image."""
    return _run_predict(InferenceModule, model, dataset, tta)


def predict_embeddings(model: LoadedNet, dataset: ImageDataset) -> np.ndarray:
    """The backbone's pooled features of every image of ``dataset`` (N x features)."""
    return _run_predict(EmbeddingModule, model, dataset, [])


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block, hide Lightning's start-up chatter and the warnings that do not apply
    to maskclf's use; the process's logger levels and warning filters are restored after."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    with warnings.catch_warnings():
        for message in (".*does not have many workers.*", ".*no `val_dataloader`.*",
                        ".*LeafSpec.*", r".*module\(s\) in eval mode.*",  # the EMA copy
                        # a resumed fold reopens its folders; metrics.csv is kept by resume.py
                        ".*exists and is not empty.*",
                        ".*smaller than the logging interval.*"):  # tiny data sets
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            logger.setLevel(level)
