"""Greedy ensemble selection with replacement (Caruana et al., 2004) over out-of-fold
probabilities, maximising macro F1, with the choice checked on persons it was not fitted on.

Three ways to combine the members are weighed: the best single member; the uniform blend
of the final stage's members (Caruana's "sorted initialisation", the robust default of
averaging the strongest runs); and the greedy path, which starts from the best member and,
at each step, adds (again, if it helps most) the member whose inclusion gives the highest
macro F1 of the averaged probabilities, its best point kept. On a few hundred rows the
greedy path overfits macro F1, so each way is scored by person-grouped cross-validation
(fitted on the other persons' rows, scored on the held-out persons, pooled over the
splits), and the one that scores best there is used — among those that score at least as
well as the best member on all rows, so the ensemble never scores below its best member on
the rows it was chosen on. Ties go to the simpler way (single, then uniform, then greedy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold

from maskclf.metrics import macro_f1

CHECK_SPLITS = 5
WAYS = ("best member", "uniform", "greedy")
"""In order of simplicity: a tie on held-out persons goes to the earlier."""


@dataclass
class Selection:
    weights: np.ndarray
    """One weight per member, summing to 1."""
    way: str
    """Which of ``WAYS`` was used."""
    path: list[dict]
    """Each greedy step: ensemble size, the member added, macro F1."""
    ensemble_f1: float
    best_member: int
    best_member_f1: float
    check: dict
    """Macro F1 of each way on all rows (``fitted``) and on held-out persons."""

    @property
    def used_ensemble(self) -> bool:
        return self.way != "best member"


def _f1(y: np.ndarray, probs: np.ndarray) -> float:
    return macro_f1(y, probs.argmax(axis=1))


def blend(probs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, probs, strict=True))


def greedy_path(probs: list[np.ndarray], y: np.ndarray, rounds: int
                ) -> tuple[np.ndarray, list[dict]]:
    """Weights at the best point of a ``rounds``-step greedy path, and the path."""
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
    return best_counts / best_counts.sum(), path


def _ways(probs: list[np.ndarray], y: np.ndarray, finalists: list[int], rounds: int
          ) -> dict[str, np.ndarray]:
    """Each way's weights fitted on ``(probs, y)``."""
    singles = [_f1(y, p) for p in probs]
    ways = {"best member": np.eye(len(probs))[int(np.argmax(singles))]}
    if len(finalists) >= 2:
        ways["uniform"] = np.bincount(finalists, minlength=len(probs)) / len(finalists)
    if len(probs) >= 2:
        ways["greedy"] = greedy_path(probs, y, rounds)[0]
    return ways


def select(probs: list[np.ndarray], y, persons, rounds: int = 20,
           finalists: list[int] | None = None) -> Selection:
    """The ensemble of ``probs`` (one OOF matrix per member, same rows) for labels ``y``,
    checked on held-out ``persons``; ``finalists`` index the final stage's members."""
    y = np.asarray(y, dtype=int)
    singles = [_f1(y, p) for p in probs]
    best = int(np.argmax(singles))
    ways = _ways(probs, y, finalists or [], rounds)
    fitted = {way: _f1(y, blend(probs, w)) for way, w in ways.items()}
    held = held_out_check(probs, y, np.asarray(persons), rounds, finalists or [])
    eligible = [w for w in WAYS if w in ways and fitted[w] >= singles[best] - 1e-12]
    way = max(eligible, key=lambda w: (held.get(w, -1.0), -WAYS.index(w)))
    _, path = greedy_path(probs, y, rounds)
    return Selection(ways[way], way, path, fitted[way], best, singles[best],
                     {"splits": held.pop("splits"), "fitted": fitted, "held_out": held})


def held_out_check(probs: list[np.ndarray], y: np.ndarray, persons: np.ndarray, rounds: int,
                   finalists: list[int]) -> dict:
    """Each way fitted on some persons' rows and scored on the others' (pooled over a
    person-grouped k-fold)."""
    splits = min(CHECK_SPLITS, len(set(persons)))
    if splits < 2:
        return {"splits": 0}
    decided: dict[str, np.ndarray] = {}
    for fit, held in GroupKFold(n_splits=splits).split(y, y, persons):
        for way, weights in _ways([p[fit] for p in probs], y[fit], finalists, rounds).items():
            decided.setdefault(way, np.empty_like(y))[held] = blend(
                [p[held] for p in probs], weights).argmax(axis=1)
    return {"splits": splits, **{way: macro_f1(y, d) for way, d in decided.items()}}
