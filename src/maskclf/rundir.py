"""Run directories: created fresh, never reused, so no earlier result is overwritten."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from maskclf.atomic import atomic_write_text

RUN_RECORD = "run.json"
"""Command line, versions, data path, folds and resumes of a run (see ``reproducibility``)."""


def create_run_dir(runs: Path | str, name: str | None = None) -> Path:
    """Make ``runs/<name>``, or ``<name>-2``, ``<name>-3``... if it exists (race-free)."""
    runs = Path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    base = name or datetime.now().strftime("%Y%m%d-%H%M%S")
    if "/" in base or base in {"", ".", ".."}:
        raise ValueError(f"run name {base!r} must be a plain folder name")
    for attempt in range(1, 10_000):
        candidate = runs / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RuntimeError(f"could not find a free run directory for {base!r} in {runs}")


def fold_dir(run: Path, fold: int) -> Path:
    return Path(run) / f"fold{fold}"



def read_record(run: Path | str) -> dict:
    """A run's ``run.json``, or {} for a run made before maskclf wrote one."""
    path = Path(run) / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def write_record(run: Path | str, record: dict) -> None:
    atomic_write_text(Path(run) / RUN_RECORD, json.dumps(record, indent=2) + "\n")
