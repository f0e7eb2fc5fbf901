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
import shutil
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback

from maskclf.atomic import atomic_write, write_csv
from maskclf.models.weights import safe_torch_load
from maskclf.runs.directory import FoldDir, RunDir

log = logging.getLogger(__name__)


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
                        self.fold.checkpoints, RunDir(self.fold.run).resume_command())


def last_checkpoint(fold: FoldDir) -> Path | None:
    """The end-of-epoch checkpoint to resume a fold from, if it got that far; read once
    here so a damaged or tampered file is one clear error, not Lightning's traceback."""
    if not fold.last.is_file():
        return None
    safe_torch_load(fold.last, "maskclf checkpoint")
    return fold.last


def _moved(value, old: str, new: str):
    """``value`` with every string (and dict key) under folder ``old`` moved to ``new``."""
    if isinstance(value, str):
        return new + value[len(old):] if value.startswith(old) else value
    if isinstance(value, dict):
        return {_moved(k, old, new): _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_moved(v, old, new) for v in value)
    return value


def carry_fold(parent: FoldDir, child: FoldDir) -> None:
    """Start ``child`` (a fold of a continued run) where ``parent`` ended: its last and best
    checkpoints and its metrics rows. The checkpoint callbacks' paths move to the child's
    folder, so ``ModelCheckpoint`` keeps the parent's best score (best.ckpt is replaced only
    by a better epoch); early stopping's count starts afresh."""
    state = safe_torch_load(parent.last, "maskclf checkpoint")
    old, new = str(parent.checkpoints), str(child.checkpoints)
    state["callbacks"] = {key: _moved(value, old, new)
                          for key, value in state.get("callbacks", {}).items()
                          if not key.startswith("EarlyStopping")}
    child.checkpoints.mkdir(parents=True, exist_ok=True)
    atomic_write(child.last, lambda tmp: torch.save(state, tmp))
    if parent.best.is_file():
        atomic_write(child.best, lambda tmp: shutil.copyfile(parent.best, tmp))
    if parent.metrics.is_file():
        write_csv(pd.read_csv(parent.metrics), child.metrics)


def stash_metrics(fold: FoldDir) -> None:
    """Before a resumed fit: keep the fold's metrics rows in metrics-history.csv, because
    Lightning's CSVLogger deletes metrics.csv when it reopens a folder."""
    frames = [pd.read_csv(p) for p in (fold.metrics_history, fold.metrics) if p.is_file()]
    if frames:
        write_csv(pd.concat(frames, ignore_index=True), fold.metrics_history)
        fold.metrics.unlink(missing_ok=True)


def restore_metrics(fold: FoldDir) -> None:
    """After a resumed fit: earlier rows of the steps it did not redo, then its own rows.

    Rows are cut by global step, not epoch: the learning-rate rows have no epoch."""
    if not fold.metrics_history.is_file():
        return
    earlier = pd.read_csv(fold.metrics_history)
    if fold.metrics.is_file():
        resumed = pd.read_csv(fold.metrics)
        earlier = pd.concat([earlier[earlier["step"] < resumed["step"].min()], resumed],
                            ignore_index=True)
    write_csv(earlier, fold.metrics)
    fold.metrics_history.unlink()
