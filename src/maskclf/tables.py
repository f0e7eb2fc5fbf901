"""Reading the CSV files users hand to maskclf, with errors that name the file.

Korean Excel saves CSV as cp949 or UTF-16, other tools use ``;``: pandas then fails with a
bare codec or column error that names no file. ``read_table`` turns each of those into one
:class:`~maskclf.errors.InputFileError` saying which file and how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf.errors import InputFileError, MissingFileError, TableError
from maskclf.labels import CLASS_COLUMNS

RESAVE = "save it as 'CSV UTF-8 (comma delimited)'"


def require_file(path: Path | str, what: str = "file") -> Path:
    """``path`` when it is a file with something in it; else one message saying what the
    path is (missing, a folder, empty) and that a ``what`` was expected."""
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"{what} {path} is a folder; expected a file")
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise InputFileError(f"{what} {path} is empty")
    return path


def read_json_object(path: Path | str, what: str, keys: Sequence[str] = ()) -> dict:
    """A JSON file that must hold an object (with ``keys``): one :class:`InputFileError`
    naming the file when it is cut short, not JSON, or of another shape — a damaged file,
    not a traceback."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{what} {path} is damaged (not JSON: {exc})") from None
    if not isinstance(value, dict):
        raise InputFileError(f"{what} {path} is damaged: a JSON {type(value).__name__}, "
                             "not an object")
    missing = [key for key in keys if key not in value]
    if missing:
        raise InputFileError(f"{what} {path} is damaged: no {', '.join(missing)}")
    return value


def read_table(path: Path | str, columns: Sequence[str] = (), what: str = "file",
               **read_csv) -> pd.DataFrame:
    """``pd.read_csv(path, **read_csv)``, checked: the file exists, is UTF-8 text, parses,
    and holds ``columns``. ``what`` names the file's role in messages."""
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"{what} {path} is a folder; expected a CSV file")
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist")
    problem = _read_problem(path)
    if problem is None:
        try:  # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark
            table = pd.read_csv(path, **{"encoding": "utf-8-sig", **read_csv})
        except (pd.errors.ParserError, ValueError) as exc:
            problem = f"cannot be read as CSV: {exc}"
    if problem is not None:
        raise TableError(what, path, problem)
    missing = [column for column in columns if column not in table.columns]
    if missing:
        found = list(table.columns)
        hint = (f"; its columns are separated by ';', {RESAVE}"
                if len(found) == 1 and ";" in str(found[0]) else "")
        raise TableError(what, path, f"lacks column(s) {missing}; it has "
                         f"{found[:8]}{'...' if len(found) > 8 else ''}{hint}")
    return table


def _read_problem(path: Path) -> str | None:
    """What makes ``path`` unreadable as UTF-8 CSV text, or None."""
    data = path.read_bytes()
    if not data.strip():
        return "is empty (not even a header row)"
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return f"is UTF-16 text; {RESAVE}"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (cp949 from Korean Excel?), byte {exc.start}; {RESAVE}"
    return None


def check_rows(table: pd.DataFrame, path: Path | str, what: str = "file") -> pd.DataFrame:
    """Refuse a table with no rows: every caller needs at least one."""
    if table.empty:
        raise TableError(what, Path(path), "has a header but no rows")
    return table


def check_probabilities(table: pd.DataFrame, columns: Sequence[str], path: Path | str) -> None:
    """Probability columns hold finite numbers from 0 to 1 (no NaN, no text)."""
    values = table[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy()
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputFileError(f"{path}: {int(bad.any(axis=1).sum())} row(s) hold probabilities "
                             f"that are not numbers from 0 to 1, first row {row + 1} "
                             f"{columns[col]}={table[columns[col]].iloc[row]}")


def read_prediction_file(path: Path | str) -> pd.DataFrame:
    """A predictions/OOF file, checked to hold ImageID and 18 class probabilities per row."""
    table = check_rows(read_table(path, ["ImageID", *CLASS_COLUMNS], "prediction file",
                                  dtype={"ImageID": str}), path, "prediction file")
    check_probabilities(table, CLASS_COLUMNS, path)
    return table


def markdown_table(columns: Sequence[object], rows: Iterable[Sequence[object]]) -> list[str]:
    """A markdown table's lines (header, rule, one line per row), every cell as ``str``:
    the one table writer of the reports (run, EDA, auto).

    >>> markdown_table(["a", "b"], [[1, 2.5]])
    ['| a | b |', '| --- | --- |', '| 1 | 2.5 |']
    """
    return ["| " + " | ".join(map(str, columns)) + " |", "|" + " --- |" * len(columns),
            *["| " + " | ".join(map(str, row)) + " |" for row in rows]]

