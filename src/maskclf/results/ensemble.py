"""Voting over prediction files and submissions, and diffs between them.

Pure functions over files: no model is needed. Inputs are aligned by ImageID (row order
of the first input); inputs with different ImageID sets are an error.

Hard-vote tie rule: among the classes with the most votes, the one chosen by the
earliest-listed input wins (list your best submission first).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import write_csv_set
from maskclf.errors import InputFileError, UsageError
from maskclf.labels import CLASS_COLUMNS
from maskclf.results.submission import prediction_table, read_submission, validate_submission
from maskclf.runs.directory import RunDir
from maskclf.tables import read_prediction_file, read_table

ATTRIBUTE_COLUMNS = {name: [f"{name}_{i}" for i in range(len(values))]
                     for name, values in labels.ATTRIBUTES.items()}


def align(tables: list[pd.DataFrame], sources: list[str]) -> list[pd.DataFrame]:
    """Reorder every table to the first one's ImageID order; different id sets fail."""
    reference = tables[0]["ImageID"]
    if not reference.is_unique:
        raise InputFileError(f"{sources[0]}: ImageIDs repeat")
    aligned = []
    for table, source in zip(tables, sources, strict=True):
        ids = set(table["ImageID"])
        if ids != set(reference) or len(table) != len(reference):
            missing, extra = set(reference) - ids, ids - set(reference)
            raise InputFileError(f"{source} and {sources[0]} hold different ImageIDs: "
                             f"{len(missing)} missing, {len(extra)} extra (e.g. "
                             f"{sorted(missing or extra)[:2]})")
        aligned.append(table.set_index("ImageID").loc[reference].reset_index())
    return aligned


def classes_of(table: pd.DataFrame) -> np.ndarray:
    """Class per row of a submission (``ans``) or a prediction file (argmax)."""
    if "ans" in table.columns:
        return table["ans"].to_numpy(dtype=int)
    return table[CLASS_COLUMNS].to_numpy().argmax(axis=1)


def read_any(path: Path | str) -> pd.DataFrame:
    """A submission (ImageID,ans) or a prediction file, by its columns."""
    table = read_submission(path)
    return table if "ans" in table.columns else read_prediction_file(path)


def soft_vote(paths: list[Path], weights: list[float] | None = None) -> pd.DataFrame:
    """Weighted mean of the 18-class probabilities of prediction files."""
    weights = list(weights or [1.0] * len(paths))
    if len(weights) != len(paths):
        raise UsageError(f"{len(paths)} prediction files but {len(weights)} weights")
    return mean_table([read_prediction_file(p) for p in paths], [str(p) for p in paths],
                      weights)


def mean_table(tables: list[pd.DataFrame], sources: list[str],
               weights: list[float] | None = None) -> pd.DataFrame:
    """Weighted mean of prediction tables over the same ImageIDs (the first one's order)."""
    weights = list(weights or [1.0] * len(tables))
    tables = align(tables, sources)
    probs = sum(w * t[CLASS_COLUMNS].to_numpy() for w, t in zip(weights, tables, strict=True))
    return prediction_table(tables[0]["ImageID"], probs / sum(weights))


def majority(votes: np.ndarray) -> np.ndarray:
    """Row-wise majority of ``votes`` (rows x voters); ties go to the earliest voter."""
    winners = np.empty(len(votes), dtype=int)
    for row, row_votes in enumerate(votes):
        counts = Counter(row_votes.tolist())
        top = max(counts.values())
        winners[row] = next(v for v in row_votes.tolist() if counts[v] == top)
    return winners


def hard_vote(paths: list[Path], per_attribute: bool = False) -> pd.DataFrame:
    """Majority vote of submissions (or prediction files' argmax) -> ImageID,ans.

    ``per_attribute`` votes mask, gender and age separately, then combines them.
    """
    tables = align([read_any(p) for p in paths], [str(p) for p in paths])
    votes = np.stack([classes_of(t) for t in tables], axis=1)
    if per_attribute:
        mask, gender, age = (majority(part) for part in labels.decode_class(votes))
        answer = labels.encode_class(mask, gender, age)
    else:
        answer = majority(votes)
    return pd.DataFrame({"ImageID": tables[0]["ImageID"], "ans": answer})


def soft_vote_per_attribute(paths: list[Path], weights: list[float] | None = None
                            ) -> pd.DataFrame:
    """Average, then decide each attribute on its own marginal -> ImageID,ans."""
    mean = soft_vote(paths, weights)
    parts = [mean[ATTRIBUTE_COLUMNS[name]].to_numpy().argmax(axis=1)
             for name in labels.ATTRIBUTES]
    return pd.DataFrame({"ImageID": mean["ImageID"], "ans": labels.encode_class(*parts)})


def diff(path_a: Path | str, path_b: Path | str, top: int = 10) -> dict:
    """How two submissions or prediction files differ: share, per attribute, transitions."""
    a, b = align([read_any(path_a), read_any(path_b)], [str(path_a), str(path_b)])
    classes_a, classes_b = classes_of(a), classes_of(b)
    changed = classes_a != classes_b
    parts_a, parts_b = labels.decode_class(classes_a), labels.decode_class(classes_b)
    transitions = Counter(zip(classes_a[changed].tolist(), classes_b[changed].tolist(),
                              strict=True))
    return {
        "n": int(len(a)),
        "changed": int(changed.sum()),
        "share": float(changed.mean()) if len(a) else 0.0,
        "attribute_changed": {name: int((pa != pb).sum()) for name, pa, pb in
                              zip(labels.ATTRIBUTES, parts_a, parts_b, strict=True)},
        "transitions": [{"from": f, "to": t, "count": c}
                        for (f, t), c in transitions.most_common(top)],
    }


def write_ensemble(out_dir: Path | str, inputs: list[Path], hard: bool = False,
                   weights: list[float] | None = None, per_attribute: bool = False,
                   info: Path | str | None = None) -> dict:
    """Vote over ``inputs``, then write ``submission.csv`` (and ``predictions.csv`` for
    soft voting); returns what was written.

    Soft voting averages prediction files (``weights`` per file); hard voting counts the
    classes of submissions or prediction files. With ``info`` the submission follows
    ``info.csv``'s order and is validated first.
    """
    if len(inputs) < 2:
        raise UsageError(f"an ensemble needs at least two input files; got {len(inputs)}")
    if hard and weights:
        raise UsageError("--weights apply to soft voting; hard voting counts every input once")
    out_dir = Path(out_dir)
    written = {"mode": "hard" if hard else "soft", "inputs": [str(p) for p in inputs]}
    tables = {}
    if hard:
        submission = hard_vote(inputs, per_attribute)
    else:
        probs = soft_vote(inputs, weights)
        tables[out_dir / RunDir.PREDICTIONS] = probs
        written["predictions"] = str(out_dir / RunDir.PREDICTIONS)
        submission = (soft_vote_per_attribute(inputs, weights) if per_attribute else
                      pd.DataFrame({"ImageID": probs["ImageID"],
                                    "ans": probs[CLASS_COLUMNS].to_numpy().argmax(axis=1)}))
    if info is not None:
        info_table = read_table(info, ["ImageID"], "info file", dtype={"ImageID": str})
        submission = align([submission, info_table[["ImageID"]]], ["ensemble", str(info)])[0]
        submission = submission.set_index("ImageID").loc[info_table["ImageID"]].reset_index()
        validate_submission(submission, info_table, str(out_dir / RunDir.SUBMISSION))
    write_csv_set({**tables, out_dir / RunDir.SUBMISSION: submission})
    return {**written, "submission": str(out_dir / RunDir.SUBMISSION), "n": len(submission)}
