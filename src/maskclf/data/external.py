"""Outside photo sets (``data.external``): folders that label only some attributes.

A source is ``images/`` plus ``labels.csv``: a ``file`` column (a name inside ``images/``)
and any of ``mask`` (wear / incorrect / not_wear), ``gender`` (male / female) and ``age``
(years); a blank cell is unknown, and the config may give a value the whole folder shares.
Every row becomes a training record whose unknown attributes are ``labels.UNKNOWN``, with
its source's number (1, 2, ...) — the ``labels.partial_code`` of its target says what it
knows. Everything wrong with a source is one :class:`DataError` naming the source, row and
column, before anything is written.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.config import ExternalSource
from maskclf.data.layout import TRAIN_CSV, escapes, probe_all
from maskclf.errors import DataError
from maskclf.tables import read_table

LABELS = "labels.csv"
IMAGES = "images"
ATTRIBUTE_COLUMNS = ("mask", "gender", "age")
MAX_AGE = 120
VALUES = {"mask": labels.MASK_NAMES, "gender": labels.GENDER_NAMES}


def read_sources(sources: list[ExternalSource], data_root: Path | None = None,
                 check_images: bool = True) -> pd.DataFrame:
    """Every source's rows as records (``path`` absolute, ``mask``, ``gender``,
    ``age_group`` and ``age`` with ``UNKNOWN`` where not known, ``source`` 1, 2, ...);
    every problem of every source raised together."""
    problems: list[tuple[str, str]] = []
    tables = [_read_source(source, number, data_root, problems, check_images)
              for number, source in enumerate(sources, start=1)]
    if problems:
        raise DataError(problems)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _read_source(source: ExternalSource, number: int, data_root: Path | None,
                 problems: list, check_images: bool) -> pd.DataFrame | None:
    folder = Path(source.path)
    where = f"data.external {folder}"
    if not folder.is_dir():
        problems.append((where, "is not a folder (a source is images/ and labels.csv)"))
        return None
    if data_root is not None and (folder.resolve() == Path(data_root).resolve()
                                  or (folder / TRAIN_CSV).is_file()):
        problems.append((where, "is a competition data folder; a source is an outside set "
                                "(images/ and labels.csv), used for training only"))
        return None
    csv = folder / LABELS
    table = read_table(csv, ["file"], f"{where}: labels file", dtype=str,
                       keep_default_na=False)
    shared = source.shared()
    given = [c for c in ATTRIBUTE_COLUMNS if c in table.columns or c in shared]
    if not given:
        problems.append((str(csv), f"has no attribute column: give any of "
                                   f"{list(ATTRIBUTE_COLUMNS)} (or a value the folder shares "
                                   "in the config)"))
        return None
    if table.empty:
        problems.append((str(csv), "has no rows: an empty source teaches nothing"))
        return None
    values = {name: _column(table, name, shared.get(name), csv, problems)
              for name in ATTRIBUTE_COLUMNS}
    files = _files(table["file"], folder, csv, problems)
    if check_images:
        probe_all(folder / IMAGES, [f for f in files if f], problems)
    age = values["age"]
    return pd.DataFrame({
        "path": [str((folder / IMAGES / name).resolve()) for name in files],
        "person": [f"external{number}:{name}" for name in files],
        "mask": values["mask"], "gender": values["gender"],
        "age_group": np.where(age >= 0, labels.age_bucket(np.maximum(age, 0)), labels.UNKNOWN),
        "age": age, "class": labels.UNKNOWN, "source": number})


def _column(table: pd.DataFrame, name: str, shared, csv: Path, problems: list) -> np.ndarray:
    """One attribute as ids (``mask`` and ``gender``) or years (``age``), ``UNKNOWN`` where
    blank; a cell of the file overrides the folder's shared value."""
    cells = (table[name].str.strip() if name in table.columns
             else pd.Series([""] * len(table), index=table.index))
    fallback = labels.UNKNOWN if shared is None else (
        shared if name == "age" else VALUES[name].index(shared))
    out = np.full(len(table), fallback, dtype=np.int64)
    for row, cell in enumerate(cells):
        if not cell:
            continue
        line = f"row {row + 2}, column {name}"
        if name == "age":
            if not cell.isdigit() or int(cell) > MAX_AGE:
                problems.append((str(csv), f"{line}: age {cell!r} is not a number of years in "
                                           f"0-{MAX_AGE}"))
                continue
            out[row] = int(cell)
            continue
        known = VALUES[name]
        if cell.lower() not in known:
            close = difflib.get_close_matches(cell.lower(), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append((str(csv), f"{line}: unknown {name} {cell!r} (known: "
                                       f"{', '.join(known)}){hint}"))
            continue
        out[row] = known.index(cell.lower())
    return out


def _files(names: pd.Series, folder: Path, csv: Path, problems: list) -> list[str]:
    """The ``file`` column, checked: a plain name inside ``images/``, there, listed once."""
    files = []
    for row, name in enumerate(names.str.strip()):
        line = f"row {row + 2}, column file"
        if escapes(name):
            problems.append((str(csv), f"{line}: {name!r} must be a file inside {IMAGES}/"))
            files.append("")
            continue
        path = folder / IMAGES / name
        if not path.is_file():
            problems.append((str(csv), f"{line}: {IMAGES}/{name} does not exist"))
        elif path.stat().st_size == 0:
            problems.append((str(csv), f"{line}: {IMAGES}/{name} is empty"))
        files.append(name)
    for name in names[names.str.strip().duplicated()].unique():
        problems.append((str(csv), f"lists {name!r} more than once"))
    return files


def describe(rows: pd.DataFrame, sources: list[ExternalSource]) -> list[dict]:
    """Per source, for summaries and reports: rows, how many know each attribute, and the
    values they know."""
    described = []
    for number, source in enumerate(sources, start=1):
        part = rows[rows["source"] == number]
        known = {name: int((part[column] >= 0).sum())
                 for name, column in labels.RECORD_COLUMNS.items()}
        counts = {name: {value: int((part[column] == i).sum())
                         for i, value in enumerate(labels.ATTRIBUTES[name])}
                  for name, column in labels.RECORD_COLUMNS.items()}
        described.append({"source": str(source.path), "rows": len(part), "known": known,
                          "values": counts, "share": source.share, "weight": source.weight})
    return described
