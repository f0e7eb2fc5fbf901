"""Training order and sampling: epoch order as a function of (seed, epoch), per-image
seeds, a balanced sampler and minority oversampling."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from torch.utils.data import Sampler


def derived_seed(*parts: int) -> int:
    """A well-mixed seed from integers (seed, epoch, rank or image index, ...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def sample_weights(keys: pd.Series) -> np.ndarray:
    """Per-row sampling weights that make every distinct value of ``keys`` equally likely."""
    return (1.0 / keys.map(keys.value_counts())).to_numpy(dtype=np.float64)


def oversample(records: pd.DataFrame, factors: dict[int, float], seed: int) -> pd.DataFrame:
    """Repeat rows of class ``c`` about ``factors[c]`` times (fractions drawn at random)."""
    rng = np.random.default_rng(seed)
    pieces = [records]
    for cls, factor in factors.items():  # classes and factors checked by DataConfig
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

    def __init__(self, size: int, seed: int, weights: np.ndarray | None = None,
                 draws: Sequence[tuple[np.ndarray, int]] = ()):
        """``draws``: pools of row indices of which ``count`` are drawn anew each epoch (an
        outside source's share: without repeats while the pool is large enough); every
        other row comes once an epoch."""
        if weights is not None and draws:
            raise ValueError("weighted draws and per-epoch pools do not combine")
        pooled = np.concatenate([pool for pool, _ in draws]) if draws else np.array([], int)
        self.fixed = np.setdiff1d(np.arange(size), pooled)
        self.draws = [(np.asarray(pool), int(count)) for pool, count in draws]
        self.size = len(self.fixed) + sum(count for _, count in self.draws)
        self.seed, self.epoch = seed, 0
        self.weights = None if weights is None else np.asarray(weights) / np.sum(weights)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            order = rng.choice(self.size, size=self.size, p=self.weights)
        else:
            drawn = [rng.choice(pool, size=count, replace=count > len(pool))
                     for pool, count in self.draws]
            order = rng.permutation(np.concatenate([self.fixed, *drawn]))
        return iter([(int(index), self.epoch) for index in order])
