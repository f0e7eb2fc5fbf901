"""What ``maskclf train`` was asked, checked before anything heavy is imported.

A :class:`TrainRequest` holds the flags as given; :meth:`TrainRequest.kind` applies the
rules that combine them (which flags fit a refit, a resume, a continuation, a new run) and
:meth:`TrainRequest.check` also reads a new run's config and looks at the folders named, so
a bad flag, key, override or path is answered in well under a second, before torch is
imported. ``pipeline.plan`` then turns the request into a run plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from maskclf.config import RunConfig, load_config
from maskclf.data.layout import check_root
from maskclf.errors import UsageError
from maskclf.runs.directory import RunDir

Kind = Literal["new", "resume", "continue", "refit"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRequest:
    """The flags of ``maskclf train`` (None: not given)."""

    config: Path | None = None
    overrides: tuple[str, ...] = ()
    data: Path | None = None
    runs_dir: Path = Path("runs")
    name: str | None = None
    fold: int | None = None
    resume: Path | None = None
    refit: Path | None = None

    def kind(self) -> Kind:
        """Which planner the flags ask for; a :class:`UsageError` when they do not fit."""
        if self.refit is not None:
            if (self.config is not None or self.overrides or self.fold is not None
                    or self.resume is not None):
                raise UsageError("--refit trains the run's own config; drop --config, -o, "
                                 "--fold and --resume")
            return "refit"
        if self.resume is not None:
            if self.config is not None or self.fold is not None:
                raise UsageError("--resume continues a run with its own config.yaml and "
                                 "folds; drop --config and --fold")
            if self.overrides:
                self.more_epochs()
                return "continue"
            if self.name is not None:
                raise UsageError("--name names a new run: with --resume it needs "
                                 "-o train.epochs=N (train a finished run longer)")
            return "resume"
        return "new"

    def more_epochs(self) -> int:
        """The N of ``--resume RUN -o train.epochs=N``, the one setting a continuation
        changes."""
        key, _, value = self.overrides[0].partition("=")
        if (len(self.overrides) != 1 or key.strip() != "train.epochs"
                or not value.strip().isdigit()):
            raise UsageError("--resume takes one override, -o train.epochs=N, to train a "
                             f"finished run longer; got {' '.join(self.overrides)}")
        return int(value)

    def check(self) -> Kind:
        """:meth:`kind`, and the cheap checks of what the flags name: a new run's config
        and overrides, the data folder, the run directory to resume or refit."""
        kind = self.kind()
        if kind == "new" and self.config is None:
            log.warning("no --config: training maskclf's defaults (%s from scratch at 224 x "
                        "224); pick a recipe with --config NAME (`maskclf recipes` lists them)",
                        RunConfig().model.name)
        if kind != "new":
            RunDir.open(self.refit if kind == "refit" else self.resume)
        if kind == "new" or self.data is not None:
            check_root(self.data or Path("data"))
        if kind == "new":  # last: with good keys, checking the names loads torch
            self.config_of_new_run()
        return kind

    def config_of_new_run(self) -> RunConfig:
        """The config file (or the defaults) with the overrides, validated."""
        return load_config(self.config, list(self.overrides))
