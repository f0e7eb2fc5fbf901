"""Interrupted runs: what a fold left on disk, and how training picks up from it.

Every epoch ends with ``checkpoints/last.ckpt`` (model, EMA, optimizer, scheduler, epoch,
best-so-far). A finished fold writes ``result.json`` (+ ``val_probs.npy``), so a resumed run
skips it. Training resumes from the last *finished* epoch: with ``EpochSampler`` and
``EpochSeed`` that epoch is replayed exactly, so the resumed run ends with the same
metrics as an uninterrupted one. SIGINT / SIGTERM also save ``checkpoints/interrupted.ckpt``
(the weights at the moment of the signal) and print the command that resumes.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback

from maskclf.atomic import atomic_write, atomic_write_text
from maskclf.submission import write_csv

RESULT_FILE = "result.json"
PROBS_FILE = "val_probs.npy"
METRICS_FILE = "metrics.csv"
HISTORY_FILE = "metrics-history.csv"


def resume_command(run: Path) -> str:
    return f"maskclf train --resume {shlex.quote(str(run))}"


class InterruptCheckpoint(Callback):
    """On Ctrl+C or SIGTERM: save the current state and say how to resume the run."""

    def __init__(self, run: Path, checkpoints: Path):
        self.run, self.checkpoints = run, checkpoints

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt | SystemExit):
            return
        trainer.save_checkpoint(self.checkpoints / "interrupted.ckpt")
        if trainer.is_global_zero:
            print(f"\ninterrupted in epoch {trainer.current_epoch + 1}; state saved in "
                  f"{self.checkpoints}. Resume (from the last finished epoch) with:\n"
                  f"  {resume_command(self.run)}", flush=True)


def last_checkpoint(fold_path: Path) -> Path | None:
    """The end-of-epoch checkpoint to resume a fold from, if it got that far."""
    path = fold_path / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def save_fold_result(fold_path: Path, checkpoints: list[Path], probs: np.ndarray | None
                     ) -> None:
    """Mark a fold finished: its checkpoints and validation probabilities."""
    if probs is not None:
        atomic_write(fold_path / PROBS_FILE, lambda tmp: np.save(tmp.open("wb"), probs))
    atomic_write_text(fold_path / RESULT_FILE, json.dumps(
        {"checkpoints": [str(c) for c in checkpoints], "validated": probs is not None}) + "\n")


def load_fold_result(fold_path: Path) -> tuple[list[Path], np.ndarray | None] | None:
    """(checkpoints, validation probabilities) of a finished fold; None if unfinished."""
    path = fold_path / RESULT_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    probs = np.load(fold_path / PROBS_FILE) if result["validated"] else None
    return [Path(c) for c in result["checkpoints"]], probs


def stash_metrics(fold_path: Path) -> None:
    """Before a resumed fit: keep the fold's metrics rows in metrics-history.csv, because
    Lightning's CSVLogger deletes metrics.csv when it reopens a folder."""
    frames = [pd.read_csv(p) for p in (fold_path / HISTORY_FILE, fold_path / METRICS_FILE)
              if p.is_file()]
    if frames:
        write_csv(pd.concat(frames, ignore_index=True), fold_path / HISTORY_FILE)
        (fold_path / METRICS_FILE).unlink(missing_ok=True)


def restore_metrics(fold_path: Path) -> None:
    """After a resumed fit: earlier rows of the epochs it did not redo, then its own rows."""
    history, current = fold_path / HISTORY_FILE, fold_path / METRICS_FILE
    if not history.is_file():
        return
    earlier = pd.read_csv(history)
    if current.is_file():
        resumed = pd.read_csv(current)
        earlier = pd.concat([earlier[earlier["epoch"] < resumed["epoch"].min()], resumed],
                            ignore_index=True)
    write_csv(earlier, current)
    history.unlink()
