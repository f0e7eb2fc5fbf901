"""A run plan executed: every network of every planned fold, then the out-of-fold table,
summary and report in the run directory."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback

from maskclf import labels
from maskclf.atomic import atomic_write_text
from maskclf.config import RunConfig
from maskclf.data.corrections import CorrectionReport
from maskclf.data.datamodule import excluded_from_training
from maskclf.data.external import describe
from maskclf.explain.workflow import write_report_maps
from maskclf.labels import CLASS_COLUMNS
from maskclf.metrics import confusion_tables, score, score_with_interval
from maskclf.models.spec import ModelSpec
from maskclf.reports.run_report import write_report
from maskclf.results.submission import oof_table
from maskclf.results.teacher import compare, teacher_of
from maskclf.runs.directory import RunDir
from maskclf.runs.lock import training_lock
from maskclf.train.distributed import handed_down, is_rank_zero, shared_run_dir
from maskclf.train.fold import FoldResult, fit_fold
from maskclf.train.lr_find import with_found_rates
from maskclf.train.plan import (
    RunPlan,
    outside_rows,
    plan,
    plan_continue,
    plan_new,
    plan_resume,
)
from maskclf.train.progress import RunClock
from maskclf.train.request import TrainRequest
from maskclf.train.resume import carry_fold
from maskclf.train.trainer import FitOptions, TimeBudget

log = logging.getLogger(__name__)
APPLIED_HEADER = ("# data.corrections as this run read it when it started: resuming, continuing "
                  "or refitting the run reads this copy\n")


@dataclass
class RunResult:
    run: Path
    summary: dict
    corrections: CorrectionReport | None = None


def _train_folds(specs: list[ModelSpec], root: Path, records: pd.DataFrame, folds: list[int],
                 run: RunDir, options: FitOptions, extra: pd.DataFrame | None
                 ) -> list[FoldResult]:
    """Every fold of one network, or of three attribute networks combined per fold."""
    per_spec = [[_fit_labelled(spec, root, records, k, run, options, extra) for k in folds]
                for spec in specs]
    if len(specs) == 1:
        return per_spec[0]
    combined = []
    for i, k in enumerate(folds):
        parts = {spec.task: [results[i].probs] for spec, results in zip(specs, per_spec,
                                                                         strict=True)}
        probs = (None if any(p[0] is None for p in parts.values())
                 else labels.combine_networks(parts))
        checkpoints = [c for results in per_spec for c in results[i].checkpoints]
        soups = {spec.task: results[i].soup for spec, results in zip(specs, per_spec,
                                                                     strict=True)
                 if results[i].soup is not None}
        combined.append(FoldResult(k, checkpoints, per_spec[0][i].val_rows, probs,
                                   soups or None))
    return combined


def _fit_labelled(spec: ModelSpec, root: Path, records: pd.DataFrame, fold: int, run: RunDir,
                  options: FitOptions, extra: pd.DataFrame | None) -> FoldResult:
    """``fit_fold`` with the progress naming the network and fold ("age fold 2/5")."""
    network = f"{spec.attribute} " if spec.attribute else ""
    options.clock.label = f"{network}fold {fold + 1}/{max(spec.cfg.data.folds, 1)}"
    return fit_fold(spec, root, records, fold, run, options, extra)


def _summarise(run: RunDir, records: pd.DataFrame, results: list[FoldResult], started: float
               ) -> dict:
    folds, tables = [], []
    for result in results:
        entry = {"fold": result.fold, "checkpoints": [str(c) for c in result.checkpoints]}
        if result.soup is not None:
            entry["checkpoint_average"] = result.soup
        if result.probs is not None:
            rows = result.val_rows
            truth, predicted = labels.truth_codes(rows), result.probs.argmax(axis=1)
            scores = score(truth, predicted)
            entry.update({k: scores[k] for k in ("n", "accuracy", "macro_f1", "attribute_f1")})
            run.write_confusions(confusion_tables(truth, predicted), result.fold)
            tables.append(oof_table(rows["path"], result.probs, result.fold, rows["class"],
                                    rows["person"], rows.get(labels.UNKNOWN_COLUMN)))
        folds.append(entry)
    summary: dict = {"run": str(run.path), "n_images": len(records),
                     "folds": folds, "validation": None, "cv": None}
    if tables:
        oof = pd.concat(tables, ignore_index=True)
        run.write_table(RunDir.OOF, oof)
        predicted, truth = oof[CLASS_COLUMNS].to_numpy().argmax(axis=1), labels.truth_codes(oof)
        summary["validation"] = score_with_interval(truth, predicted, oof["person"])
        run.write_confusions(confusion_tables(truth, predicted))
        f1s = np.array([f["macro_f1"] for f in folds if "macro_f1" in f])
        summary["cv"] = {"macro_f1_mean": float(f1s.mean()), "macro_f1_std": float(f1s.std()),
                         "oof_macro_f1": summary["validation"]["macro_f1"]}
        teacher = teacher_of(run.read_config())
        if teacher is not None:
            summary["distillation"] = compare(teacher, oof)
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def train(request: TrainRequest, interactive: bool | None = None) -> RunResult:
    """``maskclf train``: plan the request, then execute the plan."""
    return execute(plan(request), interactive)


def train_run(cfg: RunConfig, data_root: Path | str, runs_dir: Path | str = "runs",
              name: str | None = None, fold: int | None = None,
              interactive: bool | None = None, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Check the dataset and that the config can run here, then train every fold (or only
    ``fold``) into a new run directory. Nothing is written before the checks pass.

    ``summary["validation"]`` scores the pooled out-of-fold predictions; ``summary["cv"]``
    gives the mean and spread of the per-fold macro F1. ``callbacks`` join every fold's
    Trainer (a tuning study's pruner).
    """
    return execute(plan_new(cfg, data_root, runs_dir, name, fold), interactive, callbacks)


def resume_run(run_path: Path | str, data_root: Path | str | None = None,
               interactive: bool | None = None) -> RunResult:
    """Finish an interrupted run (see :func:`plan_resume`)."""
    return execute(plan_resume(run_path, data_root), interactive)


def finish_existing(path: Path | str, data_root: Path | str, interactive: bool | None = False
                    ) -> dict | None:
    """The summary of the run at ``path`` when a study's unit already has one: read when
    finished, resumed when interrupted; None when there is none yet (a folder stopped before
    its plan was written is removed: it holds nothing to keep)."""
    run = RunDir(path)
    if run.path.exists() and not run.read_record():
        shutil.rmtree(run.path)
    if run.finished:
        return run.read_summary()
    if run.path.exists():
        log.info("resuming %s", run.path)
        return resume_run(run.path, data_root, interactive).summary
    return None


def continue_run(run_path: Path | str, epochs: int, data_root: Path | str | None = None,
                 name: str | None = None, interactive: bool | None = None,
                 train: dict | None = None) -> RunResult:
    """Train a finished run longer as a new run (see :func:`plan_continue`)."""
    return execute(plan_continue(run_path, epochs, data_root, name, train), interactive)


def _add_seconds(run: RunDir, seconds: float) -> None:
    """Keep the time an interrupted session spent, for the finished run's total."""
    record = run.read_record()
    record["interrupted_seconds"] = round(record.get("interrupted_seconds", 0.0) + seconds, 1)
    run.write_record(record)


def _write_plan(plan: RunPlan, run: RunDir) -> None:
    """The plan's config, folds and record in its run directory (rank 0). The record
    (``run.json``) goes last: a folder with one holds a whole plan to resume, and a folder
    stopped before it (Ctrl+C, SIGTERM) is one that :func:`finish_existing` starts anew."""
    if not is_rank_zero():
        return
    if plan.run is not None:
        run.write_record(plan.record)
        log.info("resuming %s: folds %s", run.path, plan.folds)
        return
    run.write_config(plan.cfg)
    run.write_folds(plan.split)
    if plan.corrections is not None:
        run.write_table(RunDir.CORRECTIONS, plan.corrections.changes)
        if plan.cfg.data.corrections is not True:  # a file of the user's: it may change
            atomic_write_text(run.file(RunDir.APPLIED_CORRECTIONS),
                              plan.corrections.applied.text(APPLIED_HEADER))
        log.info("%s", plan.corrections.summary())
    if plan.carry_from is not None:
        for spec in plan.specs:
            for fold in plan.folds:
                carry_fold(plan.carry_from.fold(spec, fold), run.fold(spec, fold))
        log.info("continuing %s to %d epochs in %s", plan.carry_from.path,
                 plan.cfg.train.epochs, run.path)
    run.write_record(plan.record)


def execute(plan: RunPlan, interactive: bool | None = None,
            callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train a plan: every network of every planned fold, then (rank 0) the out-of-fold
    table, summary and report. ``callbacks`` join every fold's Trainer."""
    started = time.monotonic()
    run = plan.run or shared_run_dir(plan.runs_dir, plan.name)
    # one process trains a run: the lock is taken before anything is written into it
    with training_lock(run.path, " ".join(sys.argv)) if is_rank_zero() else nullcontext():
        _write_plan(plan, run)
        return _train_plan(plan, run, interactive, callbacks, started)


def _train_plan(plan: RunPlan, run: RunDir, interactive: bool | None,
                callbacks: Sequence[Callback], started: float) -> RunResult:
    plan = with_found_rates(plan, run)
    cfg, records = plan.cfg, plan.records
    excluded = excluded_from_training(records, cfg.data.exclude_ages)
    if excluded is not None:
        log.info("data.exclude_ages %s: %d person(s), %d image(s) left out of training "
                 "(still validated)", excluded["ranges"], excluded["persons"],
                 excluded["images"])
    extra = outside_rows(cfg, plan.root)
    external = (describe(extra, cfg.data.external) if cfg.data.external else None)
    if extra is not None:
        log.info("%d outside image(s) join every fold's training: %d pseudo-labelled "
                 "(data.extra), %d from data.external", len(extra),
                 len(extra) - sum(s["rows"] for s in external or []),
                 sum(s["rows"] for s in external or []))
    clock = RunClock(sum(spec.cfg.train.epochs for spec in plan.specs) * len(plan.folds))
    limit = cfg.train.time_limit_s
    budget = (None if limit is None
              else TimeBudget(limit, len(plan.specs) * len(plan.folds), clock))
    options = FitOptions(interactive, tuple(callbacks), clock, budget)
    try:
        with handed_down(run):
            results = _train_folds(plan.specs, plan.root, records, plan.folds, run, options,
                                   extra)
    except BaseException:  # interrupted or failed: keep the time spent for the run's total
        if is_rank_zero():
            _add_seconds(run, time.monotonic() - started)
        raise
    if not is_rank_zero():  # the other ranks only trained; rank 0 writes the results
        return RunResult(run.path, {}, plan.corrections)
    summary = _summarise(run, records, results, started)
    if excluded is not None:
        summary["excluded_from_training"] = excluded
    if external is not None:
        summary["external"] = external
    if plan.corrections is not None:
        summary["corrections"] = {"file": ("packaged list" if cfg.data.corrections is True
                                           else str(cfg.data.corrections)),
                                  **plan.corrections.counts()}
    if budget is not None:
        summary["time_limit"] = budget.record()
    summary["seconds"] = round(summary["seconds"]
                               + run.read_record().get("interrupted_seconds", 0.0), 1)
    run.write_summary(summary)
    if cfg.train.report:
        write_report_maps(run.path, plan.root)
        written = write_report(run.path, plan.root)
        log.info("report: %s", written["report"])
        for finding in written["findings"]:
            log.info("finding: %s -> %s", finding["what"], finding["remedy"])
    return RunResult(run.path, summary, plan.corrections)

