"""An ``auto`` preset: the candidates and how the budget is spent on them.

A preset is a YAML file (``maskclf auto --preset cpu|gpu|demo|FILE``); the packaged ones
live in ``configs/auto/``. Every candidate is a packaged recipe or config file plus
overrides; all of them are built and checked here, before any image is read or torch is
imported, so a typo in a preset is one line naming the file and the candidate.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from maskclf.config import (
    RECIPES,
    ConfigError,
    RunConfig,
    apply_overrides,
    build_config,
    load_raw_config,
    packaged_config,
)
from maskclf.tables import require_file

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class Candidate(BaseModel):
    """One entry of the portfolio: a recipe and the options that make it different."""

    model_config = ConfigDict(extra="forbid")

    name: str
    overrides: list[str] = []
    about: str = ""
    outside_share: float | None = Field(None, gt=0.0, lt=1.0)
    """Train with the study's outside sources (``auto --external``), which make this share
    of each epoch, divided between them by their size; a study without sources leaves the
    candidate out."""

    @model_validator(mode="after")
    def _named(self) -> Candidate:
        if not _NAME.match(self.name):
            raise ValueError(f"candidate name {self.name!r}: use 1-40 lower-case letters, "
                             "digits, '-' or '_' (it names a run directory)")
        return self


class Preset(BaseModel):
    """The stages' settings; see ``configs/auto/cpu.yaml`` for what each one does."""

    model_config = ConfigDict(extra="forbid")

    base: str
    """The recipe every candidate starts from (a packaged name or a config file)."""
    candidates: list[Candidate] = Field(min_length=1)
    folds: int = Field(5, ge=2)
    """The person split: screening trains fold 0, the k-fold stage every fold."""
    screen_epochs: int = Field(2, ge=1)
    """Epochs of the first rung of successive halving."""
    eta: int = Field(3, ge=2)
    """Each rung keeps the best 1/eta of the candidates (at least ``survivors``)."""
    max_epochs: int = Field(10, ge=1)
    """The epochs the final stage trains, when the time left allows."""
    max_final_epochs: int | None = Field(None, ge=1)
    """The most epochs a member trains when more time is left than planned (a dropped
    candidate, runs faster than the probe said): the final stage is re-planned from the
    pace measured by then. Default: 1.5 x ``max_epochs``."""
    min_final_epochs: int = Field(7, ge=1)
    """The fewest epochs of a k-fold stage; fold-0 members are shortened down to this many
    before fewer than ``survivors`` candidates are kept."""
    survivors: int = Field(2, ge=1)
    """Candidates left after screening: trained k-fold when the budget allows."""
    average_checkpoints: int = Field(3, ge=0)
    """``train.average_checkpoints`` of the final stage (0: off)."""
    refit: bool = False
    """After the selection, retrain each chosen member on every person (``train --refit``)
    when the time left fits it, and predict the eval set with the refits."""
    ensemble_rounds: int = Field(20, ge=1)
    """Greedy selection steps (with replacement)."""
    screen_share: float = Field(0.5, gt=0.0, lt=1.0)
    """The part of the training time that screening may use when k-fold also fits."""
    reserve: float = Field(0.08, ge=0.0, lt=0.5)
    """The part of the budget kept for prediction, selection and the report."""

    @property
    def final_epochs_cap(self) -> int:
        """``max_final_epochs``, or its default."""
        return self.max_final_epochs or round(1.5 * self.max_epochs)

    @model_validator(mode="after")
    def _consistent(self) -> Preset:
        names = [c.name for c in self.candidates]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"candidate names repeat: {twice}")
        if self.max_final_epochs is not None and self.max_final_epochs < self.max_epochs:
            raise ValueError(f"max_final_epochs {self.max_final_epochs} is below max_epochs "
                             f"{self.max_epochs}")
        for key in ("screen_epochs", "min_final_epochs"):
            if getattr(self, key) > self.max_epochs:
                raise ValueError(f"{key} {getattr(self, key)} exceeds max_epochs "
                                 f"{self.max_epochs}")
        return self


def packaged_preset(name: str) -> Path:
    return RECIPES / "auto" / f"{name}.yaml"


def preset_names() -> list[str]:
    return sorted(p.stem for p in packaged_preset("cpu").parent.glob("*.yaml"))


def preset_path(preset: str | Path) -> Path:
    """A packaged preset's name, or a file."""
    if isinstance(preset, str) and packaged_preset(preset).is_file():
        return packaged_preset(preset)
    path = Path(preset)
    if not path.exists() and path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"preset {preset!r} is neither a packaged preset "
                          f"({', '.join(preset_names())}) nor a YAML file")
    return require_file(path, "preset")


LoadedPreset = tuple[Preset, dict[str, RunConfig], Path]
"""The preset, each candidate's checked config (by name) and the preset's file."""

OutsideSizes = dict[Path, int]
"""The study's outside sources (``auto --external``) and their row counts."""


def load_preset(preset: str | Path, outside: OutsideSizes | None = None) -> LoadedPreset:
    """The preset, each candidate's checked config (by name) and the preset's file; a
    candidate with ``outside_share`` only when ``outside`` sources are given."""
    path = preset_path(preset)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset {path} is not plain YAML: {' '.join(str(exc).split())}"
                          ) from None
    try:
        settings = Preset.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'preset'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ConfigError(f"preset {path}: {problems}") from None
    return settings, candidate_configs(settings, path, outside or {}), path


def outside_sources(outside: OutsideSizes, share: float) -> list[dict]:
    """``data.external`` for a candidate: every source, ``share`` of the epoch split between
    them in proportion to their rows."""
    rows = sum(outside.values())
    return [{"path": str(path), "share": share * count / rows}
            for path, count in outside.items()]


def candidate_configs(preset: Preset, source: Path,
                      outside: OutsideSizes) -> dict[str, RunConfig]:
    """Every candidate's config: the base recipe, the preset's split, the outside sources
    for a candidate that takes them (the others train on the competition's rows only), the
    candidate's overrides. Screening settings (epochs, time limit) are the study's to set
    per stage."""
    shipped = packaged_config(preset.base)  # a recipe's name, read without a log line
    base = load_raw_config(shipped if shipped.is_file() and not Path(preset.base).is_file()
                           else preset.base)
    configs = {}
    for candidate in preset.candidates:
        where = f"preset {source}, candidate {candidate.name!r}"
        if candidate.outside_share and not outside:
            continue
        try:
            raw: dict[str, Any] = apply_overrides(base, [
                f"data.folds={preset.folds}", "train.report=false"])
            if candidate.outside_share:
                raw.setdefault("data", {})["external"] = outside_sources(
                    outside, candidate.outside_share)
            raw = apply_overrides(raw, candidate.overrides)
            configs[candidate.name] = build_config(raw, where, candidate.overrides)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from None
    if not configs:
        raise ConfigError(f"preset {source}: every candidate trains with outside data "
                          "(outside_share); give the sources with --external DIR")
    return configs
