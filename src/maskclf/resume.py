"""Interrupted runs: what a fold left on disk, and how training picks up from it.

Every epoch ends with ``checkpoints/last.ckpt`` (model, EMA, optimizer, scheduler, epoch,
best-so-far). A finished fold writes ``result.json`` (+ ``val_probs.npy``), so a resumed run
skips it. Training resumes from the last *finished* epoch: with ``EpochSampler`` and
``EpochSeed`` that epoch is replayed exactly, so the resumed run ends with the same
metrics as an uninterrupted one. SIGINT / SIGTERM also save ``checkpoints/interrupted.ckpt``
(the weights at the moment of the signal) and log the command that resumes.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback

from maskclf.atomic import write_csv
from maskclf.models.weights import safe_torch_load
from maskclf.rundir import FoldDir

log = logging.getLogger(__name__)


def resume_command(run: Path) -> str:
    return f"maskclf train --resume {shlex.quote(str(run))}"


class InterruptCheckpoint(Callback):
    """On Ctrl+C or SIGTERM: save the current state and say how to resume the run."""

    def __init__(self, fold: FoldDir):
        self.fold = fold

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt | SystemExit):
            return
        if trainer.world_size == 1:  # saving under DDP waits for ranks that are stopping
            trainer.save_checkpoint(self.fold.interrupted)
        if trainer.is_global_zero:
            log.warning("interrupted in epoch %d; state saved in %s. Resume (from the last "
                        "finished epoch) with:\n  %s", trainer.current_epoch + 1,
                        self.fold.checkpoints, resume_command(self.fold.run))


def last_checkpoint(fold: FoldDir) -> Path | None:
    """The end-of-epoch checkpoint to resume a fold from, if it got that far; read once
    here so a damaged or tampered file is one clear error, not Lightning's traceback."""
    if not fold.last.is_file():
        return None
    safe_torch_load(fold.last, "maskclf checkpoint")
    return fold.last


def stash_metrics(fold: FoldDir) -> None:
    """Before a resumed fit: keep the fold's metrics rows in metrics-history.csv, because
    Lightning's CSVLogger deletes metrics.csv when it reopens a folder."""
    frames = [pd.read_csv(p) for p in (fold.metrics_history, fold.metrics) if p.is_file()]
    if frames:
        write_csv(pd.concat(frames, ignore_index=True), fold.metrics_history)
        fold.metrics.unlink(missing_ok=True)


def restore_metrics(fold: FoldDir) -> None:
    """After a resumed fit: earlier rows of the epochs it did not redo, then its own rows."""
    if not fold.metrics_history.is_file():
        return
    earlier = pd.read_csv(fold.metrics_history)
    if fold.metrics.is_file():
        resumed = pd.read_csv(fold.metrics)
        earlier = pd.concat([earlier[earlier["epoch"] < resumed["epoch"].min()], resumed],
                            ignore_index=True)
    write_csv(earlier, fold.metrics)
    fold.metrics_history.unlink()
