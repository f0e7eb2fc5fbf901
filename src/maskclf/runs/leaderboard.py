"""A leaderboard of run directories and the config differences between two runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from maskclf import labels
from maskclf.config import RunConfig
from maskclf.errors import MaskclfError, MissingFileError, UsageError, first_line
from maskclf.intervals import summary_intervals
from maskclf.results.ensemble import classes_of
from maskclf.results.submission import oof_persons
from maskclf.runs.directory import RunDir

COLUMNS = ("name", "date", "status", "data", "backbone", "head", "loss", "image_size", "folds",
           "epochs", "cv_f1", "cv_std", "oof_f1", "oof_ci", "mask_f1", "gender_f1", "age_f1",
           "lb", "minutes", "note")
DEFAULT_COLUMNS = ("name", "data", "backbone", "epochs", "cv_f1", "oof_f1", "oof_ci", "lb",
                   "note")
"""What fits 80 columns: ``maskclf runs --columns`` picks others (``all``: every one)."""


def _loss_name(loss: dict) -> str:
    name = loss.get("name", "cross_entropy")
    if isinstance(name, dict):
        name = "+".join(f"{w:g}*{n}" for n, w in name.items())
    smoothing = loss.get("label_smoothing") or 0
    return f"{name} (ls={smoothing:g})" if smoothing else str(name)


def _date(run: RunDir) -> str:
    started = run.read_record().get("started")
    if isinstance(started, str):
        return started[:16].replace("T", " ")
    return datetime.fromtimestamp(run.file(RunDir.CONFIG).stat().st_mtime).strftime(
        "%Y-%m-%d %H:%M")


def _raw_config(run: RunDir) -> dict:
    """A run's config.yaml as saved (an older maskclf's config may not validate today)."""
    return yaml.safe_load(run.file(RunDir.CONFIG).read_text()) or {}


def _latest_note(run: RunDir) -> dict:
    """The newest public score and the newest note text of a run (``maskclf note``)."""
    notes = run.read_notes()
    scores = [n["lb"] for n in notes if n.get("lb") is not None]
    texts = [n["text"] for n in notes if n.get("text")]
    return {"lb": scores[-1] if scores else None, "note": texts[-1] if texts else None}


def validation_interval(run: RunDir) -> dict | None:
    """Each validation figure's person-bootstrap interval: the one ``summary.json`` holds,
    computed from ``oof.csv`` for a run trained before maskclf stored it; None for a run
    without validation rows."""
    stored = (run.read_summary().get("validation") or {}).get("interval")
    if stored is not None:
        return stored
    oof = run.read_oof()
    if oof is None or "class" not in oof.columns:
        return None
    return summary_intervals(labels.truth_codes(oof), classes_of(oof), oof_persons(oof))


def run_row(run: RunDir) -> dict:
    """One leaderboard row from a run directory's config.yaml, run.json, summary.json and
    notes.json."""
    base = {"name": run.name, "date": _date(run), **_latest_note(run)}
    try:
        cfg = RunConfig.model_validate(_raw_config(run))
    except ValidationError:  # a run from an older maskclf: listed, not ranked
        return {**base, "status": "old config"}
    data = run.read_record().get("data")
    row = {**base, "data": None if data is None else Path(data).name,
           "backbone": cfg.model.name, "head": cfg.model.head,
           "loss": _loss_name(cfg.loss.model_dump()),
           "image_size": "x".join(map(str, cfg.data.image_size)),
           "folds": max(cfg.data.folds, 1), "epochs": cfg.train.epochs}
    if not run.finished:
        return {**row, "status": "running" if run.running else "unfinished"}
    summary = run.read_summary()
    if row["data"] is not None and "n_images" in summary:
        row["data"] += f" ({summary['n_images']})"
    row.update(status="finished", minutes=round(summary.get("seconds", float("nan")) / 60, 1))
    if summary.get("validation") is not None:
        validation, cv = summary["validation"], summary.get("cv") or {}
        row.update(cv_f1=cv.get("macro_f1_mean"), cv_std=cv.get("macro_f1_std"),
                   oof_f1=validation["macro_f1"],
                   oof_ci=_interval_text(validation_interval(run)),
                   **{f"{k}_f1": v for k, v in validation["attribute_f1"].items()})
    return row


def _interval_text(interval: dict | None) -> str | None:
    """``oof_ci``: the OOF macro F1's 95% interval over persons, ``.49-.60``: narrow enough
    for the 80-column view."""
    if interval is None:
        return None
    low, high = interval["macro_f1"]["low"], interval["macro_f1"]["high"]
    return f"{low:.2f}-{high:.2f}".replace("0.", ".")


def sound_row(run: RunDir) -> dict:
    """:func:`run_row`, or for a damaged run (a file cut short or of another shape) a row
    with status ``damaged`` and what is wrong as its note, so one damaged folder does not
    hide the others."""
    try:
        return run_row(run)
    except MaskclfError as exc:
        return {"name": run.name, "status": "damaged", "note": str(exc).splitlines()[0]}
    except yaml.YAMLError as exc:
        return {"name": run.name, "status": "damaged",
                "note": f"{run.file(RunDir.CONFIG)} is not YAML ({first_line(exc)})"}


def choose_columns(spec: str | None) -> list[str]:
    """``--columns``: comma-separated names, ``all``, or None for ``DEFAULT_COLUMNS``."""
    if spec is None:
        return list(DEFAULT_COLUMNS)
    if spec.strip() == "all":
        return list(COLUMNS)
    chosen = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in COLUMNS]
    if unknown or not chosen:
        raise UsageError(f"unknown column(s) {unknown or spec!r} for --columns; columns: "
                         f"{', '.join(COLUMNS)} (or all)")
    return chosen


def lb_correlation(table: pd.DataFrame, against: str = "oof_f1") -> dict | None:
    """How well the validation F1 predicts the public score across runs that have both
    (Pearson and Spearman); None with fewer than three such runs."""
    pairs = table[["lb", against]].apply(pd.to_numeric, errors="coerce").dropna()
    if len(pairs) < 3:
        return None
    return {"runs": len(pairs), "against": against,
            "pearson": float(pairs["lb"].corr(pairs[against])),
            "spearman": float(pairs["lb"].corr(pairs[against], method="spearman"))}


def leaderboard(runs_dir: Path | str, sort: str = "oof_f1", ascending: bool = False
                ) -> pd.DataFrame:
    """Every run under ``runs_dir`` (a folder with config.yaml), best first by ``sort``,
    with every column of ``COLUMNS``."""
    if sort not in COLUMNS:
        raise UsageError(f"cannot sort by {sort!r}; columns: {', '.join(COLUMNS)}")
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise MissingFileError(f"{runs_dir} is not a folder of run directories")
    rows = [sound_row(RunDir(p)) for p in sorted(runs_dir.iterdir())
            if (p / RunDir.CONFIG).is_file()]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values(sort, ascending=ascending, na_position="last", kind="stable",
                             ignore_index=True)


def add_note(run_path: Path | str, lb: float | None, text: str | None) -> list[dict]:
    """Record a public leaderboard score and/or a note for a run (``RUN/notes.json``)."""
    if lb is None and not text:
        raise UsageError("give a public score (--lb 0.771), a note text, or both")
    if lb is not None and not 0.0 <= lb <= 1.0:
        raise UsageError(f"--lb {lb} is not a macro F1 between 0 and 1")
    run = RunDir.open(run_path)
    return run.add_note({"time": datetime.now().isoformat(timespec="seconds"), "lb": lb,
                         "text": text or None})


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
    names = [Path(run_a).name, Path(run_b).name]
    if names[0] == names[1]:  # same name in two folders: the paths tell them apart
        names = [str(run_a), str(run_b)]
    if names[0] == names[1]:
        names = ["A", "B"]
    return pd.DataFrame(rows, columns=["key", *names])
