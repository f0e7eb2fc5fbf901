"""The data of one fold of one network, as a ``LightningDataModule``.

It owns what a fold trains and validates on: the training rows (every other fold's, less
``data.exclude_ages``, oversampled, with the pseudo-labelled extra rows), their training
targets (``data.age_old_threshold``; a teacher's soft targets with ``distill.teacher``),
the decode-once cache (``prepare_data``, which
Lightning runs once per node before ``fit``), and the loaders of every stage.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from maskclf import labels
from maskclf.config import RunConfig
from maskclf.data.cache import build_cache, open_cache
from maskclf.data.dataset import ImageDataset
from maskclf.data.loaders import make_dataset, make_loader, train_loader
from maskclf.data.sampling import oversample
from maskclf.data.splits import PSEUDO
from maskclf.errors import InputFileError

log = logging.getLogger(__name__)


def training_classes(records: pd.DataFrame, old_from: int) -> np.ndarray:
    """Training targets: the class with the "old" boundary moved to ``old_from`` years, as
    ``labels.partial_code`` (a competition row's is its class id; an outside row's also
    says which attributes it knows and its source).

    Only persons in the middle bucket move, so age corrections are kept; scoring always
    uses ``records["class"]``. An attribute ``data.corrections`` made unknown (the row's
    ``unknown`` bits) is unknown here as an outside row's is.
    """
    moved = (records["age_group"] == 1) & (records["age"] >= old_from)
    values = {"mask": records["mask"].to_numpy(), "gender": records["gender"].to_numpy(),
              "age": np.where(moved, 2, records["age_group"])}
    if labels.UNKNOWN_COLUMN in records:
        bits = records[labels.UNKNOWN_COLUMN].fillna(0).to_numpy(dtype=np.int64)
        values = {name: np.where(bits & labels.UNKNOWN_BITS[name], labels.UNKNOWN, value)
                  for name, value in values.items()}
    source = (records["source"].fillna(0).to_numpy(dtype=np.int64) if "source" in records
              else 0)
    return labels.partial_code(values["mask"], values["gender"], values["age"], source)


def training_rows(records: pd.DataFrame, fold: int, cfg: RunConfig) -> pd.DataFrame:
    """The rows fold ``fold`` trains on: every other fold's (extra rows carry no fold of
    their own), less the persons whose age is in ``data.exclude_ages``, with minority
    classes repeated by ``data.oversample``."""
    rows = records[(records["fold"] != fold)
                   & ~labels.in_age_ranges(records["age"], cfg.data.exclude_ages)]
    return oversample(rows, cfg.data.oversample, cfg.seed)


def excluded_from_training(records: pd.DataFrame, ranges: list) -> dict | None:
    """What ``data.exclude_ages`` leaves out of training (persons and images), for the
    summary; None when nothing is excluded."""
    if not ranges:
        return None
    hit = records[labels.in_age_ranges(records["age"], ranges)]
    return {"ranges": [list(r) for r in ranges], "persons": int(hit["person"].nunique()),
            "images": len(hit)}


def teacher_probs(teacher: pd.DataFrame, paths, source) -> np.ndarray:
    """N x 18 float32 soft targets of ``paths`` in order, from a teacher table indexed by
    image path; an image without a row fails, naming how many and the first."""
    paths = [str(p) for p in paths]
    missing = [p for p in dict.fromkeys(paths) if p not in teacher.index]
    if missing:
        raise InputFileError(f"distill.teacher {source}: no soft targets for {len(missing)} of "
                             f"{len(set(paths))} training image(s), first {missing[0]!r}; the "
                             "teacher must predict every image the run trains on (a k-fold "
                             "run's oof.csv, or `maskclf distill` from one)")
    return teacher.loc[paths].to_numpy(dtype=np.float32)


class FoldDataModule(L.LightningDataModule):
    """Fold ``fold`` of ``records`` (with a ``fold`` column) for a network trained with
    ``cfg``: persons of ``fold`` validate, the others (and ``extra``: pseudo-labelled and
    outside rows) train — for an ``attribute``'s network, those that know it; ``teacher``
    (``results.teacher.read_teacher`` of ``distill.teacher``) gives each training row its soft
    targets."""

    def __init__(self, cfg: RunConfig, root: Path, records: pd.DataFrame, fold: int,
                 extra: pd.DataFrame | None = None, with_ages: bool = False,
                 teacher: pd.DataFrame | None = None, attribute: str | None = None):
        super().__init__()
        self.cfg, self.root, self.fold, self.with_ages = cfg, Path(root), fold, with_ages
        self.records = records
        self.extra = extra if extra is not None else records.iloc[:0]
        val_rows = records[records["fold"] == fold]
        self.val_rows = val_rows.assign(truth=labels.truth_codes(val_rows))
        labelled = pd.concat([records, self.extra.assign(fold=PSEUDO)], ignore_index=True)
        rows = training_rows(labelled.assign(target=training_classes(
            labelled, cfg.data.age_old_threshold)), fold, cfg)
        if attribute is not None:  # an attribute's network: the rows that know it
            known = labels.split_code(rows["target"].to_numpy())[1]
            rows = rows[known[list(labels.ATTRIBUTES).index(attribute)]].reset_index(drop=True)
        self.train_rows = rows
        self.partial_targets = bool(cfg.data.external) or bool(
            labels.UNKNOWN_COLUMN in records and (records[labels.UNKNOWN_COLUMN] > 0).any())
        """Whether a row of this run may not know every attribute (outside rows, labels
        made unknown): the task then reads targets as partial codes."""
        if (teacher is None) != (cfg.distill.teacher is None):
            raise ValueError("distill.teacher and the teacher table come together")
        self.teacher = (None if teacher is None else
                        teacher_probs(teacher, self.train_rows["path"], cfg.distill.teacher))

    @property
    def validates(self) -> bool:
        return len(self.val_rows) > 0

    def class_counts(self) -> labels.ClassCounts:
        """What class weights count: the training targets' classes and attribute values."""
        return labels.ClassCounts.of(self.train_rows["target"])

    def prepare_data(self) -> None:
        """Decode every image of the run once, before the first epoch, so all epochs and
        folds share it (later folds find it cached)."""
        paths = [*self.records["path"], *self.extra["path"]]
        if open_cache(self.root, self.cfg.data, len(paths)) is None:
            return
        started = time.monotonic()
        report = build_cache(self.root, self.cfg.data, paths)
        if report["decoded"]:
            log.info("decode-once cache: %d images, %.1f MB in %s (%.1fs)", report["images"],
                     report["bytes"] / 1e6, report["dir"], time.monotonic() - started)

    def dataset(self, rows: pd.DataFrame, train: bool, targets: str = "class",
                teacher: np.ndarray | None = None) -> ImageDataset:
        return make_dataset(self.cfg, self.root, rows["path"], rows[targets], train,
                            rows["age"] if self.with_ages else None, teacher)

    def draws(self) -> list[tuple[np.ndarray, int]]:
        """Per outside source with a ``share``: its training rows and how many of them each
        epoch draws, so the source makes that share of the epoch. With split BatchNorm
        every source is drawn, as many rows in all as the competition's (the outside half
        of every batch), mixed in the proportions the shares give."""
        sources = self.cfg.data.external
        if not sources or "source" not in self.train_rows:
            return []
        source = self.train_rows["source"].fillna(0).to_numpy()
        present = [(number, s.share) for number, s in enumerate(sources, start=1)
                   if (source == number).any()]
        every_epoch = ~np.isin(source, [number for number, share in present if share])
        epoch = every_epoch.sum() / (1 - sum(share or 0.0 for _, share in present))
        per_epoch = {number: round(share * epoch) if share else int((source == number).sum())
                     for number, share in present}  # what each source gives an epoch
        if not self.split_batchnorm:
            return [(np.flatnonzero(source == number), max(1, per_epoch[number]))
                    for number, share in present if share]
        half = (source == 0).sum() / sum(per_epoch.values())  # as many as the competition's
        return [(np.flatnonzero(source == number), max(1, round(count * half)))
                for number, count in per_epoch.items()]

    @property
    def split_batchnorm(self) -> bool:
        return self.cfg.model.outside_batchnorm == "split"

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.dataset(self.train_rows, True, "target", self.teacher),
                            self.train_rows, self.cfg, self.draws(),
                            in_halves=self.split_batchnorm)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.dataset(self.val_rows, False, "truth"), self.cfg)
