"""Imbalance tools: class weights for the loss, a balanced sampler, minority oversampling."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from torch.utils.data import Sampler

from maskclf import labels


def class_weights(counts, mode: str, beta: float = 0.999) -> np.ndarray | None:
    """Per-class loss weights, normalised to average 1 over the classes present.

    ``inverse``: 1 / n_c. ``effective``: (1 - beta) / (1 - beta ** n_c), the "effective
    number of samples" of Cui et al. (2019). Absent classes get weight 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if mode == "none":
        return None
    present = counts > 0
    weights = np.zeros_like(counts)
    if mode == "inverse":
        weights[present] = 1.0 / counts[present]
    elif mode == "effective":
        weights[present] = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
    else:
        raise ValueError(f"loss.class_weights must be none, inverse or effective; got {mode!r}")
    return weights * present.sum() / weights.sum()


def sample_weights(keys: pd.Series) -> np.ndarray:
    """Per-row sampling weights that make every distinct value of ``keys`` equally likely."""
    return (1.0 / keys.map(keys.value_counts())).to_numpy(dtype=np.float64)


def oversample(records: pd.DataFrame, factors: dict[int, float], seed: int) -> pd.DataFrame:
    """Repeat rows of class ``c`` about ``factors[c]`` times (fractions drawn at random)."""
    rng = np.random.default_rng(seed)
    pieces = [records]
    for cls, factor in factors.items():
        if not 0 <= cls < labels.NUM_CLASSES or factor < 1:
            raise ValueError(f"data.oversample: class {cls} factor {factor}; classes are 0-17 "
                             "and factors >= 1")
        rows = records[records["class"] == cls]
        whole, fraction = int(factor) - 1, factor - int(factor)
        pieces += [rows] * whole
        if fraction > 0 and len(rows):
            pieces.append(rows[rng.random(len(rows)) < fraction])
    return pd.concat(pieces, ignore_index=True)


class EpochSampler(Sampler):
    """Training order as a pure function of (seed, epoch): a shuffle, or weighted draws.

    Lightning calls ``set_epoch`` before each epoch. Keys are ``(index, epoch)`` so the
    dataset seeds each image's augmentation the same way, and a resumed run replays exactly
    the epochs an uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int, weights: np.ndarray | None = None):
        self.size, self.seed, self.epoch = size, seed, 0
        self.weights = None if weights is None else np.asarray(weights) / np.sum(weights)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = (rng.permutation(self.size) if self.weights is None
                 else rng.choice(self.size, size=self.size, p=self.weights))
        return iter([(int(index), self.epoch) for index in order])
