"""Atomic file writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf.errors import UsageError

TMP_SUFFIX = ".tmp"
"""Temporary files are ``.NAME.*.tmp`` beside their target; a killed writer leaves one."""


def fsync_path(path: Path | str) -> None:
    """Flush a file's (or a folder's) data to the disk, so a crash cannot undo a rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temporary(path: Path) -> Path:
    """An empty new file beside ``path``, created with mode 0666 less the umask, as a plain
    ``open`` would (``tempfile.mkstemp`` makes 0600 files, which the rename would keep, and a
    teammate could not read the submission)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def check_target(path: Path | str) -> Path:
    """``path`` as a place to write a file: refused when it is a folder (a rename would fail
    there after the work was done)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give the path of the file to write")
    return path


def check_folder(path: Path | str, flag: str, holds: str) -> Path:
    """``path`` as a folder to write in (``flag`` names the option, ``holds`` what goes
    there): refused when it, or a folder above it, is a file (the work would fail at its
    end, when it writes)."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            where = "" if part == path else f" ({part} is a file)"
            raise UsageError(f"{flag} {path} is not a folder{where}; give a folder for {holds}")
    return path


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over.

    Durable as well as atomic: the file is flushed before the rename and the folder after
    it, so after a power loss a reader finds the old file or the whole new one.
    """
    path = check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def save_array(path: Path | str, array: np.ndarray) -> None:
    """``np.save``, atomically (the file is closed before it is renamed)."""
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.save(handle, array)
    atomic_write(path, write)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_csv(table: pd.DataFrame, path: Path | str) -> None:
    """A table as CSV, atomically, floats with 6 significant digits."""
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g"))


def write_json(path: Path | str, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def write_csv_set(tables: dict[Path, pd.DataFrame]) -> None:
    """Tables that must match each other (predictions and their submission): every old one
    is removed before any new one is written, so a crash part-way leaves files missing,
    never an old file beside a new one. They are removed last-written first, so a file
    (the submission) is never left without the ones written before it."""
    for path in reversed(list(tables)):
        Path(path).unlink(missing_ok=True)
    for path, table in tables.items():
        write_csv(table, path)
