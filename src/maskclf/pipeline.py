"""A training run end to end: check data, split by person, train, score, write the run dir."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader

from maskclf.atomic import atomic_write_text
from maskclf.config import RunConfig, dump_config
from maskclf.data.layout import read_tables
from maskclf.data.splits import attach_folds, holdout_split
from maskclf.metrics import score
from maskclf.models import create_model
from maskclf.predict import make_dataset, predict_probs
from maskclf.rundir import create_run_dir, fold_dir
from maskclf.submission import prediction_table, write_csv
from maskclf.training import build_module, build_trainer


@dataclass
class FoldResult:
    fold: int
    checkpoint: Path
    scores: dict | None
    oof: pd.DataFrame | None


@dataclass
class RunResult:
    run: Path
    summary: dict


def _loader(dataset, cfg: RunConfig, train: bool) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=train,
                      drop_last=train and len(dataset) > cfg.train.batch_size,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())


def fit_fold(cfg: RunConfig, root: Path, records: pd.DataFrame, fold: int, run: Path,
             interactive: bool | None = None) -> FoldResult:
    """Train one fold from fresh weights: persons of ``fold`` validate, the rest train."""
    train_rows, val_rows = records[records["fold"] != fold], records[records["fold"] == fold]
    net = create_model(cfg.model)
    train_set = make_dataset(cfg, root, train_rows["path"], train_rows["class"], net, True)
    module = build_module(cfg, net)
    validate = len(val_rows) > 0
    val_set = make_dataset(cfg, root, val_rows["path"], val_rows["class"], net, False)
    trainer, checkpoint = build_trainer(cfg, fold_dir(run, fold), validate, interactive)
    trainer.fit(module, _loader(train_set, cfg, True),
                _loader(val_set, cfg, False) if validate else None)
    best = Path(checkpoint.best_model_path or checkpoint.last_model_path)
    if not validate:
        return FoldResult(fold, best, None, None)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    probs = predict_probs(cfg, module.net, val_set)
    oof = prediction_table(val_rows["path"], probs).assign(fold=fold,
                                                           **{"class": val_rows["class"].values})
    return FoldResult(fold, best, score(val_rows["class"], probs.argmax(axis=1)), oof)


def train_run(cfg: RunConfig, data_root: Path | str, runs_dir: Path | str = "runs",
              name: str | None = None, interactive: bool | None = None) -> RunResult:
    """Check the whole dataset, then train into a new run directory and summarise it."""
    started = time.monotonic()
    root = Path(data_root)
    records, _ = read_tables(root)
    create_model(cfg.model)  # fail on a bad model name or weights file before the run dir
    run = create_run_dir(runs_dir, name)
    atomic_write_text(run / "config.yaml", dump_config(cfg))
    atomic_write_text(run / "command.txt", " ".join(sys.argv) + "\n")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    folds = holdout_split(records, cfg.data.val_ratio, cfg.seed)
    write_csv(folds, run / "folds.csv")
    records = attach_folds(records, folds)
    result = fit_fold(cfg, root, records, 0, run, interactive)
    summary = {
        "run": str(run),
        "n_train_images": int((records["fold"] != 0).sum()),
        "n_val_images": int((records["fold"] == 0).sum()),
        "checkpoint": str(result.checkpoint),
        "validation": result.scores,
        "seconds": round(time.monotonic() - started, 1),
    }
    if result.oof is not None:
        write_csv(result.oof, run / "oof.csv")
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2) + "\n")
    return RunResult(run, summary)


def val_f1(summary: dict) -> float | None:
    return None if summary["validation"] is None else float(summary["validation"]["macro_f1"])

