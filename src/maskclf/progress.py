"""Progress output: a rich bar on a terminal, plain periodic lines in logs and CI.

Progress goes to stderr, so stdout stays free for results (``--json``).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar


def _format(metrics: dict) -> str:
    """``train/loss=0.1234  val/f1=0.5678 ...`` with one learning rate and no per-step values."""
    shown: dict[str, float] = {}
    for key, value in sorted(metrics.items()):
        if key.startswith("lr-"):
            shown.setdefault("lr", float(value))
        elif "/" in key and not key.endswith("_step"):
            shown[key.removesuffix("_epoch")] = float(value)
    return "  ".join(f"{key}={value:.4g}" for key, value in shown.items())


class PlainProgress(ProgressBar):
    """Prints a line every ``every_s`` seconds within an epoch and one line per epoch."""

    def __init__(self, every_s: float = 30.0, stream=None):
        super().__init__()
        self._enabled = True
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._epoch_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args, **kwargs) -> None:
        if self._enabled:
            print(*args, **kwargs, file=self.stream, flush=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
                       f"batch {batch_idx + 1}/{self.total_train_batches}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.monotonic() - self._epoch_start
        self.print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} ({seconds:.1f}s)  "
                   f"{_format(trainer.callback_metrics)}")


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
                        ".*exists and is not empty.*"):
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            logger.setLevel(level)


def progress_callback(interactive: bool | None = None) -> ProgressBar:
    """Rich progress bar when stderr is a terminal, plain lines otherwise; both on stderr."""
    interactive = sys.stderr.isatty() if interactive is None else interactive
    return RichProgressBar(console_kwargs={"stderr": True}) if interactive else PlainProgress()
