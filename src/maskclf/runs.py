"""A leaderboard of run directories and the config differences between two runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from maskclf.config import RunConfig
from maskclf.errors import MissingFileError, UsageError
from maskclf.rundir import RunDir

COLUMNS = ("name", "date", "status", "backbone", "head", "loss", "image_size", "folds",
           "cv_f1", "cv_std", "oof_f1", "mask_f1", "gender_f1", "age_f1", "minutes")


def _loss_name(loss: dict) -> str:
    name = loss.get("name", "cross_entropy")
    if isinstance(name, dict):
        name = "+".join(f"{w:g}*{n}" for n, w in name.items())
    smoothing = loss.get("label_smoothing") or 0
    return f"{name} (ls={smoothing:g})" if smoothing else str(name)


def _date(run: RunDir) -> str:
    record = run.read_record()
    if record:
        return record["started"][:16].replace("T", " ")
    return datetime.fromtimestamp(run.file(RunDir.CONFIG).stat().st_mtime).strftime(
        "%Y-%m-%d %H:%M")


def _raw_config(run: RunDir) -> dict:
    """A run's config.yaml as saved (an older maskclf's config may not validate today)."""
    return yaml.safe_load(run.file(RunDir.CONFIG).read_text()) or {}


def run_row(run: RunDir) -> dict:
    """One leaderboard row from a run directory's config.yaml, run.json and summary.json."""
    try:
        cfg = RunConfig.model_validate(_raw_config(run))
    except ValidationError:  # a run from an older maskclf: listed, not ranked
        return {"name": run.name, "date": _date(run), "status": "old config"}
    row = {"name": run.name, "date": _date(run), "backbone": cfg.model.name,
           "head": cfg.model.head, "loss": _loss_name(cfg.loss.model_dump()),
           "image_size": "x".join(map(str, cfg.data.image_size)),
           "folds": max(cfg.data.folds, 1)}
    if not run.finished:
        return {**row, "status": "unfinished"}
    summary = run.read_summary()
    row.update(status="finished", minutes=round(summary.get("seconds", float("nan")) / 60, 1))
    if summary.get("validation") is not None:
        validation, cv = summary["validation"], summary.get("cv") or {}
        row.update(cv_f1=cv.get("macro_f1_mean"), cv_std=cv.get("macro_f1_std"),
                   oof_f1=validation["macro_f1"],
                   **{f"{k}_f1": v for k, v in validation["attribute_f1"].items()})
    return row


def leaderboard(runs_dir: Path | str, sort: str = "oof_f1", ascending: bool = False
                ) -> pd.DataFrame:
    """Every run under ``runs_dir`` (a folder with config.yaml), best first by ``sort``."""
    if sort not in COLUMNS:
        raise UsageError(f"cannot sort by {sort!r}; columns: {', '.join(COLUMNS)}")
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise MissingFileError(f"{runs_dir} is not a folder of run directories")
    rows = [run_row(RunDir(p)) for p in sorted(runs_dir.iterdir())
            if (p / RunDir.CONFIG).is_file()]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values(sort, ascending=ascending, na_position="last", kind="stable",
                             ignore_index=True)


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_diff(run_a: Path | str, run_b: Path | str) -> pd.DataFrame:
    """``key, A, B`` for every config setting whose value differs between two runs."""
    configs = [_flatten(_raw_config(RunDir.open(run))) for run in (run_a, run_b)]
    keys = sorted(set(configs[0]) | set(configs[1]))
    missing = "(absent)"
    rows = [(k, configs[0].get(k, missing), configs[1].get(k, missing)) for k in keys
            if configs[0].get(k, missing) != configs[1].get(k, missing)]
    return pd.DataFrame(rows, columns=["key", Path(run_a).name, Path(run_b).name])
