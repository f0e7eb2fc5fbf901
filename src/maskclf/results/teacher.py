"""A teacher's soft targets for distillation: one row of 18 probabilities per image.

The file ``distill.teacher`` names is a prediction file whose ``ImageID`` is the image's
path as the records table holds it (a training image's ``train/images/...`` path, an extra
row's absolute path): a run's ``oof.csv`` is one, and ``maskclf distill`` writes one from
runs and exports. Every image a run trains on needs its row, checked before training.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from maskclf import labels
from maskclf.config import RunConfig
from maskclf.errors import InputFileError
from maskclf.labels import CLASS_COLUMNS
from maskclf.metrics import score
from maskclf.tables import read_prediction_file


def read_teacher(path: Path | str) -> pd.DataFrame:
    """The teacher file as 18 probability columns indexed by image path, checked."""
    table = read_prediction_file(path)
    repeated = table["ImageID"][table["ImageID"].duplicated()]
    if len(repeated):
        raise InputFileError(f"distill.teacher {path}: {len(repeated)} image(s) appear twice, "
                             f"first {repeated.iloc[0]!r}")
    return table.set_index("ImageID")[CLASS_COLUMNS]


def compare(teacher: pd.DataFrame, oof: pd.DataFrame) -> dict:
    """The teacher's and the student's scores on the student's validation rows (the
    student's oof.csv), for the run's summary and report."""
    truth = labels.truth_codes(oof)
    students = oof[CLASS_COLUMNS].to_numpy().argmax(axis=1)
    rows = oof["ImageID"].astype(str)
    known = rows.isin(teacher.index).to_numpy()
    teachers = teacher.loc[rows[known]].to_numpy().argmax(axis=1)
    parts = {"teacher": score(truth[known], teachers), "student": score(truth[known],
                                                                        students[known])}
    return {"n": int(known.sum()),
            **{f"{who}_macro_f1": s["macro_f1"] for who, s in parts.items()},
            **{f"{who}_attribute_f1": s["attribute_f1"] for who, s in parts.items()}}


def teacher_of(cfg: RunConfig) -> pd.DataFrame | None:
    """The teacher table of a run that distils (``distill.teacher``), else None."""
    return None if cfg.distill.teacher is None else read_teacher(cfg.distill.teacher)
