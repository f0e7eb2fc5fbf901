"""A training run end to end: check data and config, split by person, train every network
of every fold, score the out-of-fold predictions, write the run directory."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback

from maskclf import labels
from maskclf.config import RunConfig, absolute_paths, build_config, config_to_dict
from maskclf.data.cache import build_cache, open_cache
from maskclf.data.corrections import CorrectionReport, apply_corrections, load_corrections
from maskclf.data.layout import read_tables
from maskclf.data.loaders import make_dataset, make_loader, train_loader
from maskclf.data.sampling import oversample
from maskclf.data.splits import PSEUDO, attach_folds, make_folds
from maskclf.distributed import handed_down, is_rank_zero, shared_run_dir
from maskclf.errors import MissingFileError, RankLost, RunInterrupted, UsageError
from maskclf.inference import predict_probs
from maskclf.metrics import score, write_confusions
from maskclf.models.factory import build_net, load_net
from maskclf.models.heads import combine_attribute_probs
from maskclf.models.spec import ModelSpec, resolve_specs
from maskclf.models.weights import safe_torch_load
from maskclf.preflight import preflight
from maskclf.progress import RunClock, quiet_lightning
from maskclf.pseudo import read_extra
from maskclf.report import write_report
from maskclf.reproducibility import environment
from maskclf.resume import (
    carry_fold,
    last_checkpoint,
    restore_metrics,
    resume_command,
    stash_metrics,
)
from maskclf.rundir import RunDir
from maskclf.submission import CLASS_COLUMNS, prediction_table
from maskclf.training import FitOptions, build_module, build_trainer

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """One trained fold: its checkpoints and its validation rows with their probabilities."""

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


def fit_fold(spec: ModelSpec, root: Path, records: pd.DataFrame, fold: int, run: RunDir,
             options: FitOptions) -> FoldResult:
    """Train one network on one fold from fresh, seeded weights: persons of ``fold``
    validate, the rest train.

    A fold that already finished (resumed run) is read back; one that stopped part-way
    continues from its last finished epoch. Probabilities are over the spec's task (18
    classes, or one attribute).
    """
    cfg, out = spec.cfg, run.fold(spec, fold)
    val_rows = records[records["fold"] == fold]
    finished = out.load_result()
    if finished is not None:
        options.clock.skip(cfg.train.epochs)
        return FoldResult(fold, finished[0], val_rows, finished[1])
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    records = records.assign(target=training_classes(records, cfg.data.age_old_threshold))
    train_rows = training_rows(records, fold, cfg)
    counts = np.bincount(train_rows["target"], minlength=labels.NUM_CLASSES)
    module = build_module(spec, build_net(spec), counts)
    regress = spec.regresses_age  # the datasets then carry the ages in years
    train_set = make_dataset(cfg, root, train_rows["path"], train_rows["target"], True,
                             train_rows["age"] if regress else None)
    val_set = make_dataset(cfg, root, val_rows["path"], val_rows["class"], False,
                           val_rows["age"] if regress else None)
    validate = len(val_rows) > 0
    resume_from = last_checkpoint(out)
    writer = is_rank_zero()
    if resume_from is not None and writer:
        stash_metrics(out)
    with quiet_lightning():
        trainer, checkpoint = build_trainer(spec, out, validate, options)
        try:
            trainer.fit(module, train_loader(train_set, train_rows, cfg),
                        make_loader(val_set, cfg) if validate else None,
                        ckpt_path=resume_from, weights_only=True)
        except SystemExit as exc:  # Lightning's stop after SIGTERM, or Ctrl+C (its exit(1))
            signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
            raise RunInterrupted(f"stopped by {signal.Signals(signum).name}; resume from the "
                                 f"last finished epoch with: {resume_command(run.path)}",
                                 signum) from exc
        except Exception as exc:  # under DDP a SIGTERM breaks the ranks' next exchange
            if trainer.received_sigterm:
                raise RunInterrupted(f"stopped by SIGTERM ({type(exc).__name__} as the ranks "
                                     "stopped); resume from the last finished epoch with: "
                                     f"{resume_command(run.path)}", signal.SIGTERM) from exc
            if trainer.world_size > 1 and _lost_peer(exc):
                if trainer.strategy.launcher is not None:  # ranks Lightning started: stop them
                    trainer.strategy.launcher.kill(signal.SIGKILL)
                raise RankLost(f"rank {trainer.global_rank}: another rank stopped answering "
                               f"(waited up to train.ddp_timeout_s={cfg.train.ddp_timeout_s} "
                               f"s: {str(exc).splitlines()[0][:200]}); resume from the last "
                               f"finished epoch with: {resume_command(run.path)}") from exc
            raise
    best = Path(checkpoint.best_model_path or checkpoint.last_model_path)
    if not writer:  # rank 0 scores the fold once, on every validation image
        return FoldResult(fold, [best], val_rows, None)
    restore_metrics(out)
    probs = predict_probs(load_net(best), val_set, cfg.predict.tta) if validate else None
    out.save_result([best], probs)
    return FoldResult(fold, [best], val_rows, probs)


def _lost_peer(exc: Exception) -> bool:
    """Whether a DDP failure is another rank gone silent: torch types some of these errors;
    gloo's timeouts and closed connections arrive as RuntimeErrors that say so."""
    text = str(exc).lower()
    return isinstance(exc, torch.distributed.DistError) or any(
        sign in text for sign in ("timeout", "timed out", "connection reset", "pair closure"))


def _train_folds(specs: list[ModelSpec], root: Path, records: pd.DataFrame, folds: list[int],
                 run: RunDir, options: FitOptions) -> list[FoldResult]:
    """Every fold of one network, or of three attribute networks combined per fold."""
    per_spec = [[_fit_labelled(spec, root, records, k, run, options) for k in folds]
                for spec in specs]
    if len(specs) == 1:
        return per_spec[0]
    combined = []
    for i, k in enumerate(folds):
        parts = {spec.attribute: results[i].probs for spec, results in zip(specs, per_spec,
                                                                            strict=True)}
        probs = None if any(p is None for p in parts.values()) else combine_attribute_probs(parts)
        checkpoints = [c for results in per_spec for c in results[i].checkpoints]
        combined.append(FoldResult(k, checkpoints, per_spec[0][i].val_rows, probs))
    return combined


def _fit_labelled(spec: ModelSpec, root: Path, records: pd.DataFrame, fold: int, run: RunDir,
                  options: FitOptions) -> FoldResult:
    """``fit_fold`` with the progress naming the network and fold ("age fold 2/5")."""
    network = f"{spec.attribute} " if spec.attribute else ""
    options.clock.label = f"{network}fold {fold + 1}/{max(spec.cfg.data.folds, 1)}"
    return fit_fold(spec, root, records, fold, run, options)


def training_rows(records: pd.DataFrame, fold: int, cfg: RunConfig) -> pd.DataFrame:
    """The rows a fold trains on: every other fold's, less the persons whose age is in
    ``data.exclude_ages``, with minority classes repeated by ``data.oversample``."""
    rows = records[(records["fold"] != fold)
                   & ~labels.in_age_ranges(records["age"], cfg.data.exclude_ages)]
    return oversample(rows, cfg.data.oversample, cfg.seed)


def excluded_from_training(records: pd.DataFrame, ranges: list) -> dict | None:
    """What ``data.exclude_ages`` left out of training (persons and images), for the summary."""
    if not ranges:
        return None
    hit = records[labels.in_age_ranges(records["age"], ranges)]
    return {"ranges": [list(r) for r in ranges], "persons": int(hit["person"].nunique()),
            "images": len(hit)}


def _summarise(run: RunDir, records: pd.DataFrame, results: list[FoldResult], started: float
               ) -> dict:
    folds, tables = [], []
    for result in results:
        entry = {"fold": result.fold, "checkpoints": [str(c) for c in result.checkpoints]}
        if result.probs is not None:
            truth, predicted = result.val_rows["class"], result.probs.argmax(axis=1)
            scores = score(truth, predicted)
            entry.update({k: scores[k] for k in ("n", "accuracy", "macro_f1", "attribute_f1")})
            write_confusions(truth, predicted, run.fold_root(result.fold))
            tables.append(prediction_table(result.val_rows["path"], result.probs).assign(
                fold=result.fold, **{"class": result.val_rows["class"].to_numpy()}))
        folds.append(entry)
    summary: dict = {"run": str(run.path), "n_images": int((records["fold"] != PSEUDO).sum()),
                     "folds": folds, "validation": None, "cv": None}
    if tables:
        oof = pd.concat(tables, ignore_index=True)
        run.write_table(RunDir.OOF, oof)
        predicted = oof[CLASS_COLUMNS].to_numpy().argmax(axis=1)
        summary["validation"] = score(oof["class"], predicted)
        write_confusions(oof["class"], predicted, run.path)
        f1s = np.array([f["macro_f1"] for f in folds if "macro_f1" in f])
        summary["cv"] = {"macro_f1_mean": float(f1s.mean()), "macro_f1_std": float(f1s.std()),
                         "oof_macro_f1": summary["validation"]["macro_f1"]}
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _warm_cache(specs: list[ModelSpec], root: Path, rel_paths: list[str]) -> None:
    """Decode every image once before the first epoch, so all epochs and folds share it."""
    for spec in specs:
        if open_cache(root, spec.cfg.data, len(rel_paths)) is None:
            continue
        started = time.monotonic()
        report = build_cache(root, spec.cfg.data, rel_paths)
        log.info("decode-once cache: %d images, %.1f MB in %s (%.1fs)", report["images"],
                 report["bytes"] / 1e6, report["dir"], time.monotonic() - started)


def train_run(cfg: RunConfig, data_root: Path | str, runs_dir: Path | str = "runs",
              name: str | None = None, fold: int | None = None,
              interactive: bool | None = None, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Check the dataset and that the config can run here, then train every fold (or only
    ``fold``) into a new run directory. Nothing is written before the checks pass.

    ``summary["validation"]`` scores the pooled out-of-fold predictions; ``summary["cv"]``
    gives the mean and spread of the per-fold macro F1. ``callbacks`` join every fold's
    Trainer (a tuning study's pruner).
    """
    started = time.monotonic()
    root = Path(data_root)
    cfg = absolute_paths(cfg)  # the saved config works from any folder
    records, report = prepare_records(cfg, root)
    specs = preflight(cfg)
    folds = make_folds(records, cfg.data.folds, cfg.data.val_ratio, cfg.seed)
    fold_ids = sorted(int(f) for f in folds["fold"].unique() if f >= 0) or [0]
    if fold is not None and fold not in fold_ids:
        raise UsageError(f"--fold {fold} does not exist; this split has folds {fold_ids}")
    run = shared_run_dir(runs_dir, name)
    record = {**environment(), "data": str(root.resolve()),
              "folds": fold_ids if fold is None else [fold], "resumed": []}
    if is_rank_zero():
        run.write_config(cfg)
        run.write_record(record)
        run.write_folds(folds)
        if report is not None:
            run.write_table(RunDir.CORRECTIONS, report.changes)
            log.info("%s", report.summary())
    return _run_folds(cfg, specs, root, attach_folds(records, folds), record["folds"], run,
                      FitOptions(interactive, tuple(callbacks)), started, report)


def resume_run(run_path: Path | str, data_root: Path | str | None = None,
               interactive: bool | None = None) -> RunResult:
    """Finish an interrupted run with its own config, folds and data (or ``data_root``)."""
    started = time.monotonic()
    run = RunDir(run_path)
    record = run.read_record()
    if not record:
        raise MissingFileError(f"{run.file(RunDir.RECORD)} not found: not a maskclf run "
                               "directory")
    if run.finished:
        raise UsageError(f"{run.path} already finished ({RunDir.SUMMARY} exists); to train "
                         f"it longer: maskclf train --resume {run.path} -o train.epochs=N")
    cfg = run.read_config()
    root = run.data_root(data_root)
    records, _ = prepare_records(cfg, root)
    specs = preflight(cfg)
    folds = attach_folds(records, run.read_folds(), str(run.file(RunDir.FOLDS)))
    if is_rank_zero():
        record["resumed"].append(environment())
        run.write_record(record)
        log.info("resuming %s: folds %s", run.path, record["folds"])
    return _run_folds(cfg, specs, root, folds, record["folds"], run, FitOptions(interactive),
                      started, None)


def continue_run(run_path: Path | str, epochs: int, data_root: Path | str | None = None,
                 name: str | None = None, interactive: bool | None = None) -> RunResult:
    """Train a finished run longer: a new run directory beside it (``<name>-more``) whose
    folds start from the parent's last checkpoints and run to ``epochs`` epochs, with the
    parent's config, folds and data. The parent is left as it is; ``run.json`` records it.

    The learning-rate schedule is the one a run of ``epochs`` epochs has: the optimizer and
    scheduler state (step count) carry over and the schedule is recomputed for the longer
    run, so a cosine resumes at the rate the longer cosine has at that step (higher than
    the parent's last rate) and decays to its end; step and plateau schedules continue.
    """
    started = time.monotonic()
    parent = RunDir.open(run_path)
    if not parent.finished:
        raise UsageError(f"{parent.path} has not finished; finish it first with "
                         f"{resume_command(parent.path)}")
    raw = config_to_dict(parent.read_config())
    if epochs <= raw["train"]["epochs"]:
        raise UsageError(f"train.epochs={epochs} does not continue {parent.path}: it already "
                         f"trained {raw['train']['epochs']} epochs")
    parent_epochs, raw["train"]["epochs"] = raw["train"]["epochs"], epochs
    cfg = build_config(raw, f"continuation of {parent.path}")
    root = parent.data_root(data_root)
    records, _ = prepare_records(cfg, root)
    specs = preflight(cfg)
    folds = parent.read_record().get("folds") or parent.trained_folds(specs[0])
    run = shared_run_dir(parent.path.parent, name or f"{parent.name}-more")
    record = {**environment(), "data": str(root.resolve()), "folds": folds, "resumed": [],
              "continued_from": {"run": str(parent.path.resolve()), "epochs": parent_epochs}}
    if is_rank_zero():
        run.write_config(cfg)
        run.write_record(record)
        run.write_folds(parent.read_folds())
        for spec in specs:
            for fold in folds:
                carry_fold(parent.fold(spec, fold), run.fold(spec, fold))
        log.info("continuing %s (%d epochs) to %d epochs in %s", parent.path, parent_epochs,
                 epochs, run.path)
    split = attach_folds(records, parent.read_folds(), str(parent.file(RunDir.FOLDS)))
    return _run_folds(cfg, specs, root, split, folds, run, FitOptions(interactive), started,
                      None)


def refit_config(run_path: Path | str) -> tuple[RunConfig, list[int], Path]:
    """RUN's config for a final model on every person: no validation, for the median of the
    epochs its folds' best checkpoints came from. Returns the config, those epochs and the
    run's data folder."""
    run = RunDir.open(run_path)
    if not run.finished:
        raise UsageError(f"{run.path} has not finished; refit a finished run")
    cfg = run.read_config()
    best_epochs = [int(safe_torch_load(run.fold(spec, fold).best)["epoch"]) + 1
                   for spec in resolve_specs(cfg) for fold in run.trained_folds(spec)
                   if run.fold(spec, fold).best.is_file()]
    if not best_epochs:
        raise UsageError(f"{run.path} was trained without validation: no best epoch to refit "
                         "for; refit a run with data.folds or data.val_ratio")
    raw = config_to_dict(cfg)
    raw["data"].update(folds=0, val_ratio=0.0)
    raw["train"].update(epochs=max(1, int(round(float(np.median(best_epochs))))),
                        early_stopping_patience=None)  # nothing to stop on without validation
    return build_config(raw, f"refit of {run.path}"), best_epochs, run.data_root()


def _add_seconds(run: RunDir, seconds: float) -> None:
    """Keep the time an interrupted session spent, for the finished run's total."""
    record = run.read_record()
    record["interrupted_seconds"] = round(record.get("interrupted_seconds", 0.0) + seconds, 1)
    run.write_record(record)


def _run_folds(cfg: RunConfig, specs: list[ModelSpec], root: Path, records: pd.DataFrame,
               folds: list[int], run: RunDir, options: FitOptions, started: float,
               report: CorrectionReport | None) -> RunResult:
    _warm_cache(specs, root, records["path"].tolist())
    excluded = excluded_from_training(records, cfg.data.exclude_ages)
    if excluded is not None:
        log.info("data.exclude_ages %s: %d person(s), %d image(s) left out of training "
                 "(still validated)", excluded["ranges"], excluded["persons"],
                 excluded["images"])
    extra = read_extra(cfg.data.extra)
    if extra is not None:
        log.info("data.extra: %d pseudo-labelled image(s) join every fold's training",
                 len(extra))
        records = pd.concat([records, extra.assign(fold=PSEUDO)], ignore_index=True)
    options = replace(options, clock=RunClock(sum(spec.cfg.train.epochs for spec in specs)
                                              * len(folds)))
    try:
        with handed_down(run):
            results = _train_folds(specs, root, records, folds, run, options)
    except BaseException:  # interrupted or failed: keep the time spent for the run's total
        if is_rank_zero():
            _add_seconds(run, time.monotonic() - started)
        raise
    if not is_rank_zero():  # the other ranks only trained; rank 0 writes the results
        return RunResult(run.path, {}, report)
    summary = _summarise(run, records, results, started)
    if excluded is not None:
        summary["excluded_from_training"] = excluded
    summary["seconds"] = round(summary["seconds"]
                               + run.read_record().get("interrupted_seconds", 0.0), 1)
    run.write_summary(summary)
    if cfg.train.report:
        written = write_report(run.path, root)
        log.info("report: %s", written["report"])
        for finding in written["findings"]:
            log.info("finding: %s -> %s", finding["what"], finding["remedy"])
    return RunResult(run.path, summary, report)
