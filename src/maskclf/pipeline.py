"""A training run end to end: check data, split by person, train every fold, score OOF."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from maskclf import labels
from maskclf.atomic import atomic_write_text
from maskclf.config import RunConfig, dump_config
from maskclf.data.corrections import CorrectionReport, apply_corrections, load_corrections
from maskclf.data.layout import read_tables
from maskclf.data.sampling import class_weights, oversample, sample_weights
from maskclf.data.splits import attach_folds, make_folds
from maskclf.metrics import score, write_confusions
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
    corrections: CorrectionReport | None = None


def training_classes(records: pd.DataFrame, old_from: int) -> np.ndarray:
    """Training targets: the class with the "old" boundary moved to ``old_from`` years.

    Only persons in the middle bucket move, so age corrections are kept; scoring always
    uses ``records["class"]``.
    """
    moved = (records["age_group"] == 1) & (records["age"] >= old_from)
    age_group = np.where(moved, 2, records["age_group"])
    return labels.encode_class(records["mask"].to_numpy(), records["gender"].to_numpy(),
                               age_group)


def prepare_records(cfg: RunConfig, root: Path) -> tuple[pd.DataFrame, CorrectionReport | None]:
    """Read and check the data, apply opt-in corrections, add the ``target`` column."""
    records, _ = read_tables(root)
    report = None
    if cfg.data.corrections is not False:
        source = None if cfg.data.corrections is True else cfg.data.corrections
        records, report = apply_corrections(records, load_corrections(source))
    records["target"] = training_classes(records, cfg.data.age_old_threshold)
    return records, report


def _train_loader(dataset, rows: pd.DataFrame, cfg: RunConfig) -> DataLoader:
    sampler = None
    if cfg.data.sampler == "balanced":
        by = {"class": "target", "age": "age_group"}.get(cfg.data.sampler_by, cfg.data.sampler_by)
        sampler = WeightedRandomSampler(sample_weights(rows[by]), num_samples=len(rows),
                                        generator=torch.Generator().manual_seed(cfg.seed))
    return _loader(dataset, cfg, shuffle=sampler is None, sampler=sampler, drop_last=True)


def _loader(dataset, cfg: RunConfig, shuffle: bool = False, sampler=None,
            drop_last: bool = False) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=shuffle, sampler=sampler,
                      drop_last=drop_last and len(dataset) > cfg.train.batch_size,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())


def fit_fold(cfg: RunConfig, root: Path, records: pd.DataFrame, fold: int, run: Path,
             interactive: bool | None = None) -> FoldResult:
    """Train one fold from fresh, seeded weights: persons of ``fold`` validate, the rest train."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train_rows = records[records["fold"] != fold]
    train_rows = oversample(train_rows, cfg.data.oversample, cfg.seed)
    val_rows = records[records["fold"] == fold]
    net = create_model(cfg.model)
    counts = np.bincount(train_rows["target"], minlength=labels.NUM_CLASSES)
    module = build_module(cfg, net, class_weights(counts, cfg.loss.class_weights,
                                                  cfg.loss.effective_beta))
    train_set = make_dataset(cfg, root, train_rows["path"], train_rows["target"], net, True)
    val_set = make_dataset(cfg, root, val_rows["path"], val_rows["class"], net, False)
    validate = len(val_rows) > 0
    out = fold_dir(run, fold)
    trainer, checkpoint = build_trainer(cfg, out, validate, interactive)
    trainer.fit(module, _train_loader(train_set, train_rows, cfg),
                _loader(val_set, cfg) if validate else None)
    best = Path(checkpoint.best_model_path or checkpoint.last_model_path)
    if not validate:
        return FoldResult(fold, best, None, None)
    module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    probs = predict_probs(cfg, module.net, val_set)
    predicted = probs.argmax(axis=1)
    write_confusions(val_rows["class"], predicted, out)
    oof = prediction_table(val_rows["path"], probs).assign(fold=fold,
                                                           **{"class": val_rows["class"].values})
    return FoldResult(fold, best, score(val_rows["class"], predicted), oof)


def _summarise(run: Path, records: pd.DataFrame, results: list[FoldResult], started: float
               ) -> dict:
    validated = [r for r in results if r.scores is not None]
    summary: dict = {
        "run": str(run),
        "n_images": len(records),
        "folds": [{"fold": r.fold, "checkpoint": str(r.checkpoint),
                   **({} if r.scores is None else {k: r.scores[k] for k in
                      ("n", "accuracy", "macro_f1", "attribute_f1")})} for r in results],
        "validation": None,
        "cv": None,
    }
    if validated:
        oof = pd.concat([r.oof for r in validated], ignore_index=True)
        write_csv(oof, run / "oof.csv")
        predicted = oof[[f"class_{i}" for i in range(labels.NUM_CLASSES)]].to_numpy().argmax(1)
        summary["validation"] = score(oof["class"], predicted)
        write_confusions(oof["class"], predicted, run)
        f1s = np.array([r.scores["macro_f1"] for r in validated])
        summary["cv"] = {"macro_f1_mean": float(f1s.mean()), "macro_f1_std": float(f1s.std()),
                         "oof_macro_f1": summary["validation"]["macro_f1"]}
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def train_run(cfg: RunConfig, data_root: Path | str, runs_dir: Path | str = "runs",
              name: str | None = None, fold: int | None = None,
              interactive: bool | None = None) -> RunResult:
    """Check the whole dataset, then train every fold (or only ``fold``) into a new run dir.

    ``summary["validation"]`` scores the pooled out-of-fold predictions; ``summary["cv"]``
    gives the mean and spread of the per-fold macro F1.
    """
    started = time.monotonic()
    root = Path(data_root)
    records, report = prepare_records(cfg, root)
    create_model(cfg.model)  # fail on a bad model name or weights file before the run dir
    folds = make_folds(records, cfg.data.folds, cfg.data.val_ratio, cfg.seed)
    fold_ids = sorted(int(f) for f in folds["fold"].unique() if f >= 0) or [0]
    if fold is not None and fold not in fold_ids:
        raise ValueError(f"--fold {fold} does not exist; this split has folds {fold_ids}")
    run = create_run_dir(runs_dir, name)
    atomic_write_text(run / "config.yaml", dump_config(cfg))
    atomic_write_text(run / "command.txt", " ".join(sys.argv) + "\n")
    write_csv(folds, run / "folds.csv")
    if report is not None:
        write_csv(report.changes, run / "corrections.csv")
        print(report.summary(), flush=True)
    records = attach_folds(records, folds)
    results = [fit_fold(cfg, root, records, k, run, interactive)
               for k in (fold_ids if fold is None else [fold])]
    summary = _summarise(run, records, results, started)
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2) + "\n")
    return RunResult(run, summary, report)
