"""One network trained on one fold: the Lightning fit, its interruptions turned into
maskclf's errors, the checkpoint soup and the fold's validation probabilities."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from maskclf.data.datamodule import FoldDataModule
from maskclf.errors import RankLost, RunInterrupted
from maskclf.models.factory import training_net
from maskclf.models.spec import ModelSpec
from maskclf.predict.engine import Network
from maskclf.predict.module import quiet_lightning
from maskclf.predict.run_backend import RunPredictor
from maskclf.results.teacher import teacher_of
from maskclf.runs.directory import RunDir
from maskclf.train.distributed import is_rank_zero
from maskclf.train.module import build_module
from maskclf.train.resume import last_checkpoint, restore_metrics, stash_metrics
from maskclf.train.soup import average_fold
from maskclf.train.trainer import FitOptions, TopEpochs, build_trainer

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """One trained fold: its checkpoints and its validation rows with their probabilities."""

    fold: int
    checkpoints: list[Path]
    val_rows: pd.DataFrame
    probs: np.ndarray | None
    soup: dict | None = None
    """Checkpoint averaging: what the soup scored and whether it was used."""


def fit_fold(spec: ModelSpec, root: Path, records: pd.DataFrame, fold: int, run: RunDir,
             options: FitOptions, extra: pd.DataFrame | None = None) -> FoldResult:
    """Train one network on one fold from fresh, seeded weights: persons of ``fold``
    validate, the rest (and ``extra``) train.

    A fold that already finished (resumed run) is read back; one that stopped part-way
    continues from its last finished epoch. Probabilities are over the spec's task (18
    classes, or one attribute).
    """
    cfg, out = spec.cfg, run.fold(spec, fold)
    finished = out.load_result()
    if finished is not None:
        options.clock.skip(cfg.train.epochs)
        if options.budget is not None:
            options.budget.skip()
        return FoldResult(fold, finished[0], records[records["fold"] == fold], finished[1],
                          out.read_soup())
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = FoldDataModule(cfg, root, records, fold, extra, with_ages=spec.regresses_age,
                          teacher=teacher_of(cfg), attribute=spec.attribute)
    module = build_module(spec, training_net(spec), data.class_counts(),
                          data.partial_targets)
    resume_from = last_checkpoint(out)
    writer = is_rank_zero()
    if resume_from is not None and writer:
        stash_metrics(out)
    with quiet_lightning():
        trainer, checkpoint = build_trainer(spec, out, data.validates, options)
        with stopped_as_maskclf_errors(trainer, run, cfg.train.ddp_timeout_s):
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
    best = Path(checkpoint.best_model_path or checkpoint.last_model_path)
    if not writer:  # rank 0 scores the fold once, on every validation image
        return FoldResult(fold, [best], data.val_rows, None)
    restore_metrics(out)
    soup = None
    top = _top_epochs(trainer)
    if len(top) >= 2:
        best, result = average_fold(out, spec, data, top, best)
        soup = result.to_dict()
    probs = (RunPredictor(run).network_probs(Network(spec.task, fold, best), root,
                                             data.val_rows["path"])
             if data.validates else None)
    out.save_result([best], probs, soup)
    return FoldResult(fold, [best], data.val_rows, probs, soup)


@contextmanager
def stopped_as_maskclf_errors(trainer: L.Trainer, run: RunDir, ddp_timeout_s: float
                              ) -> Iterator[None]:
    """Around ``trainer.fit``: the ways a fit stops short become maskclf's errors, each with
    the command that resumes the run. Lightning's exit after SIGTERM or Ctrl+C (its
    ``SystemExit``) and any failure after a SIGTERM (under DDP the ranks' next exchange
    breaks) are :class:`RunInterrupted`; a rank that stopped answering is :class:`RankLost`,
    after the ranks Lightning started are stopped."""
    try:
        yield
    except SystemExit as exc:
        signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
        raise RunInterrupted(f"stopped by {signal.Signals(signum).name}; resume from the "
                             f"last finished epoch with: {run.resume_command()}",
                             signum) from exc
    except Exception as exc:
        if trainer.received_sigterm:
            raise RunInterrupted(f"stopped by SIGTERM ({type(exc).__name__} as the ranks "
                                 "stopped); resume from the last finished epoch with: "
                                 f"{run.resume_command()}", signal.SIGTERM) from exc
        if trainer.world_size > 1 and _lost_peer(exc):
            if trainer.strategy.launcher is not None:  # ranks Lightning started: stop them
                trainer.strategy.launcher.kill(signal.SIGKILL)
            raise RankLost(f"rank {trainer.global_rank}: another rank stopped answering "
                           f"(waited up to train.ddp_timeout_s={ddp_timeout_s} s: "
                           f"{str(exc).splitlines()[0][:200]}); resume from the last "
                           f"finished epoch with: {run.resume_command()}") from exc
        raise


def _top_epochs(trainer: L.Trainer) -> list[Path]:
    """The fold's kept best epochs (``train.average_checkpoints``), best first."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, TopEpochs):
            ranked = sorted(callback.best_k_models.items(), key=lambda item: -float(item[1]))
            return [Path(path) for path, _ in ranked]
    return []


def _lost_peer(exc: Exception) -> bool:
    """Whether a DDP failure is another rank gone silent: torch types some of these errors;
    gloo's timeouts and closed connections arrive as RuntimeErrors that say so."""
    text = str(exc).lower()
    return isinstance(exc, torch.distributed.DistError) or any(
        sign in text for sign in ("timeout", "timed out", "connection reset", "pair closure"))

