"""A training run end to end: check data and config, split by person, train every network
of every fold, score the out-of-fold predictions, write the run directory.

Every way to train — a new run, finishing an interrupted one, continuing a finished one
for more epochs, refitting one on every person — is a planner that returns a
:class:`RunPlan` (what to train, where, from which checkpoints, with which parent), and
:func:`execute` trains any plan. Nothing is written before a plan is complete.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback

from maskclf import labels
from maskclf.config import RunConfig, absolute_paths, build_config, config_to_dict
from maskclf.data.corrections import CorrectionReport, apply_corrections, load_corrections
from maskclf.data.datamodule import FoldDataModule, excluded_from_training, teacher_probs
from maskclf.data.layout import read_tables
from maskclf.data.splits import attach_folds, make_folds
from maskclf.distributed import handed_down, is_rank_zero, shared_run_dir
from maskclf.engine import Network
from maskclf.errors import MissingFileError, RankLost, RunInterrupted, UsageError
from maskclf.explain import write_report_maps
from maskclf.lrfind import MAX_LR, MIN_LR, STEPS, check_range, find_lr, lr_figure
from maskclf.metrics import score, write_confusions
from maskclf.models.factory import build_net
from maskclf.models.spec import ModelSpec, resolve_specs
from maskclf.models.weights import safe_torch_load
from maskclf.plans import TrainRequest
from maskclf.predictor import RunPredictor
from maskclf.preflight import preflight
from maskclf.progress import RunClock, quiet_lightning
from maskclf.pseudo import read_extra
from maskclf.report import write_report
from maskclf.reproducibility import environment
from maskclf.resume import carry_fold, last_checkpoint, restore_metrics, stash_metrics
from maskclf.rundir import RunDir
from maskclf.runlock import require_idle, training_lock
from maskclf.soup import average_fold
from maskclf.submission import CLASS_COLUMNS, oof_table
from maskclf.teacher import compare, teacher_of
from maskclf.training import FitOptions, TimeBudget, TopEpochs, build_module, build_trainer

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


@dataclass
class RunResult:
    run: Path
    summary: dict
    corrections: CorrectionReport | None = None



def prepare_records(cfg: RunConfig, root: Path) -> tuple[pd.DataFrame, CorrectionReport | None]:
    """Read and check the data and apply opt-in corrections (shared by every model of a run)."""
    records, _ = read_tables(root)
    report = None
    if cfg.data.corrections is not False:
        source = None if cfg.data.corrections is True else cfg.data.corrections
        records, report = apply_corrections(records, load_corrections(source))
    return records, report


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
                          teacher=teacher_of(cfg))
    module = build_module(spec, build_net(spec), data.class_counts())
    resume_from = last_checkpoint(out)
    writer = is_rank_zero()
    if resume_from is not None and writer:
        stash_metrics(out)
    with quiet_lightning():
        trainer, checkpoint = build_trainer(spec, out, data.validates, options)
        try:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
        except SystemExit as exc:  # Lightning's stop after SIGTERM, or Ctrl+C (its exit(1))
            signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
            raise RunInterrupted(f"stopped by {signal.Signals(signum).name}; resume from the "
                                 f"last finished epoch with: {run.resume_command()}",
                                 signum) from exc
        except Exception as exc:  # under DDP a SIGTERM breaks the ranks' next exchange
            if trainer.received_sigterm:
                raise RunInterrupted(f"stopped by SIGTERM ({type(exc).__name__} as the ranks "
                                     "stopped); resume from the last finished epoch with: "
                                     f"{run.resume_command()}", signal.SIGTERM) from exc
            if trainer.world_size > 1 and _lost_peer(exc):
                if trainer.strategy.launcher is not None:  # ranks Lightning started: stop them
                    trainer.strategy.launcher.kill(signal.SIGKILL)
                raise RankLost(f"rank {trainer.global_rank}: another rank stopped answering "
                               f"(waited up to train.ddp_timeout_s={cfg.train.ddp_timeout_s} "
                               f"s: {str(exc).splitlines()[0][:200]}); resume from the last "
                               f"finished epoch with: {run.resume_command()}") from exc
            raise
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
            truth, predicted = result.val_rows["class"], result.probs.argmax(axis=1)
            scores = score(truth, predicted)
            entry.update({k: scores[k] for k in ("n", "accuracy", "macro_f1", "attribute_f1")})
            write_confusions(truth, predicted, run.fold_root(result.fold))
            rows = result.val_rows
            tables.append(oof_table(rows["path"], result.probs, result.fold, rows["class"],
                                    rows["person"]))
        folds.append(entry)
    summary: dict = {"run": str(run.path), "n_images": len(records),
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
        teacher = teacher_of(run.read_config())
        if teacher is not None:
            summary["distillation"] = compare(teacher, oof)
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary



@dataclass
class RunPlan:
    """Everything :func:`execute` needs, decided and checked before anything is written.

    ``run`` is an existing run directory (a resume) or None (a new one is made in
    ``runs_dir`` as ``name``); ``carry_from`` is the finished run whose folds' last
    checkpoints the new folds start from (a continuation); ``record`` is the run.json to
    write, its parent (``continued_from`` / ``refit_of``) included.
    """

    cfg: RunConfig
    specs: list[ModelSpec]
    root: Path
    records: pd.DataFrame
    """The training images with their ``fold``."""
    folds: list[int]
    split: pd.DataFrame
    """``folds.csv``: person, fold."""
    record: dict
    run: RunDir | None = None
    runs_dir: Path = Path("runs")
    name: str | None = None
    carry_from: RunDir | None = None
    corrections: CorrectionReport | None = None


def _checked(cfg: RunConfig, root: Path) -> tuple[pd.DataFrame, CorrectionReport | None,
                                                  list[ModelSpec]]:
    """The dataset read and checked (corrections applied) and the config checked on this
    machine: the checks every planner runs before a plan exists."""
    records, report = prepare_records(cfg, root)
    teacher = teacher_of(cfg)
    if teacher is not None:  # every image a fold may train on has its soft targets
        extra = read_extra(cfg.data.extra)
        teacher_probs(teacher, [*records["path"], *([] if extra is None else extra["path"])],
                      cfg.distill.teacher)
    return records, report, preflight(cfg)


def plan_new(cfg: RunConfig, data_root: Path | str, runs_dir: Path | str = "runs",
             name: str | None = None, fold: int | None = None,
             parent: dict | None = None) -> RunPlan:
    """A new run of ``cfg`` on ``data_root``: a person-level split, every fold (or ``fold``).
    ``parent`` joins run.json (a refit records the run it came from)."""
    root = Path(data_root)
    cfg = absolute_paths(cfg)  # the saved config works from any folder
    records, report, specs = _checked(cfg, root)
    split = make_folds(records, cfg.data.folds, cfg.data.val_ratio, cfg.seed)
    fold_ids = _fold_ids(split)
    if fold is not None and fold not in fold_ids:
        raise UsageError(f"--fold {fold} does not exist; this split has folds {fold_ids}")
    folds = fold_ids if fold is None else [fold]
    record = {**environment(), "data": str(root.resolve()), "folds": folds, "resumed": [],
              **(parent or {})}
    return RunPlan(cfg, specs, root, attach_folds(records, split), folds, split, record,
                   runs_dir=Path(runs_dir), name=name, corrections=report)


def _fold_ids(split: pd.DataFrame) -> list[int]:
    """The folds of a person split (``[0]`` when every person trains)."""
    return sorted(int(f) for f in split["fold"].unique() if f >= 0) or [0]


def find_learning_rate(cfg: RunConfig, data_root: Path | str, plot: Path,
                       min_lr: float = MIN_LR, max_lr: float = MAX_LR,
                       steps: int = STEPS) -> dict:
    """``maskclf lr-find``: the range test of each network of ``cfg`` on the first fold's
    training rows of ``data_root`` (the rows a new run's first fold trains on), with a
    plot per network (``plot``, or ``<plot stem>-<attribute>.png``)."""
    check_range(min_lr, max_lr, steps)
    root = Path(data_root)
    records, _, specs = _checked(cfg, root)
    plot.parent.mkdir(parents=True, exist_ok=True)
    split = make_folds(records, cfg.data.folds, cfg.data.val_ratio, cfg.seed)
    fold = _fold_ids(split)[0]
    records = attach_folds(records, split)
    found = {}
    for spec in specs:
        finding = find_lr(spec, root, records, fold, min_lr, max_lr, steps)
        path = plot if not spec.attribute else plot.with_name(
            f"{plot.stem}-{spec.attribute}{plot.suffix}")
        lr_figure(finding, path, f"{cfg.model.name}: {spec.task} network, fold {fold}")
        found[spec.task] = finding.record(str(path))
    return {"fold": fold, "networks": found}


def plan_resume(run_path: Path | str, data_root: Path | str | None = None) -> RunPlan:
    """Finish an interrupted run with its own config, folds and data (or ``data_root``)."""
    run = RunDir(run_path)
    record = run.read_record()
    if not record:
        raise MissingFileError(f"{run.file(RunDir.RECORD)} not found: not a maskclf run "
                               "directory")
    if run.finished:
        raise UsageError(f"{run.path} already finished ({RunDir.SUMMARY} exists); to train "
                         f"it longer: {run.continue_command()}")
    if is_rank_zero():  # the other ranks of a multi-process resume run beside rank 0
        require_idle(run.path)
    cfg = run.read_config()
    root = run.data_root(data_root)
    records, _, specs = _checked(cfg, root)
    split = run.read_folds()
    records = attach_folds(records, split, str(run.file(RunDir.FOLDS)))
    record["resumed"].append(environment())
    return RunPlan(cfg, specs, root, records, record["folds"], split, record, run=run)


def plan_continue(run_path: Path | str, epochs: int, data_root: Path | str | None = None,
                  name: str | None = None, train: dict | None = None) -> RunPlan:
    """Train a finished run longer: a new run directory beside it (``<name>-more``) whose
    folds start from the parent's last checkpoints and run to ``epochs`` epochs, with the
    parent's config, folds and data. The parent is left as it is; ``run.json`` records it.

    The learning-rate schedule is the one a run of ``epochs`` epochs has: the optimizer and
    scheduler state (step count) carry over and the schedule is recomputed for the longer
    run, so a cosine resumes at the rate the longer cosine has at that step (higher than
    the parent's last rate) and decays to its end; step and plateau schedules continue.
    ``train`` replaces settings of the parent's train section that do not change what was
    learnt (``maskclf auto`` gives each stage its time limit and checkpoint averaging).
    """
    parent = RunDir.open(run_path).require_finished()
    raw = config_to_dict(parent.read_config())
    if epochs <= raw["train"]["epochs"]:
        raise UsageError(f"train.epochs={epochs} does not continue {parent.path}: it already "
                         f"trained {raw['train']['epochs']} epochs")
    parent_epochs, raw["train"]["epochs"] = raw["train"]["epochs"], epochs
    raw["train"].update(train or {})
    cfg = build_config(raw, f"continuation of {parent.path}")
    root = parent.data_root(data_root)
    records, _, specs = _checked(cfg, root)
    folds = parent.read_record().get("folds") or parent.trained_folds(specs[0])
    split = parent.read_folds()
    record = {**environment(), "data": str(root.resolve()), "folds": folds, "resumed": [],
              "continued_from": {"run": str(parent.path.resolve()), "epochs": parent_epochs}}
    return RunPlan(cfg, specs, root,
                   attach_folds(records, split, str(parent.file(RunDir.FOLDS))), folds, split,
                   record, runs_dir=parent.path.parent, name=name or f"{parent.name}-more",
                   carry_from=parent)


def refit_config(run_path: Path | str, train: dict | None = None
                 ) -> tuple[RunConfig, list[int], Path]:
    """RUN's config for a final model on every person: no validation (so no early stopping
    and no checkpoint averaging: nothing to pick epochs by), for the median of the epochs its
    folds' best checkpoints came from; ``train`` replaces further train settings (``maskclf
    auto`` gives the refit its time limit). Returns the config, those epochs and the run's
    data folder."""
    run = RunDir.open(run_path).require_finished()
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
                        early_stopping_patience=None, average_checkpoints=0, **(train or {}))
    return build_config(raw, f"refit of {run.path}"), best_epochs, run.data_root()


def plan_refit(run_path: Path | str, data_root: Path | str | None = None,
               name: str | None = None, train: dict | None = None) -> RunPlan:
    """A finished run's config retrained on every person for its folds' median best epoch,
    as a new run beside it (``<name>-refit``) whose run.json records the parent."""
    cfg, best_epochs, run_data = refit_config(run_path, train)
    parent = Path(run_path)
    log.info("refit: %d epochs on every person (best epochs of the folds: %s)",
             cfg.train.epochs, best_epochs)
    return plan_new(cfg, data_root or run_data, parent.parent, name or f"{parent.name}-refit",
                    parent={"refit_of": {"run": str(parent.resolve()),
                                         "best_epochs": best_epochs}})


def plan(request: TrainRequest) -> RunPlan:
    """The plan for a ``maskclf train`` request: the planner its flags pick (the CLI runs
    ``request.check()`` first, which also warns when no config was given)."""
    kind = request.kind()
    if kind == "refit":
        return plan_refit(request.refit, request.data, request.name)
    if kind == "continue":
        return plan_continue(request.resume, request.more_epochs(), request.data,
                             request.name)
    if kind == "resume":
        return plan_resume(request.resume, request.data)
    return plan_new(request.config_of_new_run(), request.data or Path("data"),
                    request.runs_dir, request.name, request.fold)


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
    """The plan's config, record and folds in its run directory (rank 0)."""
    if not is_rank_zero():
        return
    run.write_record(plan.record)
    if plan.run is not None:
        log.info("resuming %s: folds %s", run.path, plan.folds)
        return
    run.write_config(plan.cfg)
    run.write_folds(plan.split)
    if plan.corrections is not None:
        run.write_table(RunDir.CORRECTIONS, plan.corrections.changes)
        log.info("%s", plan.corrections.summary())
    if plan.carry_from is not None:
        for spec in plan.specs:
            for fold in plan.folds:
                carry_fold(plan.carry_from.fold(spec, fold), run.fold(spec, fold))
        log.info("continuing %s to %d epochs in %s", plan.carry_from.path,
                 plan.cfg.train.epochs, run.path)


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


def _with_found_rates(plan: RunPlan, run: RunDir) -> RunPlan:
    """``optim.lr: auto`` replaced by the rate the range test suggests for each network
    (``lrfind.find_lr`` on the first planned fold's training rows). The run's config.yaml
    then holds the rates, so a resume or continuation trains with them and tests nothing;
    run.json records each test (``lr_find``) and report/ holds its plot."""
    auto = [spec for spec in plan.specs if spec.cfg.optim.lr == "auto"]
    if not auto:
        return plan
    raw, found = config_to_dict(plan.cfg), {}
    for spec in auto:
        finding = find_lr(spec, plan.root, plan.records, plan.folds[0])
        if finding.suggested_lr is None:
            raise UsageError(f"optim.lr: auto: the learning-rate test of the {spec.task} "
                             f"network found no rate where the loss falls "
                             f"({len(finding.lrs)} steps); set optim.lr")
        plot = lr_figure(finding, run.lr_find_plot(spec.subdir),
                         f"{run.name}: {spec.task} network, fold {plan.folds[0]}")
        found[spec.task] = finding.record(plot.name)
        section = (raw["per_attribute"].setdefault(spec.attribute, {}) if spec.attribute
                   else raw)
        section.setdefault("optim", {})["lr"] = finding.suggested_lr
        log.info("optim.lr: auto -> %.3g for the %s network (plot: %s)",
                 finding.suggested_lr, spec.task, plot)
    if raw["optim"]["lr"] == "auto":  # a per-attribute run: the first network's rate
        raw["optim"]["lr"] = next(iter(found.values()))["suggested_lr"]
    cfg = build_config(raw, f"{run.file(RunDir.CONFIG)} with the rates found")
    run.write_config(cfg)
    plan.record["lr_find"] = found
    run.write_record(plan.record)
    return replace(plan, cfg=cfg, specs=resolve_specs(cfg))


def _train_plan(plan: RunPlan, run: RunDir, interactive: bool | None,
                callbacks: Sequence[Callback], started: float) -> RunResult:
    plan = _with_found_rates(plan, run)
    cfg, records = plan.cfg, plan.records
    excluded = excluded_from_training(records, cfg.data.exclude_ages)
    if excluded is not None:
        log.info("data.exclude_ages %s: %d person(s), %d image(s) left out of training "
                 "(still validated)", excluded["ranges"], excluded["persons"],
                 excluded["images"])
    extra = read_extra(cfg.data.extra)
    if extra is not None:
        log.info("data.extra: %d pseudo-labelled image(s) join every fold's training",
                 len(extra))
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
