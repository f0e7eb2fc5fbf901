"""Datasets and DataLoaders for every stage (training, validation, prediction).

Below both training and inference: each builds its loaders here from a config.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from maskclf.config import RunConfig
from maskclf.data.cache import open_cache
from maskclf.data.dataset import ImageDataset
from maskclf.data.sampling import EpochSampler, sample_weights
from maskclf.data.transforms import build_transforms


def make_dataset(cfg: RunConfig, root: Path, paths, targets, train: bool,
                 ages=None, teacher=None) -> ImageDataset:
    """Images of ``paths`` with the run's transforms, read through the decode-once cache
    (with ``ages`` in years when an age-regression head trains, ``teacher`` soft targets
    when a student distils)."""
    crop_to = tuple(cfg.data.image_size) if cfg.data.crop_margin else None
    transform = build_transforms(cfg.aug, train=train, seed=cfg.seed, crop_to=crop_to)
    return ImageDataset(root, paths, targets, cfg.data, transform,
                        disk=open_cache(root, cfg.data, len(paths)), ages=ages,
                        teacher=teacher)


def loader_workers(setting: int | str) -> int:
    """``data.num_workers``, with ``auto`` resolved to the CPU cores this process may use."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, cores or 1)


def make_loader(dataset: ImageDataset, cfg: RunConfig, sampler=None,
                drop_last: bool = False) -> DataLoader:
    """The DataLoader of every stage: workers kept alive, pinned memory on a GPU.

    Images read straight from a cache pack with nothing to augment load in the main
    process: a row copy is cheaper than shipping the batch from a worker.
    """
    workers = 0 if dataset.served_from_packs() else loader_workers(cfg.data.num_workers)
    return DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=sampler,
                      drop_last=drop_last and len(dataset) > cfg.train.batch_size,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())


def train_loader(dataset: ImageDataset, rows: pd.DataFrame, cfg: RunConfig,
                 draws: Sequence[tuple[np.ndarray, int]] = (),
                 in_halves: bool = False) -> DataLoader:
    """Training batches in a (seed, epoch)-determined order, balanced when asked; ``draws``:
    pools drawn anew each epoch (``FoldDataModule.draws``), the second half of every batch
    when ``in_halves``."""
    weights = None
    if cfg.data.sampler == "balanced":
        by = {"class": "target", "age": "age_group"}.get(cfg.data.sampler_by, cfg.data.sampler_by)
        weights = sample_weights(rows[by])
    halves_of = cfg.train.batch_size if in_halves else 0
    sampler = EpochSampler(len(rows), cfg.seed, weights, draws, halves_of=halves_of)
    return make_loader(dataset, cfg, sampler=sampler, drop_last=True)
