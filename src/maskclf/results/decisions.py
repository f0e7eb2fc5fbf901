"""Decision tuning for macro F1: per-class additive biases on log-probabilities.

Argmax of the probabilities maximises accuracy, not macro F1: rare classes deserve a lower
bar. ``fit_biases`` finds one bias per class by coordinate ascent on OOF predictions;
``cross_validate`` fits on some persons and scores on the others, so the reported gain is
never measured on the rows it was fitted on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold

from maskclf import labels
from maskclf.atomic import write_json
from maskclf.errors import InputFileError, MissingFileError, UsageError
from maskclf.intervals import paired_gain
from maskclf.labels import CLASS_COLUMNS, NUM_CLASSES
from maskclf.metrics import known_truth, macro_f1
from maskclf.results.submission import oof_persons
from maskclf.runs.directory import RunDir
from maskclf.tables import read_prediction_file

log = logging.getLogger(__name__)

DEFAULT_GRID = np.round(np.linspace(-3.0, 3.0, 25), 6)


def apply_biases(probs: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """Class decisions: argmax of log-probability plus bias."""
    return np.argmax(np.log(np.clip(probs, 1e-12, 1.0)) + biases, axis=1)



def bias_design(per: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Class biases as ``design @ parameters``: one parameter per class (``class``), or one
    per attribute value (``attribute``: 3 + 2 + 3, the bias of a class is the sum of its
    mask, gender and age values) — fewer free values, so a few hundred OOF rows suffice."""
    if per == "class":
        return np.eye(num_classes)
    if per != "attribute":
        raise UsageError(f"biases per {per!r}: use class or attribute")
    parts = labels.decode_class(np.arange(num_classes))
    offsets = np.cumsum([0, *list(labels.ATTRIBUTE_SIZES.values())[:-1]])
    design = np.zeros((num_classes, sum(labels.ATTRIBUTE_SIZES.values())))
    for part, offset in zip(parts, offsets, strict=True):
        design[np.arange(num_classes), offset + part] = 1.0
    return design


def fit_biases(probs: np.ndarray, y, grid: np.ndarray = DEFAULT_GRID, rounds: int = 3,
               per: str = "attribute") -> np.ndarray:
    """Per-class biases that raise macro F1 on ``(probs, y)``, by coordinate ascent over
    the parameters of :func:`bias_design`; a change is kept only if it helps.

    Already-optimal predictions therefore keep all-zero biases.
    """
    y = np.asarray(y, dtype=int)
    log_p = np.log(np.clip(probs, 1e-12, 1.0))
    design = bias_design(per, probs.shape[1])
    theta = np.zeros(design.shape[1])
    best = macro_f1(y, np.argmax(log_p, axis=1))
    for _ in range(rounds):
        improved = False
        for index in range(len(theta)):
            for value in grid:
                trial = theta.copy()
                trial[index] = value
                f1 = macro_f1(y, np.argmax(log_p + design @ trial, axis=1))
                if f1 > best + 1e-12:
                    best, theta, improved = f1, trial, True
        if not improved:
            break
    return design @ theta


def cross_validate(probs: np.ndarray, y, groups, n_splits: int = 5, per: str = "attribute"
                   ) -> dict:
    """Macro F1 of plain argmax and of biases fitted on the other groups' (persons') rows,
    the paired interval of the gain over persons, and ``applied``: whether tuning is worth
    its biases — only when that interval is above zero (within noise, plain argmax stays)."""
    y = np.asarray(y, dtype=int)
    groups = np.asarray(groups)
    splits = min(n_splits, len(set(groups)))
    tuned = np.empty_like(y)
    for fit_rows, held_rows in GroupKFold(n_splits=splits).split(probs, y, groups):
        biases = fit_biases(probs[fit_rows], y[fit_rows], per=per)
        tuned[held_rows] = apply_biases(probs[held_rows], biases)
    plain = probs.argmax(axis=1)
    gain = paired_gain(y, groups, plain, tuned)
    return {"plain_macro_f1": macro_f1(y, plain), "tuned_macro_f1": macro_f1(y, tuned),
            "n_splits": splits, "gain": gain.as_dict(), "applied": gain.verdict == "better"}


def tune_biases(probs: np.ndarray, truth, persons, per: str = "attribute"
                ) -> tuple[dict, np.ndarray]:
    """:func:`cross_validate` and, when it is worth it, :func:`fit_biases` on the rows
    whose truth (``labels.truth_codes``) knows every attribute: a label a review made
    unknown neither fits nor judges a bias. Zero biases (plain argmax) otherwise; the
    report counts the rows left out (``unknown_rows``)."""
    classes, _, full = known_truth(truth)
    probs, classes, persons = probs[full], classes[full], np.asarray(persons)[full]
    report = {**cross_validate(probs, classes, persons, per=per),
              "unknown_rows": int((~full).sum())}
    biases = (fit_biases(probs, classes, per=per) if report["applied"]
              else np.zeros(probs.shape[1]))
    return report, biases


def save_biases(run: RunDir, biases: np.ndarray, report: dict) -> Path:
    path = run.file(RunDir.BIASES)
    write_json(path, {"biases": [float(b) for b in biases], **report})
    return path


def load_biases(run_path: Path | str, views: list[str] | None = None) -> np.ndarray:
    """The run's decision biases; a warning when they were fitted on OOF probabilities of
    other test-time views than ``views`` (the biases then shift probabilities they were not
    fitted to)."""
    path = RunDir(run_path).file(RunDir.BIASES)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; run `maskclf tune-decisions "
                               f"{run_path}` first or set predict.tune_decisions: false")
    record = json.loads(path.read_text())
    biases = np.asarray(record["biases"], dtype=float)
    if biases.shape != (NUM_CLASSES,):
        raise InputFileError(f"{path} must hold {NUM_CLASSES} biases; has {biases.shape}")
    fitted = record.get("views")
    if views is not None and fitted is not None and sorted(fitted) != sorted(views):
        log.warning("%s was fitted on %s (TTA views %s) but this prediction uses views %s: "
                    "fit them on matching OOF rows with `maskclf oof %s --tta %s` then "
                    "`maskclf tune-decisions %s --oof-file %s`", path, record.get("oof_file"),
                    fitted or "none", views or "none", run_path, ",".join(views) or "''",
                    run_path, RunDir.oof_name(views))
    return biases


def tune_run(run_path: Path | str, oof_file: str = RunDir.OOF, per: str = "attribute") -> dict:
    """Cross-validate decision tuning on a run's OOF rows; when it helps on held-out
    persons beyond noise, fit on all rows and save the biases, else save zero biases (plain
    argmax). Either way the report says which (``applied``) and the interval behind it."""
    run = RunDir.open(run_path)
    source = run.file(oof_file)
    oof = read_prediction_file(source)
    probs = oof[CLASS_COLUMNS].to_numpy()
    tuned, biases = tune_biases(probs, labels.truth_codes(oof), oof_persons(oof), per=per)
    report = {**tuned, "per": per, "run": str(run.path.resolve()), "oof_file": oof_file,
              "oof_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
              "views": run.oof_views(oof_file)}
    report["file"] = str(save_biases(run, biases, report))
    report["biases"] = [float(b) for b in biases]
    return report
