"""Scoring: the names of the metrics a run logs, and macro F1 — defined once, here.

Macro F1 averages over the classes present in the labels or the predictions (scikit-learn's
default): a class absent from both is not counted, one predicted but absent from the labels
counts as F1 0. torchmetrics' macro F1 used during training counts classes the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from maskclf import labels
from maskclf.errors import InputFileError
from maskclf.intervals import PERSON_COLUMNS, summary_intervals
from maskclf.tables import check_rows, read_table

TRAIN_LOSS_STEP = "train/loss_step"
TRAIN_LOSS = "train/loss_epoch"
TRAIN_ACC = "train/acc"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
VAL_F1 = "val/f1"
"""Validation macro F1: what checkpoints, early stopping, plateau schedules, pruners and
reports follow."""


def macro_f1(y_true, y_pred) -> float:
    """Macro F1 of integer class ids over the classes in ``y_true`` or ``y_pred``.

    Equal to ``f1_score(average="macro", zero_division=0)`` (tested) without its input
    checks: decision tuning scores thousands of candidates, and three bincounts cost a
    few microseconds where ``f1_score`` costs about a millisecond.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    size = max(int(y_true.max(initial=0)), int(y_pred.max(initial=0))) + 1
    true_counts = np.bincount(y_true, minlength=size)
    predicted_counts = np.bincount(y_pred, minlength=size)
    hits = np.bincount(y_true[y_true == y_pred], minlength=size)
    present = (true_counts + predicted_counts) > 0
    if not present.any():
        return 0.0
    return float(np.mean(2 * hits[present] / (true_counts + predicted_counts)[present]))


def known_truth(y_true) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Labels that may not know every attribute (``labels.truth_codes``: class ids, plus
    18 x the unknown bits) as (classes, per attribute the rows that know it, the rows that
    know all three: what the 18-class figures score)."""
    classes, known, _ = labels.split_code(np.asarray(y_true, dtype=np.int64))
    known = dict(zip(labels.ATTRIBUTES, known, strict=True))
    return classes, known, known["mask"] & known["gender"] & known["age"]


def known_macro_f1(y_true, y_pred) -> float:
    """:func:`macro_f1` over the rows whose label knows every attribute
    (``labels.truth_codes``): the 18-class figure of :func:`score`, alone, for the checks
    that choose by it (the person vote, int8)."""
    classes, _, full = known_truth(y_true)
    return macro_f1(classes[full], np.asarray(y_pred, dtype=np.int64)[full])


def score(y_true, y_pred) -> dict:
    """All figures for 18-class labels ``y_true`` against predictions ``y_pred``. A label
    that does not know an attribute (``labels.truth_codes``) leaves that attribute's F1 and
    the 18-class figures; ``unknown`` then counts those rows per attribute."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    y_true, known, full = known_truth(y_true)
    parts_true, parts_pred = labels.decode_class(y_true), labels.decode_class(y_pred)
    per_class = f1_score(y_true[full], y_pred[full], labels=range(labels.NUM_CLASSES),
                         average=None, zero_division=0)
    figures = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true[full], y_pred[full])) if full.any() else 0.0,
        "macro_f1": macro_f1(y_true[full], y_pred[full]),
        "attribute_f1": {
            name: macro_f1(t[known[name]], p[known[name]])
            for name, t, p in zip(labels.ATTRIBUTES, parts_true, parts_pred, strict=True)
        },
        "class_f1": [float(v) for v in per_class],
        "class_support": np.bincount(y_true[full], minlength=labels.NUM_CLASSES).tolist(),
    }
    if not full.all():
        figures["unknown"] = {name: int((~rows).sum()) for name, rows in known.items()}
    return figures


def score_with_interval(y_true, y_pred, persons) -> dict:
    """:func:`score` plus ``interval``: each figure's person-bootstrap interval (persons are
    the unit: one person's photos are not independent)."""
    return {**score(y_true, y_pred), "interval": summary_intervals(y_true, y_pred, persons)}


def confusion(y_true, y_pred) -> np.ndarray:
    """18 x 18 confusion matrix (rows: true class, columns: predicted) of the rows whose
    label knows every attribute (``labels.truth_codes``)."""
    classes, _, full = known_truth(y_true)
    return confusion_matrix(classes[full], np.asarray(y_pred, dtype=int)[full],
                            labels=range(labels.NUM_CLASSES))


def checked_truth(table: pd.DataFrame, path, what: str) -> np.ndarray:
    """A labelled table's truth (``labels.truth_codes``): ``class`` 0-17 in every row and,
    when there, ``unknown`` 0-7 (bits: mask 1, gender 2, age 4), else one line naming the
    file."""
    classes = pd.to_numeric(table["class"], errors="coerce")
    if classes.isna().any() or not classes.between(0, labels.NUM_CLASSES - 1).all():
        raise InputFileError(f"{what} {path}: class must be 0-17 in every row")
    checked = {"class": classes.astype(int)}
    if labels.UNKNOWN_COLUMN in table.columns:
        bits = pd.to_numeric(table[labels.UNKNOWN_COLUMN], errors="coerce")
        if bits.isna().any() or not bits.between(0, 7).all():
            raise InputFileError(f"{what} {path}: {labels.UNKNOWN_COLUMN} must be 0-7 in every "
                                 "row (bits of the attributes it does not know: mask 1, "
                                 "gender 2, age 4)")
        checked[labels.UNKNOWN_COLUMN] = bits.astype(int)
    return labels.truth_codes(pd.DataFrame(checked))


def score_files(submission_path, labels_path) -> dict:
    """Score ``submission.csv`` (ImageID,ans) against a labels file (ImageID,class) by id;
    ``interval`` holds each figure's person-bootstrap interval when the labels name persons
    (a ``person`` or ``person_id`` column), else None."""
    tables = {}
    for role, path, column in (("submission", submission_path, "ans"),
                               ("labels", labels_path, "class")):
        table = check_rows(read_table(path, ("ImageID", column), f"{role} file",
                                      dtype={"ImageID": str}), path, f"{role} file")
        tables[role] = table.set_index("ImageID")
    person = next((c for c in PERSON_COLUMNS if c in tables["labels"].columns), None)
    submission = tables["submission"]["ans"]
    truth = pd.Series(checked_truth(tables["labels"], labels_path, "labels file"),
                      index=tables["labels"].index)
    missing, extra = truth.index.difference(submission.index), submission.index.difference(
        truth.index)
    if len(missing) or len(extra):
        raise InputFileError(f"{submission_path} and {labels_path} hold different ImageIDs: "
                         f"{len(missing)} labelled image(s) not predicted, {len(extra)} "
                         "predicted image(s) without a label")
    predicted = submission.loc[truth.index].to_numpy()
    if person is None:
        return {**score(truth.to_numpy(), predicted), "interval": None}
    return score_with_interval(truth.to_numpy(), predicted,
                               tables["labels"][person].astype(str).to_numpy())


def attribute_confusions(y_true, y_pred) -> dict[str, np.ndarray]:
    """Per-attribute confusion matrices (rows true, columns predicted) of 18-class labels
    (``labels.truth_codes``: each over the rows that know the attribute)."""
    classes, known, _ = known_truth(y_true)
    return {name: confusion_matrix(t[known[name]], p[known[name]], labels=range(len(values)))
            for (name, values), t, p in zip(labels.ATTRIBUTES.items(),
                                            labels.decode_class(classes),
                                            labels.decode_class(np.asarray(y_pred, dtype=int)),
                                            strict=True)}


def confusion_tables(y_true, y_pred) -> dict[str, pd.DataFrame]:
    """The confusion matrices as labelled tables: ``""`` the 18 classes (rows that know
    every attribute), then each attribute by name (rows true, columns predicted);
    ``RunDir`` names their files."""
    names = labels.class_names()
    tables = {"": pd.DataFrame(confusion(y_true, y_pred), index=names, columns=names)}
    for name, matrix in attribute_confusions(y_true, y_pred).items():
        values = labels.ATTRIBUTES[name]
        tables[name] = pd.DataFrame(matrix, index=values, columns=values)
    return {name: table.rename_axis("true\\predicted").reset_index()
            for name, table in tables.items()}
