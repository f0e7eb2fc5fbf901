"""Offline scoring of predictions: accuracy, macro F1 overall, per attribute and per class.

Macro F1 averages over the classes present in the labels or the predictions (scikit-learn's
default): a class absent from both is not counted, one predicted but absent from the labels
counts as F1 0. torchmetrics' macro F1 used during training counts classes the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from maskclf import labels
from maskclf.atomic import write_csv
from maskclf.errors import InputFileError
from maskclf.tables import check_rows, read_table


def score(y_true, y_pred) -> dict:
    """All figures for 18-class labels ``y_true`` against predictions ``y_pred``."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    parts_true, parts_pred = labels.decode_class(y_true), labels.decode_class(y_pred)
    per_class = f1_score(y_true, y_pred, labels=range(labels.NUM_CLASSES), average=None,
                         zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "attribute_f1": {
            name: float(f1_score(t, p, average="macro", zero_division=0))
            for name, t, p in zip(labels.ATTRIBUTES, parts_true, parts_pred, strict=True)
        },
        "class_f1": [float(v) for v in per_class],
        "class_support": np.bincount(y_true, minlength=labels.NUM_CLASSES).tolist(),
    }


def confusion(y_true, y_pred) -> np.ndarray:
    """18 x 18 confusion matrix (rows: true class, columns: predicted)."""
    return confusion_matrix(y_true, y_pred, labels=range(labels.NUM_CLASSES))


def score_files(submission_path, labels_path) -> dict:
    """Score ``submission.csv`` (ImageID,ans) against a labels file (ImageID,class) by id."""
    tables = {}
    for role, path, column in (("submission", submission_path, "ans"),
                               ("labels", labels_path, "class")):
        table = check_rows(read_table(path, ("ImageID", column), f"{role} file",
                                      dtype={"ImageID": str}), path, f"{role} file")
        tables[role] = table.set_index("ImageID")[column]
    submission, truth = tables["submission"], tables["labels"]
    missing, extra = truth.index.difference(submission.index), submission.index.difference(
        truth.index)
    if len(missing) or len(extra):
        raise InputFileError(f"{submission_path} and {labels_path} hold different ImageIDs: "
                         f"{len(missing)} labelled image(s) not predicted, {len(extra)} "
                         "predicted image(s) without a label")
    return score(truth.to_numpy(), submission.loc[truth.index].to_numpy())


def attribute_confusions(y_true, y_pred) -> dict[str, np.ndarray]:
    """Per-attribute confusion matrices (rows true, columns predicted) of 18-class labels."""
    return {name: confusion_matrix(t, p, labels=range(len(values)))
            for (name, values), t, p in zip(labels.ATTRIBUTES.items(),
                                            labels.decode_class(np.asarray(y_true, dtype=int)),
                                            labels.decode_class(np.asarray(y_pred, dtype=int)),
                                            strict=True)}


def write_confusions(y_true, y_pred, out_dir) -> None:
    """``confusion.csv`` (18 classes) and ``confusion_<attribute>.csv`` in ``out_dir``."""
    out_dir = Path(out_dir)
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    names = labels.class_names()
    write_csv(pd.DataFrame(confusion(y_true, y_pred), index=names, columns=names)
              .rename_axis("true\\predicted").reset_index(), out_dir / "confusion.csv")
    for name, matrix in attribute_confusions(y_true, y_pred).items():
        values = labels.ATTRIBUTES[name]
        write_csv(pd.DataFrame(matrix, index=values, columns=values)
                  .rename_axis("true\\predicted").reset_index(), out_dir / f"confusion_{name}.csv")
