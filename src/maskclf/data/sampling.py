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
                 draws: Sequence[tuple[np.ndarray, int]] = (), halves_of: int = 0):
        """``draws``: pools of row indices of which ``count`` are drawn anew each epoch (an
        outside source's share: without repeats while the pool is large enough); every
        other row comes once an epoch. ``halves_of``: a batch size whose every batch is
        half other rows, then half drawn rows (for split BatchNorm); the epoch ends when
        either half runs out."""
        if weights is not None and draws:
            raise ValueError("weighted draws and per-epoch pools do not combine")
        if halves_of % 2 or (halves_of and not draws):
            raise ValueError("batches in halves need an even batch size and pools to draw")
        pooled = np.concatenate([pool for pool, _ in draws]) if draws else np.array([], int)
        self.fixed = np.setdiff1d(np.arange(size), pooled)
        self.draws = [(np.asarray(pool), int(count)) for pool, count in draws]
        drawn = sum(count for _, count in self.draws)
        self.halves_of = halves_of
        self.size = (min(len(self.fixed), drawn) // (halves_of // 2) * halves_of if halves_of
                     else len(self.fixed) + drawn)
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
            order = (self._in_halves(rng.permutation(self.fixed),
                                     rng.permutation(np.concatenate(drawn)))
                     if self.halves_of else rng.permutation(np.concatenate([self.fixed, *drawn])))
        return iter([(int(index), self.epoch) for index in order])

    def _in_halves(self, own: np.ndarray, drawn: np.ndarray) -> np.ndarray:
        """Batch after batch: ``halves_of / 2`` of ``own``, then as many of ``drawn``."""
        half = self.halves_of // 2
        batches = self.size // self.halves_of
        return np.stack([own[:batches * half].reshape(batches, half),
                         drawn[:batches * half].reshape(batches, half)], axis=1).reshape(-1)
