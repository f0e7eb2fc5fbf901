"""The person vote: group test images into persons and let each person vote gender and age.

In this competition every person has the same number of test photos (7) under hashed ids,
and gender and age are constant per person, so a person's images should agree on them. The
2021 winner embedded the images, grouped them and voted age inside each group. A vote only
helps when the groups really are persons, so it must prove itself first: the same grouping
and vote run on the out-of-fold rows, where persons are known, and it is applied only when
the groups are pure enough and the out-of-fold macro F1 rises beyond noise: the paired
interval of the gain over persons is above zero (:func:`check_vote`, :func:`verdict`).

Grouping is Ward clustering of centred, L2-normalised embeddings into ``n / size``
clusters; the vote is the mean of the members' gender and age probabilities; mask status
stays per image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics.cluster import contingency_matrix
from sklearn.preprocessing import normalize

from maskclf import labels
from maskclf.intervals import Interval, paired_gain
from maskclf.metrics import known_macro_f1


def group_persons(embeddings: np.ndarray, size: int) -> np.ndarray:
    """A group id per row: ``round(n / size)`` Ward clusters of the embeddings, centred
    (pooled ReLU features share one large mean direction that would hide the differences
    between persons) and L2-normalised."""
    n = len(embeddings)
    n_groups = max(1, round(n / size))
    if n_groups >= n:
        return np.arange(n)
    features = np.asarray(embeddings, dtype=np.float64)
    clustering = AgglomerativeClustering(n_clusters=n_groups, linkage="ward")
    return clustering.fit_predict(normalize(features - features.mean(axis=0)))


def purity(groups: np.ndarray, persons: np.ndarray) -> float:
    """Share of rows whose group's most common person is their own (1.0: every group is one
    person's images, though a person may be split over groups)."""
    table = contingency_matrix(persons, groups)
    return float(table.max(axis=0).sum() / table.sum())


def person_vote(probs: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """N x 18 probabilities whose gender and age parts are each group's mean; mask per row."""
    parts = labels.attribute_marginals(np.asarray(probs, dtype=np.float64))
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    for name in ("gender", "age"):
        sums = np.zeros((len(counts), parts[name].shape[1]))
        np.add.at(sums, inverse, parts[name])
        parts[name] = (sums / counts[:, None])[inverse]
    return labels.combine_attributes(parts["mask"], parts["gender"], parts["age"])


@dataclass(frozen=True)
class VoteCheck:
    """The vote tried on out-of-fold rows (grouped within each fold, as the eval set is)."""

    purity: float
    f1_before: float
    f1_after: float
    rows: int
    gain: Interval
    """The vote's macro F1 gain, paired over persons, with its 95 % interval."""

    @property
    def f1_change(self) -> float:
        return self.f1_after - self.f1_before

    def to_dict(self) -> dict:
        return {**asdict(self), "f1_change": self.f1_change}  # gain: {value, low, high}


def check_vote(embeddings: np.ndarray, probs: np.ndarray, truth: np.ndarray,
               persons: np.ndarray, folds: np.ndarray, size: int) -> VoteCheck:
    """Group and vote each fold's out-of-fold rows; purity over all of them, macro F1 over
    those whose ``truth`` (``labels.truth_codes``) knows every attribute."""
    voted = np.empty_like(probs, dtype=np.float64)
    group_ids = np.empty(len(probs), dtype=np.int64)
    offset = 0
    for fold in np.unique(folds):
        rows = np.flatnonzero(folds == fold)
        groups = group_persons(embeddings[rows], size)
        voted[rows] = person_vote(probs[rows], groups)
        group_ids[rows] = groups + offset
        offset += groups.max() + 1
    before, after = probs.argmax(axis=1), voted.argmax(axis=1)
    return VoteCheck(purity(group_ids, persons), known_macro_f1(truth, before),
                     known_macro_f1(truth, after), len(probs),
                     paired_gain(truth, persons, before, after))


def verdict(check: VoteCheck, min_purity: float) -> str | None:
    """Why the vote must not be applied, or None when it proved itself."""
    if check.purity < min_purity:
        return (f"groups are not persons: out-of-fold purity {check.purity:.3f} < "
                f"{min_purity} (predict.person_min_purity)")
    if check.gain.verdict != "better":
        return (f"the vote does not help beyond noise: out-of-fold macro F1 "
                f"{check.f1_before:.4f} -> {check.f1_after:.4f}, gain "
                f"{check.gain.text(signed=True)} (95% interval over persons)")
    return None
