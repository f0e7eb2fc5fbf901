"""Run directories: created fresh, never reused, so no earlier result is overwritten."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


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

