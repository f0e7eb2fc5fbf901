"""A torch Dataset over rows of the records table (or of ``eval/info.csv``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import numpy as np
from torch.utils.data import Dataset

from maskclf.config import DataConfig
from maskclf.data.cache import DecodeCache, file_keys
from maskclf.data.faces import require_detector
from maskclf.data.sampling import derived_seed
from maskclf.data.transforms import centre_crop, decode_preprocessed


class ImageDataset(Dataset):
    """Yields ``(uint8 H x W x C array, target)``; target is -1 for unlabelled images. Given
    ``ages`` (years, for an age-regression head), it yields ``(image, target, age)``; given
    ``teacher`` (N x 18 soft targets, for distillation), the image's row comes last.

    A key may be an index or ``(index, epoch)`` (from ``EpochSampler``): the latter seeds the
    image's augmentation from (transform seed, epoch, index), so an epoch's augmented pixels
    are the same whichever worker loads them and whether or not the run was resumed.
    """

    def __init__(self, root: Path | str, paths: Sequence[str], targets: Sequence[int] | None,
                 data_cfg: DataConfig, transform: A.Compose | None,
                 disk: DecodeCache | None = None, ages: Sequence[float] | None = None,
                 teacher: np.ndarray | None = None):
        if targets is not None and len(targets) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(targets)} targets")
        if ages is not None and len(ages) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(ages)} ages")
        if teacher is not None and len(teacher) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(teacher)} teacher rows")
        if data_cfg.crop == "face":
            require_detector(data_cfg.face_detector)
        self.root = Path(root)
        self.paths = list(paths)
        self.targets = None if targets is None else [int(t) for t in targets]
        self.ages = None if ages is None else np.asarray(ages, dtype=np.float32)
        self.teacher = None if teacher is None else np.asarray(teacher, dtype=np.float32)
        self.data_cfg = data_cfg
        self.transform = transform
        self._aug_seed = 0 if transform is None or transform.seed is None else transform.seed
        self._memory: dict[int, np.ndarray] | None = {} if data_cfg.cache == "memory" else None
        self.disk = disk
        # keys once per dataset: a warm read then touches no file but the cache
        self._keys = None if disk is None else file_keys([self.root / p for p in self.paths])

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        """The preprocessed (cropped, resized) uint8 RGB image, before augmentation."""
        if self._memory is not None and index in self._memory:
            return self._memory[index]
        path = self.root / self.paths[index]
        if self.disk is not None:
            image = self.disk.get(self._keys[index], lambda: self.decode(path))
        else:
            image = self.decode(path)
        if self._memory is not None:
            self._memory[index] = image
        return image

    def served_from_packs(self) -> bool:
        """True when every image is a row of a cache pack and needs no per-image work,
        so loader workers would only add inter-process copies."""
        if self.disk is None or self.transform is not None:
            return False
        packed = self.disk.index()
        return all(key in packed for key in self._keys)

    def decode(self, path: Path) -> np.ndarray:
        return decode_preprocessed(path, self.data_cfg)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        image = self.load(index)
        if self.transform is not None:
            if epoch is not None:
                self.transform.set_random_seed(derived_seed(self._aug_seed, epoch, index))
            image = self.transform(image=image)["image"]
        else:  # evaluation: the centre of an image stored with a crop margin
            image = centre_crop(image, self.data_cfg.image_size)
        item = (image, -1 if self.targets is None else self.targets[index])
        if self.ages is not None:
            item += (self.ages[index],)
        if self.teacher is not None:
            item += (self.teacher[index],)
        return item
