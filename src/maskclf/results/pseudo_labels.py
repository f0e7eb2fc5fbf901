"""Pseudo-labels: confident eval predictions become an extra training table.

``DIR/extra.csv`` has the records-table columns; ``path`` is absolute, ``person`` is
``pseudo:<ImageID>`` (so no real person is ever split with it) and ``age`` is -1 (unknown).
Runs that list DIR in ``data.extra`` add these rows to every fold's training side only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import write_csv
from maskclf.data.io import is_image_file
from maskclf.data.layout import read_eval
from maskclf.errors import InputFileError, MissingFileError, UsageError
from maskclf.labels import CLASS_COLUMNS
from maskclf.tables import read_prediction_file, read_table

log = logging.getLogger(__name__)

EXTRA_FILE = "extra.csv"
EXTRA_TYPES = {"id": str, "race": str, "age": int, "mask": int, "gender": int, "age_group": int,
               "class": int}
"""Column types, so a table with no confident row still joins the records as integers."""


def pseudo_label(predictions: Path | str, data_root: Path | str, threshold: float,
                 out_dir: Path | str) -> pd.DataFrame:
    """Write the eval images whose top probability is >= ``threshold`` with that class."""
    if not 0 < threshold <= 1:
        raise UsageError(f"threshold must be in (0, 1]; got {threshold}")
    table = read_prediction_file(predictions)
    info = read_eval(data_root, check_images=False)
    unknown = set(table["ImageID"]) - set(info["ImageID"])
    if unknown:
        raise UsageError(f"{predictions} has {len(unknown)} ImageID(s) not in "
                         f"{data_root}/eval/info.csv, e.g. {sorted(unknown)[:2]}")
    probs = table[CLASS_COLUMNS].to_numpy()
    keep = probs.max(axis=1) >= threshold
    if not keep.any():
        log.warning("no image reaches --threshold %s; the most confident is %.3f: lower the "
                    "threshold to keep some", threshold, probs.max() if len(probs) else 0.0)
    chosen = probs.argmax(axis=1)[keep]
    mask, gender, age_group = labels.decode_class(chosen)
    ids = table["ImageID"][keep].to_numpy()
    root = Path(data_root).resolve()
    extra = pd.DataFrame({
        "path": [str(root / "eval" / "images" / i) for i in ids],
        "person": [f"pseudo:{i}" for i in ids], "id": ids, "race": "", "age": -1,
        "mask": mask, "gender": gender, "age_group": age_group, "class": chosen,
        "confidence": probs.max(axis=1)[keep],
    })
    write_csv(extra, Path(out_dir) / EXTRA_FILE)
    return extra


def read_extra(folders: list[Path]) -> pd.DataFrame | None:
    """The pseudo-labelled rows of every folder in ``data.extra`` (None when empty), each
    file checked: its columns, labels that agree with each other, images that exist."""
    if not folders:
        return None
    tables = []
    for folder in folders:
        path = Path(folder) / EXTRA_FILE
        if not path.is_file():
            raise MissingFileError(f"data.extra: {path} does not exist; create it with "
                                    "`maskclf pseudo-label`")
        tables.append(_checked_extra(path))
    return pd.concat(tables, ignore_index=True)


def _checked_extra(path: Path) -> pd.DataFrame:
    columns = ["path", "person", *EXTRA_TYPES]
    table = read_table(path, columns, "data.extra file", dtype=str, keep_default_na=False)
    numbers = table[list(EXTRA_TYPES)[2:]].apply(pd.to_numeric, errors="coerce")
    problems = []
    if numbers.isna().any().any():
        column = numbers.columns[numbers.isna().any()][0]
        problems.append(f"column {column!r} holds a value that is not a whole number")
    else:
        numbers = numbers.astype(int)
        decoded = labels.decode_class(numbers["class"].clip(0, labels.NUM_CLASSES - 1))
        agree = (numbers["class"].between(0, labels.NUM_CLASSES - 1)
                 & (numbers["mask"] == decoded[0]) & (numbers["gender"] == decoded[1])
                 & (numbers["age_group"] == decoded[2]))
        if not agree.all():
            row = int(np.flatnonzero(~agree.to_numpy())[0])
            problems.append(f"row {row + 2}: class {table['class'].iloc[row]!r} is not 0-17 "
                            "or disagrees with its mask/gender/age_group")
    bad_paths = [p for p in table["path"]
                 if not (Path(p).is_absolute() and Path(p).is_file() and is_image_file(Path(p)))]
    if bad_paths:
        problems.append(f"{len(bad_paths)} path(s) are not absolute paths of existing images, "
                        f"first {bad_paths[0]!r}")
    if problems:
        raise InputFileError(f"data.extra file {path}: {'; '.join(problems)}; recreate it with "
                             "`maskclf pseudo-label`")
    return table.astype({**EXTRA_TYPES, "age": int})
