"""Greedy ensemble selection with replacement (Caruana et al., 2004) over out-of-fold
probabilities, maximising macro F1, with the choice checked on persons it was not fitted on.

Three ways to combine the members are weighed: the best single member; the uniform blend
of the final stage's members (Caruana's "sorted initialisation", the robust default of
averaging the strongest runs); and the greedy path, which starts from the best member and,
at each step, adds (again, if it helps most) the member whose inclusion gives the highest
macro F1 of the averaged probabilities, its best point kept. On a few hundred rows the
greedy path overfits macro F1, so each way is scored by person-grouped cross-validation
(fitted on the other persons' rows, scored on the held-out persons, pooled over the
splits). The best member is the default; a blend replaces it only when its held-out gain
over the best member's held-out predictions is beyond noise (the paired interval over
persons above zero) and it scores at least as well as the best member on all rows; among
such blends the best on held-out persons is used, ties to the simpler (uniform, then
greedy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from maskclf.intervals import Interval, paired_gain
from maskclf.labels import CLASS_COLUMNS, truth_codes
from maskclf.metrics import macro_f1
from maskclf.results.submission import oof_persons

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
    """Macro F1 of each way on all rows (``fitted``) and on held-out persons, and each
    blend's held-out gain over the best member with its interval."""

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
    checked on held-out ``persons``; ``finalists`` index the final stage's members.

    The best member is kept unless a blend beats it on held-out persons beyond noise (the
    paired interval of the gain over persons above zero); of the ways that do, the best on
    held-out persons is used, ties to the simpler."""
    y, persons = np.asarray(y, dtype=int), np.asarray(persons)
    singles = [_f1(y, p) for p in probs]
    best = int(np.argmax(singles))
    ways = _ways(probs, y, finalists or [], rounds)
    fitted = {way: _f1(y, blend(probs, w)) for way, w in ways.items()}
    splits, decided = held_out_check(probs, y, persons, rounds, finalists or [])
    held = {way: macro_f1(y, d) for way, d in decided.items()}
    gains = {way: paired_gain(y, persons, decided[WAYS[0]], decided[way])
             for way in decided if way != WAYS[0]}
    beyond = [w for w in WAYS[1:] if w in gains and gains[w].verdict == "better"
              and fitted[w] >= singles[best] - 1e-12]
    way = max(beyond, key=lambda w: (held[w], -WAYS.index(w))) if beyond else WAYS[0]
    _, path = greedy_path(probs, y, rounds)
    return Selection(ways[way], way, path, fitted[way], best, singles[best],
                     {"splits": splits, "fitted": fitted, "held_out": held,
                      "gain_over_best_member": {w: g.as_dict() for w, g in gains.items()}})


def held_out_check(probs: list[np.ndarray], y: np.ndarray, persons: np.ndarray, rounds: int,
                   finalists: list[int]) -> tuple[int, dict[str, np.ndarray]]:
    """Each way fitted on some persons' rows and used on the others' (a person-grouped
    k-fold): the number of splits and each way's held-out predictions of every row."""
    splits = min(CHECK_SPLITS, len(set(persons)))
    if splits < 2:
        return 0, {}
    decided: dict[str, np.ndarray] = {}
    for fit, held in GroupKFold(n_splits=splits).split(y, y, persons):
        for way, weights in _ways([p[fit] for p in probs], y[fit], finalists, rounds).items():
            decided.setdefault(way, np.empty_like(y))[held] = blend(
                [p[held] for p in probs], weights).argmax(axis=1)
    return splits, decided


def survivors(preferred: list[str], scores: dict[str, float], oofs: dict[str, pd.DataFrame],
              count: int) -> tuple[list[str], dict[str, dict]]:
    """The ``count`` candidates that go on from a screening rung, and each one's gap to the
    best with its interval. A candidate the best does not beat beyond noise (paired over
    the persons both validated on) is as good as the best on this evidence, and those go
    on in the preset's order (``preferred``: the reference recipe first), so a cheaper or
    simpler candidate is not dropped for a chance lead; the rest follow by score."""
    ranked = sorted((c for c in preferred if c in scores), key=lambda c: -scores[c])
    if not ranked:
        return [], {}
    best = ranked[0]
    gaps = {}
    for candidate in ranked[1:]:
        shared = oofs[best].merge(oofs[candidate], on="ImageID", suffixes=("", "_other"))
        if shared.empty:
            continue
        gap = paired_gain(truth_codes(shared), oof_persons(shared), shared[
            [f"{c}_other" for c in CLASS_COLUMNS]].to_numpy().argmax(axis=1), shared[
            CLASS_COLUMNS].to_numpy().argmax(axis=1))
        gaps[candidate] = gap.as_dict()
    level = [c for c in preferred if c == best or (c in gaps and Interval(
        **gaps[c]).verdict != "better")]
    return (level + [c for c in ranked if c not in level])[:count], gaps
