"""A training run end to end: check data, split by person, train every fold, score OOF."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from maskclf import labels
from maskclf.atomic import atomic_write_text
from maskclf.config import RunConfig, dump_config, load_config
from maskclf.data.cache import build_cache, open_cache
from maskclf.data.corrections import CorrectionReport, apply_corrections, load_corrections
from maskclf.data.layout import read_tables
from maskclf.data.sampling import EpochSampler, oversample, sample_weights
from maskclf.data.splits import PSEUDO, attach_folds, make_folds
from maskclf.metrics import score, write_confusions
from maskclf.predict import (
    build_net,
    combine_attribute_probs,
    load_net,
    make_dataset,
    make_loader,
    predict_probs,
)
from maskclf.pseudo import read_extra
from maskclf.report import write_report
from maskclf.reproducibility import environment
from maskclf.resume import (
    last_checkpoint,
    load_fold_result,
    restore_metrics,
    save_fold_result,
    stash_metrics,
)
from maskclf.rundir import RUN_RECORD, create_run_dir, fold_dir, read_record, write_record
from maskclf.submission import CLASS_COLUMNS, prediction_table, write_csv
from maskclf.training import build_module, build_task, build_trainer


@dataclass
class FoldResult:
    """One trained fold: its checkpoint and its validation rows with their probabilities."""

    fold: int
    checkpoints: list[Path]
    val_rows: pd.DataFrame
    probs: np.ndarray | None


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
    """Read and check the data and apply opt-in corrections (shared by every model of a run)."""
    records, _ = read_tables(root)
    report = None
    if cfg.data.corrections is not False:
        source = None if cfg.data.corrections is True else cfg.data.corrections
        records, report = apply_corrections(records, load_corrections(source))
    return records, report


def _train_loader(dataset, rows: pd.DataFrame, cfg: RunConfig) -> DataLoader:
    weights = None
    if cfg.data.sampler == "balanced":
        by = {"class": "target", "age": "age_group"}.get(cfg.data.sampler_by, cfg.data.sampler_by)
        weights = sample_weights(rows[by])
    return make_loader(dataset, cfg, sampler=EpochSampler(len(rows), cfg.seed, weights),
                       drop_last=True)


def fit_fold(cfg: RunConfig, root: Path, records: pd.DataFrame, fold: int, out_dir: Path,
             attribute: str | None = None, interactive: bool | None = None,
             run: Path | None = None) -> FoldResult:
    """Train one fold from fresh, seeded weights: persons of ``fold`` validate, the rest train.

    A fold that already finished (resumed run) is read back; one that stopped part-way
    continues from its last finished epoch. ``attribute`` trains a one-attribute model
    (per-attribute runs); its probabilities are over that attribute.
    """
    out = fold_dir(out_dir, fold)
    val_rows = records[records["fold"] == fold]
    finished = load_fold_result(out)
    if finished is not None:
        return FoldResult(fold, finished[0], val_rows, finished[1])
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    records = records.assign(target=training_classes(records, cfg.data.age_old_threshold))
    train_rows = oversample(records[records["fold"] != fold], cfg.data.oversample, cfg.seed)
    net = build_net(cfg, attribute)
    counts = np.bincount(train_rows["target"], minlength=labels.NUM_CLASSES)
    module = build_module(cfg, net, build_task(cfg, attribute, counts))
    train_set = make_dataset(cfg, root, train_rows["path"], train_rows["target"], True)
    val_set = make_dataset(cfg, root, val_rows["path"], val_rows["class"], False)
    validate = len(val_rows) > 0
    resume_from = last_checkpoint(out)
    if resume_from is not None:
        stash_metrics(out)
    trainer, checkpoint = build_trainer(cfg, out, validate, interactive, run)
    trainer.fit(module, _train_loader(train_set, train_rows, cfg),
                make_loader(val_set, cfg) if validate else None,
                ckpt_path=resume_from, weights_only=True)
    restore_metrics(out)
    best = Path(checkpoint.best_model_path or checkpoint.last_model_path)
    probs = (predict_probs(cfg, load_net(cfg, best, attribute), val_set, attribute)
             if validate else None)
    save_fold_result(out, [best], probs)
    return FoldResult(fold, [best], val_rows, probs)


def _train_folds(cfg: RunConfig, root: Path, records: pd.DataFrame, folds: list[int],
                 out_dir: Path, interactive: bool | None) -> list[FoldResult]:
    """Every fold of one model, or of three attribute models combined per fold."""
    if cfg.model.head != "per_attribute":
        return [fit_fold(cfg, root, records, k, out_dir, None, interactive, out_dir)
                for k in folds]
    per_attribute = {
        attribute: [fit_fold(cfg.for_attribute(attribute), root, records, k, out_dir / attribute,
                             attribute, interactive, out_dir) for k in folds]
        for attribute in labels.ATTRIBUTES
    }
    combined = []
    for i, k in enumerate(folds):
        parts = {a: results[i].probs for a, results in per_attribute.items()}
        probs = None if parts["mask"] is None else combine_attribute_probs(parts)
        checkpoints = [c for results in per_attribute.values() for c in results[i].checkpoints]
        combined.append(FoldResult(k, checkpoints, per_attribute["mask"][i].val_rows, probs))
    return combined


def _summarise(run: Path, records: pd.DataFrame, results: list[FoldResult], started: float
               ) -> dict:
    folds, tables = [], []
    for result in results:
        entry = {"fold": result.fold, "checkpoints": [str(c) for c in result.checkpoints]}
        if result.probs is not None:
            truth, predicted = result.val_rows["class"], result.probs.argmax(axis=1)
            scores = score(truth, predicted)
            entry.update({k: scores[k] for k in ("n", "accuracy", "macro_f1", "attribute_f1")})
            write_confusions(truth, predicted, fold_dir(run, result.fold))
            tables.append(prediction_table(result.val_rows["path"], result.probs).assign(
                fold=result.fold, **{"class": result.val_rows["class"].to_numpy()}))
        folds.append(entry)
    summary: dict = {"run": str(run), "n_images": int((records["fold"] != PSEUDO).sum()),
                     "folds": folds,
                     "validation": None, "cv": None}
    if tables:
        oof = pd.concat(tables, ignore_index=True)
        write_csv(oof, run / "oof.csv")
        predicted = oof[CLASS_COLUMNS].to_numpy().argmax(axis=1)
        summary["validation"] = score(oof["class"], predicted)
        write_confusions(oof["class"], predicted, run)
        f1s = np.array([f["macro_f1"] for f in folds if "macro_f1" in f])
        summary["cv"] = {"macro_f1_mean": float(f1s.mean()), "macro_f1_std": float(f1s.std()),
                         "oof_macro_f1": summary["validation"]["macro_f1"]}
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _warm_cache(cfg: RunConfig, root: Path, rel_paths: list[str]) -> None:
    """Decode every image once before the first epoch, so all epochs and folds share it."""
    configs = ([cfg.for_attribute(a).data for a in labels.ATTRIBUTES]
               if cfg.model.head == "per_attribute" else [cfg.data])
    for data_cfg in configs:
        if open_cache(root, data_cfg, len(rel_paths)) is None:
            continue
        started = time.monotonic()
        report = build_cache(root, data_cfg, rel_paths)
        print(f"decode-once cache: {report['images']} images, {report['bytes'] / 1e6:.1f} MB "
              f"in {report['dir']} ({time.monotonic() - started:.1f}s)", flush=True)


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
    for attribute in labels.ATTRIBUTES if cfg.model.head == "per_attribute" else [None]:
        # fail on a bad model name or weights file before the run directory exists
        build_net(cfg if attribute is None else cfg.for_attribute(attribute), attribute)
    folds = make_folds(records, cfg.data.folds, cfg.data.val_ratio, cfg.seed)
    fold_ids = sorted(int(f) for f in folds["fold"].unique() if f >= 0) or [0]
    if fold is not None and fold not in fold_ids:
        raise ValueError(f"--fold {fold} does not exist; this split has folds {fold_ids}")
    run = create_run_dir(runs_dir, name)
    atomic_write_text(run / "config.yaml", dump_config(cfg))
    record = {**environment(), "data": str(root.resolve()),
              "folds": fold_ids if fold is None else [fold], "resumed": []}
    write_record(run, record)
    write_csv(folds, run / "folds.csv")
    if report is not None:
        write_csv(report.changes, run / "corrections.csv")
        print(report.summary(), flush=True)
    return _run_folds(cfg, root, attach_folds(records, folds), record["folds"], run,
                      interactive, started, report)


def resume_run(run: Path | str, data_root: Path | str | None = None,
               interactive: bool | None = None) -> RunResult:
    """Finish an interrupted run with its own config, folds and data (or ``data_root``)."""
    started = time.monotonic()
    run = Path(run)
    if (run / "summary.json").is_file():
        raise FileExistsError(f"{run} already finished (summary.json exists); nothing to resume")
    record = read_record(run)
    if not record:
        raise FileNotFoundError(f"{run / RUN_RECORD} not found: not a maskclf run directory")
    cfg = load_config(run / "config.yaml")
    root = Path(data_root or record["data"])
    records, _ = prepare_records(cfg, root)
    folds = pd.read_csv(run / "folds.csv", dtype={"person": str, "fold": int})
    record["resumed"].append(environment())
    write_record(run, record)
    print(f"resuming {run}: folds {record['folds']}", flush=True)
    return _run_folds(cfg, root, attach_folds(records, folds), record["folds"], run,
                      interactive, started, None)


def _add_seconds(run: Path, seconds: float) -> None:
    """Keep the time an interrupted session spent, for the finished run's total."""
    record = read_record(run)
    record["interrupted_seconds"] = round(record.get("interrupted_seconds", 0.0) + seconds, 1)
    write_record(run, record)


def _run_folds(cfg: RunConfig, root: Path, records: pd.DataFrame, folds: list[int], run: Path,
               interactive: bool | None, started: float,
               report: CorrectionReport | None) -> RunResult:
    _warm_cache(cfg, root, records["path"].tolist())
    extra = read_extra(cfg.data.extra)
    if extra is not None:
        print(f"data.extra: {len(extra)} pseudo-labelled image(s) join every fold's training",
              flush=True)
        records = pd.concat([records, extra.assign(fold=PSEUDO)], ignore_index=True)
    try:
        results = _train_folds(cfg, root, records, folds, run, interactive)
    except BaseException:  # interrupted or failed: keep the time spent for the run's total
        _add_seconds(run, time.monotonic() - started)
        raise
    summary = _summarise(run, records, results, started)
    summary["seconds"] = round(summary["seconds"]
                               + read_record(run).get("interrupted_seconds", 0.0), 1)
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2) + "\n")
    if cfg.train.report:
        print(f"report: {write_report(run, root)['report']}", flush=True)
    return RunResult(run, summary, report)
