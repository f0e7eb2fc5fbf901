"""Decode-once cache: each image is decoded and preprocessed once, then read from disk.

Entries are ``.npy`` files of the preprocessed uint8 image (crop + resize to the network
size), named by a hash of the file's path, size and modification time, inside a folder
named by a hash of the preprocessing settings. A changed file gets a new key and a
changed setting a new folder, so only what changed is rebuilt. Entries are written to a
temporary name and renamed, so several loader workers or DDP ranks may fill the cache at
once and a reader never sees a partial entry. Reads are memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from maskclf.atomic import atomic_write
from maskclf.config import DataConfig

CACHE_VERSION = 1
CACHE_DIRNAME = ".maskclf-cache"


def settings_key(cfg: DataConfig) -> str:
    """Hash of every setting that changes the preprocessed pixels."""
    settings = {"version": CACHE_VERSION, "image_size": list(cfg.image_size), "crop": cfg.crop,
                "crop_fraction": cfg.crop_fraction, "face_margin": cfg.face_margin}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def file_key(path: Path) -> str:
    """Hash of a file's absolute path, size and modification time (nanoseconds)."""
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()


def cache_root(data_root: Path, cfg: DataConfig) -> Path:
    """``cfg.cache_dir``, else DATA/.maskclf-cache, else (read-only data) ~/.cache/maskclf/..."""
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    beside = Path(data_root) / CACHE_DIRNAME
    if os.access(beside if beside.exists() else Path(data_root), os.W_OK):
        return beside
    digest = hashlib.sha1(str(Path(data_root).resolve()).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "maskclf" / digest


def open_cache(data_root: Path, cfg: DataConfig, n_images: int) -> DecodeCache | None:
    """The disk cache ``cfg.cache`` asks for (``auto``: when it fits), else None."""
    if cfg.cache in ("none", "memory"):
        return None
    root = cache_root(data_root, cfg)
    if cfg.cache == "auto" and not fits_disk(root, n_images, cfg):
        return None
    return DecodeCache(root, cfg)


class DecodeCache:
    """Preprocessed images on disk for one set of preprocessing settings."""

    def __init__(self, root: Path, cfg: DataConfig):
        self.dir = Path(root) / settings_key(cfg)
        self.dir.mkdir(parents=True, exist_ok=True)

    def entry(self, path: Path) -> Path:
        key = file_key(path)
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, path: Path, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached image of ``path``, made (and stored) by ``make()`` on a miss."""
        entry = self.entry(path)
        try:
            return np.load(entry)
        except FileNotFoundError:
            image = np.ascontiguousarray(make())
            atomic_write(entry, lambda tmp: np.save(tmp.open("wb"), image))
            return image

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.dir.rglob("*.npy"))


def estimate_bytes(n_images: int, cfg: DataConfig) -> int:
    height, width = cfg.image_size
    return n_images * (height * width * 3 + 128)


def fits_disk(root: Path, n_images: int, cfg: DataConfig) -> bool:
    """True when the cache would take under ``cfg.cache_max_gb`` and half the free disk."""
    root.mkdir(parents=True, exist_ok=True)
    needed = estimate_bytes(n_images, cfg)
    return needed < cfg.cache_max_gb * 1e9 and needed < shutil.disk_usage(root).free / 2


def warm(load: Callable[[int], np.ndarray], count: int, workers: int | None = None) -> None:
    """Fill the cache by loading every index once, in parallel threads (decoding frees the GIL)."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(load, range(count)):
            pass


def build_cache(data_root: Path | str, cfg: DataConfig, rel_paths: list[str]) -> dict:
    """Decode and preprocess every image once into the disk cache; report its size."""
    from maskclf.data.dataset import ImageDataset

    data_root = Path(data_root)
    cache = DecodeCache(cache_root(data_root, cfg), cfg)
    dataset = ImageDataset(data_root, rel_paths, None, cfg.model_copy(update={"cache": "none"}),
                           transform=None, disk=cache)
    warm(dataset.load, len(dataset))
    return {"dir": str(cache.dir), "images": len(dataset), "bytes": cache.size_bytes()}
