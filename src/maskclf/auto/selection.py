"""Greedy ensemble selection with replacement (Caruana et al., 2004) over out-of-fold
probabilities, maximising macro F1, with the choice checked on persons it was not fitted on.

The greedy path starts from the best member and, at each step, adds (again, if it helps
most) the member whose inclusion gives the highest macro F1 of the averaged probabilities;
the ensemble kept is the best point of the path, so on the rows it was fitted on it never
scores below its best member. Whether that gain is real is checked by person-grouped
cross-validation: the whole selection is repeated on the other persons' rows and scored on
the held-out persons, against the best single member chosen the same way; when the
ensemble does not hold up there, the best single member is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold

from maskclf.metrics import macro_f1

CHECK_SPLITS = 5


@dataclass
class Selection:
    weights: np.ndarray
    """One weight per member, summing to 1."""
    path: list[dict]
    """Each greedy step: ensemble size, the member added, macro F1."""
    ensemble_f1: float
    best_member: int
    best_member_f1: float
    check: dict
    """Held-out persons' macro F1 of the selection and of the best single member."""
    used_ensemble: bool


def _f1(y: np.ndarray, probs: np.ndarray) -> float:
    return macro_f1(y, probs.argmax(axis=1))


def greedy_path(probs: list[np.ndarray], y: np.ndarray, rounds: int
                ) -> tuple[np.ndarray, list[dict]]:
    """Member counts at the best point of a ``rounds``-step greedy path, and the path."""
    counts = np.zeros(len(probs), dtype=int)
    total = np.zeros_like(probs[0])
    path, best_counts, best_f1 = [], counts, -1.0
    for step in range(rounds):
        scores = [_f1(y, (total + p) / (step + 1)) for p in probs]
        chosen = int(np.argmax(scores))  # ties: the earliest member
        counts, total = counts.copy(), total + probs[chosen]
        counts[chosen] += 1
        path.append({"size": step + 1, "added": chosen, "macro_f1": scores[chosen]})
        if scores[chosen] > best_f1 + 1e-12:
            best_f1, best_counts = scores[chosen], counts
    return best_counts, path


def blend(probs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, probs, strict=True))


def select(probs: list[np.ndarray], y, persons, rounds: int = 20) -> Selection:
    """The ensemble of ``probs`` (one OOF matrix per member, same rows) for labels ``y``,
    checked on held-out ``persons``."""
    y = np.asarray(y, dtype=int)
    singles = [_f1(y, p) for p in probs]
    best = int(np.argmax(singles))
    counts, path = greedy_path(probs, y, rounds)
    weights = counts / counts.sum()
    check = held_out_check(probs, y, np.asarray(persons), rounds)
    used = len(probs) > 1 and check["ensemble_f1"] >= check["best_member_f1"]
    if not used:
        weights = np.eye(len(probs))[best]
    return Selection(weights, path, _f1(y, blend(probs, weights)), best, singles[best],
                     check, used)


def held_out_check(probs: list[np.ndarray], y: np.ndarray, persons: np.ndarray, rounds: int
                   ) -> dict:
    """Selection fitted on some persons' rows, scored on the others' (pooled over splits),
    beside the best single member picked on the same rows."""
    splits = min(CHECK_SPLITS, len(set(persons)))
    if splits < 2:
        return {"splits": 0, "ensemble_f1": 0.0, "best_member_f1": 0.0}
    ensemble, single = np.empty_like(y), np.empty_like(y)
    for fit, held in GroupKFold(n_splits=splits).split(y, y, persons):
        fitted = [p[fit] for p in probs]
        counts, _ = greedy_path(fitted, y[fit], rounds)
        ensemble[held] = blend([p[held] for p in probs], counts / counts.sum()).argmax(axis=1)
        chosen = int(np.argmax([_f1(y[fit], p) for p in fitted]))
        single[held] = probs[chosen][held].argmax(axis=1)
    return {"splits": splits, "ensemble_f1": macro_f1(y, ensemble),
            "best_member_f1": macro_f1(y, single)}
