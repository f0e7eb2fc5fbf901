"""Prediction and submission files: writing them atomically and validating them.

``predictions.csv``: ``ImageID``, ``class_0..17`` (probabilities), then the per-attribute
marginals ``mask_0..2``, ``gender_0..1``, ``age_0..2``. ``submission.csv``: ``ImageID,ans``
in the row order of ``eval/info.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import write_csv_set
from maskclf.errors import SubmissionError
from maskclf.labels import CLASS_COLUMNS
from maskclf.tables import check_rows, read_table


@dataclass
class PredictResult:
    """What a prediction wrote, and with which models (checkpoints or ONNX files)."""

    predictions: Path
    submission: Path
    checkpoints: list[Path]
    n_images: int
    person_vote: dict | None = None
    """The person vote's out-of-fold check, whether it was applied, and why not."""


def prediction_table(ids, probs: np.ndarray) -> pd.DataFrame:
    """ImageID + 18 class probabilities + per-attribute marginals."""
    probs = np.asarray(probs, dtype=np.float64)
    table = pd.DataFrame(probs, columns=CLASS_COLUMNS)
    for name, marginal in labels.attribute_marginals(probs).items():
        for i in range(marginal.shape[1]):
            table[f"{name}_{i}"] = marginal[:, i]
    table.insert(0, "ImageID", list(ids))
    return table


def validate_submission(submission: pd.DataFrame, info: pd.DataFrame, source: str = "") -> None:
    """Raise :class:`SubmissionError` unless ids match ``info`` row for row and labels are 0-17."""
    where = f"{source}: " if source else ""
    problems = []
    if list(submission.columns) != ["ImageID", "ans"]:
        problems.append(f"columns are {list(submission.columns)}; expected ['ImageID', 'ans']")
    elif len(submission) != len(info):
        problems.append(f"{len(submission)} rows; info.csv has {len(info)}")
    else:
        mismatched = np.flatnonzero(submission["ImageID"].to_numpy() != info["ImageID"].to_numpy())
        if len(mismatched):
            first = mismatched[0]
            problems.append(f"{len(mismatched)} row(s) not in info.csv order; first at row "
                            f"{first + 1}: {submission['ImageID'].iloc[first]!r} where info.csv "
                            f"has {info['ImageID'].iloc[first]!r}")
        answers = pd.to_numeric(submission["ans"], errors="coerce")
        bad = ~answers.isin(range(labels.NUM_CLASSES))
        if bad.any():
            problems.append(f"{int(bad.sum())} label(s) outside 0-17, first "
                            f"{submission['ans'][bad].iloc[0]!r}")
    if problems:
        raise SubmissionError(where + "; ".join(problems))


def checked_submission(ids, classes, info: pd.DataFrame, path: Path | str) -> pd.DataFrame:
    """``ImageID,ans`` for ``path``, validated against ``info`` (raises before any write)."""
    submission = pd.DataFrame({"ImageID": list(ids), "ans": np.asarray(classes, dtype=int)})
    validate_submission(submission, info, str(path))
    return submission


def write_predictions_and_submission(predictions: Path, submission: Path, info: pd.DataFrame,
                                     probs: np.ndarray, decided: np.ndarray,
                                     **columns) -> None:
    """``predictions.csv`` (the probabilities of ``info``'s images, ``submitted`` = the
    decided class, plus ``columns``) and ``submission.csv`` (validated against ``info``
    before anything is written) as one set: never a new one beside an old one."""
    table = prediction_table(info["ImageID"], probs).assign(submitted=decided, **columns)
    write_csv_set({predictions: table,
                   submission: checked_submission(info["ImageID"], decided, info, submission)})


def oof_table(ids, probs: np.ndarray, folds, classes, persons, unknown=None) -> pd.DataFrame:
    """The out-of-fold table, built here only: a prediction table (``ImageID`` = the
    training image's path) plus ``fold``, ``class`` (the true label) and ``person``; and
    ``unknown`` (``labels.UNKNOWN_COLUMN``: the bits of the attributes a row's label does not
    know) when ``data.corrections`` made any unknown."""
    table = prediction_table(ids, probs).assign(
        fold=np.asarray(folds, dtype=int), **{"class": np.asarray(classes, dtype=int)},
        person=np.asarray(persons, dtype=str))
    if unknown is not None and np.any(np.asarray(unknown) > 0):
        table[labels.UNKNOWN_COLUMN] = np.asarray(unknown, dtype=int)
    return table


def oof_persons(oof: pd.DataFrame) -> pd.Series:
    """The person of each OOF row: its ``person`` column; files written before that column
    existed name it by the folder the image sits in (``train/images/<person>/``)."""
    if "person" in oof.columns:
        return oof["person"].astype(str)
    return oof["ImageID"].map(lambda path: Path(path).parent.name)


def read_submission(path: Path | str, columns: tuple[str, ...] = ("ImageID",)) -> pd.DataFrame:
    """A submission (or, for callers that accept either, a prediction file) with rows."""
    return check_rows(read_table(path, columns, "submission", dtype={"ImageID": str}),
                      path, "submission")
