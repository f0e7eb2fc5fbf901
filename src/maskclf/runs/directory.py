"""The run directory: every file name of a run lives here, and every write is atomic.

Layout (the full contract is in ``docs/architecture.md``)::

    RUN/config.yaml run.json folds.csv corrections.csv summary.json oof.csv oof_<views>.csv
        confusion*.csv predictions.csv submission.csv image_predictions.csv
        decision_biases.json notes.json report/ suspects/
    RUN/[<attribute>/]fold<k>/checkpoints/{best,last,interrupted}.ckpt
                              result.json val_probs.npy metrics.csv metrics-history.csv tb/
    RUN/fold<k>/confusion*.csv

A run directory is created fresh (``<name>-2`` when ``<name>`` exists) and never reused.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from maskclf.atomic import atomic_write_text, save_array, write_csv, write_json
from maskclf.config import RunConfig, dump_config, load_config
from maskclf.errors import InputFileError, MissingFileError, UsageError
from maskclf.runs.lock import LOCK, describe, live_holder
from maskclf.tables import read_json_object, read_prediction_file, read_table

if TYPE_CHECKING:  # specs pull in torch and timm; the run directory itself needs neither
    from maskclf.models.spec import ModelSpec


@dataclass(frozen=True)
class FoldDir:
    """One fold of one network: checkpoints, logs and the finished fold's results."""

    run: Path
    path: Path

    BEST = "best"
    """Checkpoint stems (``checkpoints/best.ckpt``), as Lightning's ModelCheckpoint names them."""
    LAST = "last"
    INTERRUPTED = "interrupted"
    TOP = "top"
    """``top-<epoch>.ckpt``: the K best epochs kept for averaging (weights only)."""
    AVERAGED = "averaged"
    """``averaged.ckpt``: the soup of the top epochs, when it scored at least as well."""
    TENSORBOARD = "tb"
    RESULT = "result.json"
    VAL_PROBS = "val_probs.npy"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / f"{self.BEST}.ckpt"

    @property
    def last(self) -> Path:
        """Written every epoch: the point a resumed fold continues from."""
        return self.checkpoints / f"{self.LAST}.ckpt"

    @property
    def interrupted(self) -> Path:
        return self.checkpoints / f"{self.INTERRUPTED}.ckpt"

    @property
    def averaged(self) -> Path:
        return self.checkpoints / f"{self.AVERAGED}.ckpt"

    @property
    def metrics(self) -> Path:
        """Lightning's CSVLogger file (``save_dir`` is the fold folder)."""
        return self.path / "metrics.csv"

    @property
    def metrics_history(self) -> Path:
        """A resumed fold's earlier metrics, kept while Lightning rewrites metrics.csv."""
        return self.path / "metrics-history.csv"

    def checkpoint(self) -> Path:
        """The checkpoint predictions use: the kept soup of the best epochs, else the best
        epoch by validation F1, else the last."""
        for path in (self.averaged, self.best, self.last):
            if path.is_file():
                return path
        raise MissingFileError(f"no checkpoint in {self.checkpoints}; is {self.run} a "
                               "finished maskclf run?")

    def save_result(self, checkpoints: list[Path], probs: np.ndarray | None,
                    soup: dict | None = None) -> None:
        """Mark the fold finished: its checkpoints, validation probabilities and, with
        checkpoint averaging, what the soup scored and whether it was used."""
        if probs is not None:
            save_array(self.path / self.VAL_PROBS, probs)
        write_json(self.path / self.RESULT, {"checkpoints": [str(c) for c in checkpoints],
                                               "validated": probs is not None, "soup": soup})

    def read_soup(self) -> dict | None:
        """The checkpoint-averaging record of a finished fold (None: averaging was off)."""
        path = self.path / self.RESULT
        return json.loads(path.read_text()).get("soup") if path.is_file() else None

    def load_result(self) -> tuple[list[Path], np.ndarray | None] | None:
        """(checkpoints, validation probabilities) of a finished fold; None if unfinished."""
        path = self.path / self.RESULT
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        probs = np.load(self.path / self.VAL_PROBS) if result["validated"] else None
        return [Path(c) for c in result["checkpoints"]], probs


class _Scores(BaseModel):
    model_config = ConfigDict(extra="allow")
    macro_f1: float
    attribute_f1: dict[str, float]


class SummaryShape(BaseModel):
    """What readers of ``summary.json`` (the leaderboard, the report, predict) rely on, so
    a damaged file is named instead of failing deep inside one of them."""

    model_config = ConfigDict(extra="allow")
    folds: list[dict] = []
    validation: _Scores | None = None
    cv: dict[str, float | None] | None = None
    seconds: float | None = None
    n_images: int | None = None
    external: list[dict] | None = None


class RunDir:
    """A run directory: named files, read and written atomically."""

    CONFIG = "config.yaml"
    RECORD = "run.json"
    """Command line, versions, data path, folds and resumes (see ``reproducibility``)."""
    FOLDS = "folds.csv"
    CORRECTIONS = "corrections.csv"
    APPLIED_CORRECTIONS = "applied_corrections.yaml"
    """The ``data.corrections`` file as the run read it when it started: resuming,
    continuing or refitting the run reads this copy, not the file, which a review may
    have changed since."""
    SUMMARY = "summary.json"
    OOF = "oof.csv"
    PREDICTIONS = "predictions.csv"
    SUBMISSION = "submission.csv"
    IMAGE_PREDICTIONS = "image_predictions.csv"
    """``maskclf predict RUN --images``'s default CSV."""
    BIASES = "decision_biases.json"
    REPORT = "report"
    REPORT_FILES = {"report": "report.md", "curves": "curves.png", "confusion": "confusion.png",
                    "class_f1": "class_f1.png", "mistakes": "mistakes.png",
                    "attention": "attention.png"}
    """The files of ``report/`` by role."""
    REPORT_MAPS = "maps.npz"
    """``report/maps.npz``: activation maps of sampled OOF rows (``explain.write_report_maps``),
    which mistakes.png and attention.png draw."""
    SUSPECTS = "suspects"
    """``maskclf suspects``' default folder (suspects.csv, suspects.png, corrections.yaml)."""
    REVIEWED = "corrections.yaml"
    """What ``maskclf review`` decided, in the ``data.corrections`` format."""
    LOCK = LOCK
    """Held while a process trains the run (``maskclf.runs.lock``)."""
    NOTES = "notes.json"
    """Public leaderboard scores and notes (``maskclf note``), newest last."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, runs: Path | str, name: str | None = None) -> RunDir:
        """Make ``runs/<name>``, or ``<name>-2``, ``<name>-3``... if it exists (race-free)."""
        runs = Path(runs)
        base = name or datetime.now().strftime("%Y%m%d-%H%M%S")
        if "/" in base or base in {"", ".", ".."}:
            raise UsageError(f"run name {base!r} must be a plain folder name")
        runs.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 10_000):
            candidate = runs / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return cls(candidate)
        raise RuntimeError(f"could not find a free run directory for {base!r} in {runs}")

    @classmethod
    def open(cls, path: Path | str) -> RunDir:
        """An existing run directory; a clear error when ``path`` is not one."""
        run = cls(path)
        if not run.file(cls.CONFIG).is_file():
            raise MissingFileError(f"{run.file(cls.CONFIG)} not found: {run.path} is not a "
                                   "maskclf run directory")
        return run

    def file(self, name: str) -> Path:
        return self.path / name

    def report_file(self, role: str) -> Path:
        """``report/<file>`` of a role of ``REPORT_FILES`` (``curves`` -> curves.png)."""
        return self.file(self.REPORT) / self.REPORT_FILES[role]

    def lr_find_plot(self, network: str = "") -> Path:
        """``report/lr-find.png`` (``lr-find-<attribute>.png`` for an attribute network): the
        range test behind ``optim.lr: auto``."""
        self.file(self.REPORT).mkdir(exist_ok=True)
        return self.file(self.REPORT) / f"lr-find{'-' + network if network else ''}.png"

    def resume_command(self) -> str:
        """The command that finishes this run when it was interrupted."""
        return f"maskclf train --resume {shlex.quote(str(self.path))}"

    def continue_command(self, epochs: int | str = "N") -> str:
        """The command that trains this finished run longer, as a new run."""
        return f"{self.resume_command()} -o train.epochs={epochs}"

    def unfinished_message(self, alternative: str = "") -> str:
        """Why an unfinished run cannot be used: still training (the lock's holder), or
        interrupted, with the command that finishes it."""
        holder = live_holder(self.path)
        if holder is not None:
            return (f"{self.path} is still training ({describe(holder)}); wait for it to "
                    "finish" + (f", or {alternative}" if alternative else ""))
        return (f"{self.path} has not finished ({self.SUMMARY} is missing): finish it with "
                f"`{self.resume_command()}`" + (f", or {alternative}" if alternative else ""))

    @property
    def running(self) -> bool:
        """A process is training this run now (it holds the run's lock)."""
        return not self.finished and live_holder(self.path) is not None

    def require_finished(self, alternative: str = "") -> RunDir:
        """This run when it finished, else a :class:`UsageError` saying how to finish it
        (and ``alternative``, what else the user may do)."""
        if not self.finished:
            raise UsageError(self.unfinished_message(alternative))
        return self

    def require_sound(self) -> RunDir:
        """This finished run when its config, record and summary read as their readers
        need them; else the first damaged file, named, as one error (before any work)."""
        self.require_finished()
        self.read_config()
        self.read_record()
        self.read_summary()
        return self

    # config, record, folds, summary
    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.file(self.CONFIG), dump_config(cfg))

    def read_config(self) -> RunConfig:
        return load_config(self.file(self.CONFIG))

    def read_record(self) -> dict:
        """``run.json``, or {} for a run made before maskclf wrote one."""
        path = self.file(self.RECORD)
        return read_json_object(path, "the run's record") if path.is_file() else {}

    def read_oof(self) -> pd.DataFrame | None:
        """The run's out-of-fold rows (``oof.csv``, checked as a prediction file), or None
        for a run that has none (trained without validation, or a refit)."""
        path = self.file(self.OOF)
        return read_prediction_file(path) if path.exists() else None

    def require_oof(self, needed_for: str) -> pd.DataFrame:
        """The run's out-of-fold rows, or a :class:`UsageError` saying what needed them."""
        oof = self.read_oof()
        if oof is None:
            raise UsageError(f"{self.path} has no validation rows (no {self.OOF}: it was trained "
                             f"without validation, or is a refit); {needed_for} needs its "
                             "out-of-fold predictions")
        return oof

    @staticmethod
    def oof_name(views: list[str]) -> str:
        """``oof_<views>.csv`` (``oof_hflip-scale.csv``; ``oof_plain.csv`` without TTA): the
        file ``maskclf oof`` writes for those test-time views."""
        return f"oof_{'-'.join(views) or 'plain'}.csv"

    def oof_views(self, oof_file: str) -> list[str] | None:
        """The TTA views an OOF file of this run was predicted with: the run's
        ``predict.tta`` for ``oof.csv`` (written while training), the name's views for
        ``oof_<views>.csv``; None when the name does not say."""
        if oof_file == self.OOF:
            return list(self.read_config().predict.tta)
        stem = Path(oof_file).stem
        if not stem.startswith("oof_") or stem == "oof_tta":  # oof_tta.csv: any views
            return None
        views = stem.removeprefix("oof_")
        return [] if views == "plain" else views.split("-")

    def data_root(self, given: Path | str | None = None) -> Path:
        """``given``, else the dataset the run trained on (``run.json``), else ``./data``:
        predicting, resuming or refitting a run needs no ``--data`` on the same machine."""
        return Path(given or self.read_record().get("data") or "data")

    def read_notes(self) -> list[dict]:
        path = self.file(self.NOTES)
        return (read_json_object(path, "the run's notes", ["notes"])["notes"] if path.is_file()
                else [])

    def add_note(self, note: dict) -> list[dict]:
        notes = [*self.read_notes(), note]
        write_json(self.file(self.NOTES), {"notes": notes})
        return notes

    def write_record(self, record: dict) -> None:
        write_json(self.file(self.RECORD), record)

    def write_folds(self, folds: pd.DataFrame) -> None:
        write_csv(folds, self.file(self.FOLDS))

    def read_folds(self) -> pd.DataFrame:
        return read_table(self.file(self.FOLDS), ("person", "fold"), "folds file",
                          dtype={"person": str, "fold": int})

    @property
    def finished(self) -> bool:
        return self.file(self.SUMMARY).is_file()

    def write_summary(self, summary: dict) -> None:
        write_json(self.file(self.SUMMARY), summary)

    def read_summary(self) -> dict:
        if not self.finished:
            raise MissingFileError(self.unfinished_message())
        path = self.file(self.SUMMARY)
        summary = read_json_object(path, "the run's summary")
        try:
            SummaryShape.model_validate(summary)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise InputFileError(f"the run's summary {path} is damaged: {where}: "
                                 f"{problem['msg']}") from None
        return summary

    def write_table(self, name: str, table: pd.DataFrame) -> Path:
        write_csv(table, self.file(name))
        return self.file(name)

    # networks and folds
    def model_dir(self, spec: ModelSpec) -> Path:
        """Where ``spec``'s folds live: the run itself, or ``<attribute>/``."""
        return self.path / spec.subdir

    def fold(self, spec: ModelSpec, fold: int) -> FoldDir:
        return FoldDir(self.path, self.model_dir(spec) / f"fold{fold}")

    def fold_root(self, fold: int) -> Path:
        """Where a fold's combined files (confusion matrices) go, whatever the head."""
        return self.path / f"fold{fold}"

    @staticmethod
    def confusion_name(matrix: str) -> str:
        """``confusion.csv`` (18 classes), ``confusion_<attribute>.csv``."""
        return f"confusion_{matrix}.csv" if matrix else "confusion.csv"

    def write_confusions(self, tables: dict[str, pd.DataFrame], fold: int | None = None
                         ) -> None:
        """``metrics.confusion_tables`` of the pooled OOF rows, or of one fold's."""
        folder = self.path if fold is None else self.fold_root(fold)
        for matrix, table in tables.items():
            write_csv(table, folder / self.confusion_name(matrix))

    def metrics_files(self) -> list[Path]:
        """Every fold's Lightning ``metrics.csv``, of every network, in path order."""
        return sorted(self.path.glob("**/fold*/metrics.csv"))

    def trained_folds(self, spec: ModelSpec) -> list[int]:
        """The folds of ``spec`` that have checkpoints."""
        model_dir = self.model_dir(spec)
        folds = sorted(int(p.name.removeprefix("fold")) for p in model_dir.glob("fold*")
                       if p.name.removeprefix("fold").isdigit()
                       and (p / "checkpoints").is_dir())
        if not folds:
            raise MissingFileError(f"no fold*/checkpoints under {model_dir}; is {self.path} a "
                                   "finished maskclf run?")
        return folds
