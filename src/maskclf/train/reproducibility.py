"""Seeds and records that make a run repeatable: same config + seed -> same metrics (CPU)."""

from __future__ import annotations

import platform
import random
import sys
from datetime import UTC, datetime
from importlib import metadata

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from maskclf.data.sampling import derived_seed

RECORDED_PACKAGES = ("maskclf", "torch", "torchvision", "timm", "lightning", "albumentations",
                     "numpy", "opencv-python-headless")


class EpochSeed(Callback):
    """Reseed Python, NumPy and torch at every training epoch from (seed, epoch, rank).

    Dropout, mixup and anything else drawing from the global generators then depend only
    on the epoch, not on how many numbers earlier epochs (or an earlier process) drew —
    which is what makes a resumed run end exactly where an uninterrupted one does. Done at
    the first batch, not at epoch start: a resumed fit creates the loader iterator (which
    draws a torch seed) at another moment than an uninterrupted one.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        if batch_idx != 0:
            return
        seed = derived_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Versions, machine and exact command line, recorded in every run's ``run.json``."""
    return {
        "command": list(sys.argv),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in RECORDED_PACKAGES},
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
