"""What ``maskclf auto`` was asked, checked before torch loads: the budget, the preset and
each candidate's config, the data folder, the study's name, and that a continued study is
given the data, budget and preset it began with."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from maskclf.atomic import check_folder
from maskclf.auto.folder import StudyFolder, check_identity, plan_identity
from maskclf.auto.preset import LoadedPreset, OutsideSizes, load_preset
from maskclf.config import ExternalSource, duration_seconds
from maskclf.data.layout import read_tables
from maskclf.errors import UsageError
from maskclf.train.request import check_storage_url


@dataclass(frozen=True)
class AutoRequest:
    """The flags of ``maskclf auto``."""

    data: Path
    budget: str
    preset: str = "cpu"
    out: Path = Path("auto")
    name: str | None = None
    storage: str | None = None
    threads: int | None = None
    external: tuple[Path, ...] = ()
    """Outside sources (``data.external`` folders) for the candidates that take them."""

    def check(self) -> None:
        """Every check of :meth:`checked`, for the CLI to call before the heavy imports."""
        self.checked()

    def checked(self) -> CheckedAuto:
        """The budget in seconds, the study folder and the loaded preset; a
        :class:`UsageError` naming the flag when one is wrong."""
        try:
            budget_s = duration_seconds(self.budget)
        except ValueError as exc:
            raise UsageError(f"--budget: {exc}") from None
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be at least 1; got {self.threads}")
        check_storage_url(self.storage)
        folder = self.folder()
        tables = read_tables(Path(self.data), eval=True)
        outside = self.outside_sizes()
        loaded = load_preset(self.preset, outside)
        identity = plan_identity(Path(self.data), budget_s, loaded[2].read_text(), list(outside))
        check_identity(folder, identity)
        return CheckedAuto(budget_s, folder, loaded, identity, list(outside), tables)

    def outside_sizes(self) -> OutsideSizes:
        """Each ``--external`` source (resolved) and its rows, every row checked."""
        if not self.external:
            return {}
        from maskclf.data.external import read_sources

        sources = [ExternalSource(path=Path(folder).resolve()) for folder in self.external]
        rows = read_sources(sources, Path(self.data))
        return {source.path: int((rows["source"] == number).sum())
                for number, source in enumerate(sources, start=1)}

    def folder(self) -> StudyFolder:
        """``OUT/NAME`` (NAME: the data folder's name by default), a plain folder name; a
        folder, not a file."""
        name = self.name or Path(self.data).resolve().name
        if "/" in name or name in {"", ".", ".."}:
            raise UsageError(f"--name {name!r} must be a plain folder name")
        return StudyFolder(check_folder(Path(self.out) / name, "--out/--name",
                                        "the study (OUT/NAME)"))

    def command(self) -> str:
        """The command that continues this study (its name spelt out)."""
        return shlex.join(["maskclf", "auto", "--data", str(self.data), "--budget",
                           self.budget, "--preset", str(self.preset), "--out", str(self.out),
                           "--name", self.folder().path.name,
                           *(["--storage", self.storage] if self.storage else []),
                           *[arg for folder in self.external
                             for arg in ("--external", str(folder))]])


@dataclass(frozen=True)
class CheckedAuto:
    budget_s: float
    folder: StudyFolder
    loaded: LoadedPreset
    identity: dict
    """What the study was started with (``folder.plan_identity``)."""
    outside: list[Path]
    """The outside sources, resolved."""
    tables: tuple[pd.DataFrame, pd.DataFrame]
    """The data's training records and eval table, checked."""
