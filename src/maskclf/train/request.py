"""What ``maskclf train``, ``tune`` and ``distill`` were asked, checked before anything
heavy is imported.

Each request holds a command's flags as given, and its ``check()`` answers every mistake in
them (a flag that does not fit another, a config key, an override, a folder or file that is
not there) in well under a second, before torch is imported, so a refused request writes
nothing. :class:`TrainRequest` also applies the rules that pick the planner
(:meth:`TrainRequest.kind`: refit, resume, continuation, new run); ``train.plan.plan`` then
turns it into a run plan.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from maskclf.atomic import check_folder, check_target
from maskclf.config import RunConfig, apply_overrides, build_config, load_config, load_raw_config
from maskclf.data.layout import check_root, read_tables
from maskclf.deploy.manifest import is_export, load_manifest
from maskclf.errors import UsageError
from maskclf.runs.directory import RunDir
from maskclf.tables import require_file

Kind = Literal["new", "resume", "continue", "refit"]
log = logging.getLogger(__name__)
STORAGE_EXAMPLE = "sqlite:///study.db or postgresql+psycopg://user:pass@host/db"


def check_storage_url(url: str | None) -> None:
    """``--storage``: a database URL with an installed driver (the password never shown);
    whether the server answers is learnt when the study opens."""
    if url is None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"--storage {url.split('@')[-1]!r} is not a database URL; give "
                         f"{STORAGE_EXAMPLE}") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise UsageError(f"--storage {shown}: no database driver for {parsed.drivername!r}; "
                         f"give {STORAGE_EXAMPLE}") from None
    except ImportError as exc:
        raise UsageError(f"--storage {shown}: its driver is not installed ({exc}); "
                         f"give {STORAGE_EXAMPLE}") from None


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


@dataclass(frozen=True)
class TuneRequest:
    """The flags of ``maskclf tune``: run trials (``space`` given) or report a study
    (``report`` given)."""

    study: str = "study"
    config: Path | None = None
    overrides: tuple[str, ...] = ()
    data: Path = Path("data")
    space: Path | None = None
    trials: int = 20
    storage: str | None = None
    out: Path | None = None
    timeout_s: float | None = None
    sampler_seed: int | None = None
    startup_trials: int = 5
    warmup_epochs: int = 1
    threads: int | None = None
    report: Path | None = None

    @property
    def folder(self) -> Path:
        """The study folder: ``--out``, or ``studies/STUDY``."""
        return self.out or Path("studies") / self.study

    def check(self) -> None:
        """To report: nothing more (the study is read then). To run trials: a search space
        file, counts that make sense, the data folder, and a base config (file, overrides)
        that validates on held-out persons."""
        if self.report is not None:
            return
        if self.space is None:
            raise UsageError("--space SPACE.yaml is needed to run trials (or --report DIR to "
                             "report a study)")
        for flag, value, least in (("--trials", self.trials, 1), ("--threads", self.threads, 1),
                                   ("--startup-trials", self.startup_trials, 0),
                                   ("--warmup-epochs", self.warmup_epochs, 0)):
            if value is not None and value < least:
                raise UsageError(f"{flag} must be at least {least}; got {value}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise UsageError(f"--timeout must be positive; got {self.timeout_s:g}")
        require_file(self.space, "search space")
        check_root(self.data)
        check_storage_url(self.storage)
        self.base_config()

    def raw_config(self) -> dict:
        """The base config file (or the defaults) with the overrides, as a dict."""
        return apply_overrides(load_raw_config(self.config), list(self.overrides))

    def base_config(self) -> RunConfig:
        """The base config, validated, with validation persons (a study scores them)."""
        base = build_config(self.raw_config(), "base config", list(self.overrides))
        if not base.data.validates:
            raise UsageError("a study scores validation macro F1: set data.val_ratio > 0 or "
                             "data.folds >= 2")
        return base


MIN_LR, MAX_LR, STEPS = 1e-6, 1.0, 100
"""lr-find's defaults: Lightning's range, fastai's count."""
MOST_LR, MOST_STEPS = 10.0, 2000
"""Beyond these a range test says nothing more (a rate of 10 diverges any network this
toolkit trains; 2,000 batches sweep every rate many times over) and only costs time."""


def check_range(min_lr: float, max_lr: float, steps: int) -> None:
    """A learning-rate range test's range and length, with what to give instead."""
    if not (math.isfinite(min_lr) and math.isfinite(max_lr) and 0 < min_lr < max_lr <= MOST_LR):
        raise UsageError(f"the learning-rate range needs 0 < --min-lr < --max-lr <= {MOST_LR:g}; "
                         f"got {min_lr:g} to {max_lr:g}")
    if not 12 <= steps <= MOST_STEPS:  # the suggestion skips the first 10 points and the last
        raise UsageError(f"the learning-rate test needs --steps from 12 to {MOST_STEPS}; got "
                         f"{steps}")


@dataclass(frozen=True)
class LrFindRequest:
    """The flags of ``maskclf lr-find``."""

    config: Path | None = None
    overrides: tuple[str, ...] = ()
    data: Path = Path("data")
    plot: Path = Path("lr-find.png")
    min_lr: float = MIN_LR
    max_lr: float = MAX_LR
    steps: int = STEPS

    def check(self) -> RunConfig:
        """The range, the data folder, the plot's path and the config the test runs."""
        check_range(self.min_lr, self.max_lr, self.steps)
        check_root(self.data)
        check_target(self.plot)
        return self.run_config()

    def run_config(self) -> RunConfig:
        """The config with its overrides, as the test runs it: on one device, at the rates
        it sets itself (so ``optim.lr: auto`` and several devices, which a run refuses
        together, are fine here)."""
        raw = apply_overrides(load_raw_config(self.config), list(self.overrides))
        raw.setdefault("optim", {})["lr"] = self.min_lr
        raw.setdefault("train", {}).update(devices=1, num_nodes=1)
        return build_config(raw, str(self.config or "<defaults>"), list(self.overrides))


@dataclass(frozen=True)
class DistillRequest:
    """The flags of ``maskclf distill``."""

    sources: tuple[Path, ...]
    student: str
    config: Path | None = None
    overrides: tuple[str, ...] = ()
    data: Path | None = None
    runs_dir: Path = Path("runs")
    name: str | None = None
    unlabelled: bool = False

    def check(self) -> list[RunDir]:
        """Every source a teacher (a finished run with out-of-fold rows, or an export whose
        run is here), the data folder, the student's config file; the teachers' runs."""
        if not self.sources:
            raise UsageError("name at least one SOURCE: a finished run or an export")
        runs = [teacher_run(Path(source)) for source in self.sources]
        check_root(self.data_root(runs[0]))
        if self.config is not None:
            load_raw_config(self.config)
        if self.name is not None and ("/" in self.name or self.name in {"", ".", ".."}):
            raise UsageError(f"--name {self.name!r} must be a plain folder name")
        check_folder(self.runs_dir, "--out", "the teacher's and the student's run folders")
        if self.unlabelled:  # the teacher predicts the eval images: they must be there
            read_tables(self.data_root(runs[0]), train=False, eval=True)
        return runs

    def data_root(self, teacher: RunDir) -> Path:
        """``--data``, or the first teacher run's own data folder."""
        return Path(self.data) if self.data is not None else teacher.data_root()


def teacher_run(source: Path) -> RunDir:
    """The finished run behind a teacher source: the run itself, or an export's
    ``source_run`` (which fold validated on each training image is known only there),
    with its out-of-fold rows."""
    if is_export(source):
        _, manifest = load_manifest(source)
        run = Path(manifest.source_run)
        if not (run / RunDir.CONFIG).is_file():
            raise UsageError(f"{source}: its source run {run} is not here, so which fold "
                             "validated on each training image is unknown; distill from the "
                             "run, or copy it back")
        source = run
    run = RunDir.open(source).require_finished()
    run.require_oof("a teacher")
    return run


EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
"""Numbers YAML 1.1 reads as text (``1e-9``): ``--vary`` values are numbers, as a user means."""
NOT_VARIED = ("seed", "data.split_seed")
"""Keys ``--vary`` refuses: the repeats own the seed, and every run validates on the same
persons."""


def parse_vary(item: str, base: dict) -> tuple[str, list]:
    """``--vary KEY=V1,V2``: the key and its values (each read as YAML, so lists and
    mappings work: ``data.image_size=[128,96],[160,120]``), every value checked against the
    config's keys, types and names (not the rules between keys: a combination that breaks
    one is left out and named when the grid is built)."""
    import json

    import yaml

    from maskclf.config import check_keys

    key, sep, values_text = item.partition("=")
    key = key.strip()
    if not sep or not key or not values_text.strip():
        raise UsageError(f"--vary {item!r}: give KEY=V1,V2 (e.g. --vary optim.lr=3e-4,1e-3)")
    if key in NOT_VARIED:
        raise UsageError(f"--vary {key}: the repeats set the seed and every run validates on "
                         "the same persons; vary another key (--repeats sets how many seeds)")
    try:
        values = yaml.safe_load(f"[{values_text}]")
    except yaml.YAMLError as exc:
        raise UsageError(f"--vary {key}: its values are not YAML ({' '.join(str(exc).split())})"
                         ) from None
    values = [float(v) if isinstance(v, str) and EXPONENT.fullmatch(v) else v for v in values]
    texts = [json.dumps(value, sort_keys=True) for value in values]
    if len(set(texts)) != len(texts):
        raise UsageError(f"--vary {key} lists a value twice: {values}")
    for text in texts:  # a ConfigError names the key, the value and what it takes
        check_keys(apply_overrides(base, [f"{key}={text}"]), f"--vary {key}={text}")
    return key, values


@dataclass(frozen=True)
class AblateRequest:
    """The flags of ``maskclf ablate``."""

    config: Path | None = None
    overrides: tuple[str, ...] = ()
    data: Path = Path("data")
    vary: tuple[str, ...] = ()
    repeats: int = 3
    out: Path | None = None
    study: str = "ablation"
    storage: str | None = None
    threads: int | None = None
    draws: int = 1000

    @property
    def folder(self) -> Path:
        """The study folder: ``--out``, or ``studies/STUDY``."""
        return self.out or Path("studies") / self.study

    def check(self) -> dict[str, list]:
        """Counts, the data folder, the storage URL and the folder; the base config and
        every varied key and value; returns the varied keys with their values."""
        for flag, value, least in (("--repeats", self.repeats, 1), ("--threads", self.threads, 1),
                                   ("--draws", self.draws, 100)):
            if value is not None and value < least:
                raise UsageError(f"{flag} must be at least {least}; got {value}")
        check_root(self.data)
        check_storage_url(self.storage)
        check_folder(self.folder, "--out", "the ablation's runs and effects")
        base = self.raw_config()
        built = build_config(base, "base config", list(self.overrides))
        if not built.data.validates:
            raise UsageError("an ablation scores validation persons: set data.val_ratio > 0 "
                             "or data.folds >= 2")
        varied: dict[str, list] = {}
        for item in self.vary:
            key, values = parse_vary(item, base)
            if key in varied:
                raise UsageError(f"--vary {key} is given twice; list all its values once")
            varied[key] = values
        return varied

    def raw_config(self) -> dict:
        """The base config file (or the defaults) with the overrides, as a dict."""
        return apply_overrides(load_raw_config(self.config), list(self.overrides))
