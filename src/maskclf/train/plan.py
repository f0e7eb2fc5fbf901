"""Run plans: what a run will train, where, from which checkpoints and with which parent,
decided and checked before anything is written (new, resume, continue, refit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.config import RunConfig, absolute_paths, build_config, config_to_dict
from maskclf.data.corrections import (
    CorrectionReport,
    apply_corrections,
    folder_labels,
    load_corrections,
)
from maskclf.data.datamodule import teacher_probs
from maskclf.data.external import read_sources
from maskclf.data.layout import read_tables
from maskclf.data.splits import attach_folds, make_folds
from maskclf.errors import ConfigError, MaskclfError, MissingFileError, UsageError
from maskclf.models.spec import ModelSpec, resolve_specs
from maskclf.models.weights import safe_torch_load
from maskclf.results.pseudo_labels import read_extra
from maskclf.results.teacher import teacher_of
from maskclf.runs.directory import RunDir
from maskclf.runs.lock import refuse_if_written, require_idle
from maskclf.train.distributed import is_rank_zero
from maskclf.train.preflight import preflight
from maskclf.train.reproducibility import environment
from maskclf.train.request import TrainRequest

log = logging.getLogger(__name__)


def prepare_records(cfg: RunConfig, root: Path) -> tuple[pd.DataFrame, CorrectionReport | None]:
    """Read and check the data and apply opt-in corrections (shared by every model of a run)."""
    records, _ = read_tables(root)
    report = None
    if cfg.data.corrections is not False:
        source = None if cfg.data.corrections is True else cfg.data.corrections
        if source is not None:  # a review may be deciding what it says right now
            refuse_if_written(Path(source), "data.corrections file")
        records, report = apply_corrections(records, load_corrections(source))
        unknown = int((records[labels.UNKNOWN_COLUMN] > 0).sum())
        for setting, why in cfg.partial_row_clashes()[:1] if unknown else []:
            raise ConfigError(f"data.corrections {source or 'packaged list'} makes labels of "
                              f"{unknown} image(s) unknown, which {setting} cannot read: {why}")
    return records, report


def with_applied_corrections(cfg: RunConfig, run: RunDir) -> RunConfig:
    """``cfg`` reading the corrections ``run`` started with (its copy), so resuming,
    continuing or refitting it keeps its labels when the file has changed since (a review
    goes on while it trains); a run made before runs kept a copy reads the file again."""
    applied = run.file(RunDir.APPLIED_CORRECTIONS)
    if isinstance(cfg.data.corrections, bool) or not applied.is_file():
        return cfg
    try:
        now = load_corrections(cfg.data.corrections).decisions()
    except MaskclfError:  # moved, deleted or broken since: the copy is what counts
        now = None
    if now != load_corrections(applied).decisions():
        log.info("data.corrections %s has changed since %s started; it goes on with the "
                 "labels it started with (%s); train a new run for the new ones",
                 cfg.data.corrections, run.path, applied)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"corrections": applied})})


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


def checked_inputs(cfg: RunConfig, root: Path) -> tuple[pd.DataFrame, CorrectionReport | None,
                                                  list[ModelSpec]]:
    """The dataset read and checked (corrections applied) and the config checked on this
    machine: the checks every planner runs before a plan exists."""
    records, report = prepare_records(cfg, root)
    extra = outside_rows(cfg, root, check_images=True)
    teacher = teacher_of(cfg)
    if teacher is not None:  # every image a fold may train on has its soft targets
        teacher_probs(teacher, [*records["path"], *([] if extra is None else extra["path"])],
                      cfg.distill.teacher)
    return records, report, preflight(cfg)


def outside_rows(cfg: RunConfig, root: Path, check_images: bool = False
                 ) -> pd.DataFrame | None:
    """The rows that join every fold's training and never validate: pseudo-labelled ones
    (``data.extra``) and the outside sources' (``data.external``, each row knowing some
    attributes); None when there are none. ``check_images`` decodes every outside image
    (the planners do, once, before anything is written)."""
    parts = [read_extra(cfg.data.extra),
             read_sources(cfg.data.external, root, check_images) if cfg.data.external else None]
    parts = [part for part in parts if part is not None and len(part)]
    return pd.concat(parts, ignore_index=True) if parts else None


def plan_new(cfg: RunConfig, data_root: Path | str, runs_dir: Path | str = "runs",
             name: str | None = None, fold: int | None = None,
             parent: dict | None = None) -> RunPlan:
    """A new run of ``cfg`` on ``data_root``: a person-level split, every fold (or ``fold``).
    ``parent`` joins run.json (a refit records the run it came from)."""
    root = Path(data_root)
    cfg = absolute_paths(cfg)  # the saved config works from any folder
    records, report, specs = checked_inputs(cfg, root)
    split = make_folds(folder_labels(records), cfg.data.folds, cfg.data.val_ratio, cfg.split_seed)
    existing = fold_ids(split)
    if fold is not None and fold not in existing:
        raise UsageError(f"--fold {fold} does not exist; this split has folds {existing}")
    folds = existing if fold is None else [fold]
    record = {**environment(), "data": str(root.resolve()), "folds": folds, "resumed": [],
              **(parent or {})}
    return RunPlan(cfg, specs, root, attach_folds(records, split), folds, split, record,
                   runs_dir=Path(runs_dir), name=name, corrections=report)


def fold_ids(split: pd.DataFrame) -> list[int]:
    """The folds of a person split (``[0]`` when every person trains)."""
    return sorted(int(f) for f in split["fold"].unique() if f >= 0) or [0]


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
    cfg = with_applied_corrections(run.read_config(), run)
    root = run.data_root(data_root)
    records, report, specs = checked_inputs(cfg, root)
    split = run.read_folds()
    records = attach_folds(records, split, str(run.file(RunDir.FOLDS)))
    record["resumed"].append(environment())
    return RunPlan(cfg, specs, root, records, record["folds"], split, record, run=run,
                   corrections=report)


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
    cfg = with_applied_corrections(build_config(raw, f"continuation of {parent.path}"), parent)
    root = parent.data_root(data_root)
    records, report, specs = checked_inputs(cfg, root)
    folds = parent.read_record().get("folds") or parent.trained_folds(specs[0])
    split = parent.read_folds()
    record = {**environment(), "data": str(root.resolve()), "folds": folds, "resumed": [],
              "continued_from": {"run": str(parent.path.resolve()), "epochs": parent_epochs}}
    return RunPlan(cfg, specs, root,
                   attach_folds(records, split, str(parent.file(RunDir.FOLDS))), folds, split,
                   record, runs_dir=parent.path.parent, name=name or f"{parent.name}-more",
                   carry_from=parent, corrections=report)


def refit_config(run_path: Path | str, train: dict | None = None
                 ) -> tuple[RunConfig, list[int], Path]:
    """RUN's config for a final model on every person: no validation (so no early stopping
    and no checkpoint averaging: nothing to pick epochs by), for the median of the epochs its
    folds' best checkpoints came from; ``train`` replaces further train settings (``maskclf
    auto`` gives the refit its time limit). Returns the config, those epochs and the run's
    data folder."""
    run = RunDir.open(run_path).require_finished()
    cfg = with_applied_corrections(run.read_config(), run)
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

