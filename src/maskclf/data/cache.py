"""Decode-once cache: each image is decoded and preprocessed once, then read from disk.

Images are keyed by a hash of the file's bytes, inside a folder named by a hash of the
preprocessing settings, so a changed image gets a new key and a changed setting a new
folder: only what changed is rebuilt, and a data folder copied, moved or re-extracted (new
paths, times and inodes, the same images) finds its cache warm.

Two tiers. A miss is decoded and stored as a loose ``.npy`` entry, written to a temporary
name and renamed, so several loader workers or DDP ranks may fill the cache at once and a
reader never sees a partial entry. ``build_cache`` (before training, and ``maskclf cache``)
runs one process at a time under a lock on the folder: it moves loose entries into one
memory-mapped ``pack-*.npy`` array with a ``.keys`` list beside it and decodes what is
missing straight into another; a warm read is a row copy from a mapped file, with no file
to open per image.

An outside source's images (``data.external``) are cached with the source
(:func:`cache_homes`), not in the competition folder's cache, so a copied or re-extracted
competition folder finds them warm; a cache reads the sources' packs beside its own.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from maskclf.atomic import TMP_SUFFIX, atomic_write, save_array
from maskclf.config import DataConfig
from maskclf.data.transforms import decode_preprocessed, stored_size
from maskclf.errors import CacheDiskFull
from maskclf.ticker import Ticker

CACHE_VERSION = 3
"""3: images keyed by their bytes (2: by path, size and times; its folders are left as
they are, and this version builds its own beside them)."""
CACHE_DIRNAME = ".maskclf-cache"
log = logging.getLogger(__name__)


def settings_key(cfg: DataConfig) -> str:
    """Hash of every setting that changes the preprocessed pixels."""
    settings = {"version": CACHE_VERSION, "image_size": list(stored_size(cfg)), "crop": cfg.crop,
                "crop_fraction": cfg.crop_fraction, "face_margin": cfg.face_margin}
    if cfg.crop == "face":  # only then: caches of other crops keep their keys
        settings["face_detector"] = cfg.face_detector
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


_KEYS: dict[tuple, str] = {}
"""file_key's memo in this process: (absolute path, size, mtime, ctime) -> key."""


def file_key(path: Path) -> str:
    """Hash of a file's bytes: the same image has the same key wherever it lies and
    whatever its times, and any change to it changes the key. Memoised in the process by
    the file's path, size and times (ns), so a run reads each file once; the change time
    catches a file replaced with its old mtime kept (``cp -p``)."""
    stat = os.stat(path)
    memo = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    key = _KEYS.get(memo)
    if key is None:
        with open(path, "rb") as handle:
            key = _KEYS[memo] = hashlib.sha1(handle.read()).hexdigest()
    return key


def file_keys(paths: list[Path]) -> list[str]:
    """:func:`file_key` of many files, read on threads (hashing releases the GIL): 4,795
    small JPEGs in about 0.7 s on two cores."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(file_key, paths))


def cache_root(data_root: Path, cfg: DataConfig) -> Path:
    """``cfg.cache_dir``, else DATA/.maskclf-cache, else (read-only data) ~/.cache/maskclf/..."""
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    beside = Path(data_root) / CACHE_DIRNAME
    if writable(beside if beside.exists() else Path(data_root)):
        return beside
    digest = hashlib.sha1(str(Path(data_root).resolve()).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "maskclf" / digest


def writable(folder: Path) -> bool:
    """Whether maskclf may write in ``folder``: this process can, and its mode lets someone
    (root can write in a folder marked read-only, ``chmod a-w``, which says: leave it as
    it is)."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def source_homes(cfg: DataConfig) -> list[tuple[Path, Path]]:
    """Each ``data.external`` source's folder (resolved, as its rows' paths are) and its
    own cache root (:func:`cache_root` of the folder: beside it, or under
    ``~/.cache/maskclf`` when it is read-only); none with ``data.cache_dir``, which holds
    everything."""
    if cfg.cache_dir is not None:
        return []
    folders = [Path(source.path).resolve() for source in cfg.external]
    return [(folder, cache_root(folder, cfg)) for folder in folders]


def cache_homes(data_root: Path, cfg: DataConfig) -> list[Path]:
    """Where a run's images are cached: the data folder's cache, then each outside
    source's own (:func:`source_homes`), so every copy of the competition folder shares the
    sources' images."""
    return [cache_root(data_root, cfg), *(root for _, root in source_homes(cfg))]


def open_cache(data_root: Path, cfg: DataConfig, n_images: int) -> DecodeCache | None:
    """The disk cache ``cfg.cache`` asks for (``auto``: when it fits), else None; it reads
    the outside sources' caches too (:func:`cache_homes`)."""
    if cfg.cache in ("none", "memory"):
        return None
    own, *sources = cache_homes(data_root, cfg)
    if cfg.cache == "auto" and not fits_disk(own, n_images, cfg):
        return None
    return DecodeCache(own, cfg, sources)


class DecodeCache:
    """Preprocessed images on disk for one set of preprocessing settings: this cache's
    folder under ``root`` (where misses are stored and packs written), read together with
    the same settings' folders under the ``shared`` roots (the outside sources' caches)."""

    def __init__(self, root: Path, cfg: DataConfig, shared: Sequence[Path] = ()):
        self.dir = Path(root) / settings_key(cfg)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shared = [Path(other) / settings_key(cfg) for other in shared]
        self._index: dict[str, tuple[Path, int]] | None = None
        self._mapped: dict[Path, np.ndarray] = {}

    def __getstate__(self) -> dict:
        # memory maps are reopened in each worker, never pickled (that would copy the pack)
        return {**self.__dict__, "_mapped": {}}

    def entry(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def index(self) -> dict[str, tuple[Path, int]]:
        """file key -> (pack file, row) over every pack of this folder and the shared ones
        (this folder's row where both hold a key)."""
        if self._index is None:
            self._index = {}
            for folder in [*reversed(self.shared), self.dir]:
                for keys_file in sorted(folder.glob("pack-*.keys")):
                    pack = keys_file.with_suffix(".npy")
                    for row, key in enumerate(keys_file.read_text().split()):
                        self._index[key] = (pack, row)
        return self._index

    def _pack_array(self, pack: Path) -> np.ndarray:
        if pack not in self._mapped:
            self._mapped[pack] = np.load(pack, mmap_mode="r")
        return self._mapped[pack]

    def get(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached image for file ``key``, made (and stored) by ``make()`` on a miss."""
        packed = self.index().get(key)
        if packed is not None:
            return np.array(self._pack_array(packed[0])[packed[1]])
        entry = self.entry(key)
        try:
            return np.load(entry)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, EOFError):  # truncated or foreign: a miss, rewritten
            log.warning("cache entry %s is unreadable; decoding the image again", entry)
        image = np.ascontiguousarray(make())
        save_array(entry, image)
        return image

    def write_pack(self, keys: list[str], make_row: Callable[[int], np.ndarray],
                   shape: tuple[int, ...]) -> None:
        """Store ``make_row(i)`` for each of ``keys`` as one new pack, rows made in threads."""
        if not keys:
            return
        name = "pack-" + hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]

        def write_rows(tmp: Path) -> None:
            rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                             shape=(len(keys), *shape))
            reserve(tmp)

            def fill(row: int) -> None:
                rows[row] = make_row(row)

            in_threads(fill, len(keys))
            rows.flush()

        atomic_write(self.dir / f"{name}.npy", write_rows)
        atomic_write(self.dir / f"{name}.keys", lambda tmp: tmp.write_text("\n".join(keys)))
        self._index = None

    def remove_leftovers(self, older_than_s: float = 3600) -> int:
        """Delete what killed writers left: pack temporaries and packs without ``.keys``
        (only writers holding the lock make those), and loose-entry temporaries older
        than ``older_than_s`` (loader workers write those without the lock)."""
        stale = [*self.dir.glob(f".pack-*{TMP_SUFFIX}"),
                 *(pack for pack in self.dir.glob("pack-*.npy")
                   if not pack.with_suffix(".keys").exists())]
        now = time.time()
        stale += [tmp for tmp in self.dir.glob(f"??/.*{TMP_SUFFIX}")
                  if now - tmp.stat().st_mtime > older_than_s]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def pack(self) -> int:
        """Move every loose entry (left by loader workers) into a new pack; returns how many."""
        entries = sorted(self.dir.glob("??/*.npy"))
        if entries:
            shape = np.load(entries[0], mmap_mode="r").shape
            self.write_pack([entry.stem for entry in entries],
                            lambda row: np.load(entries[row]), shape)
            for entry in entries:
                entry.unlink(missing_ok=True)
        return len(entries)

    def size_bytes(self) -> int:
        """Bytes of the images stored in this cache's folder (not the shared ones)."""
        return stored_bytes(self.dir)


def estimate_bytes(n_images: int, cfg: DataConfig) -> int:
    height, width = stored_size(cfg)
    return n_images * (height * width * 3 + 128)


def fits_disk(root: Path, n_images: int, cfg: DataConfig) -> bool:
    """True when the cache would take under ``cfg.cache_max_gb`` and its images not yet
    cached fit in half the free disk."""
    root.mkdir(parents=True, exist_ok=True)
    total = estimate_bytes(n_images, cfg)
    cached = stored_bytes(root / settings_key(cfg))
    return total < cfg.cache_max_gb * 1e9 and total - cached < shutil.disk_usage(root).free / 2


def stored_bytes(folder: Path) -> int:
    """Bytes of the cached images (entries and packs) in one settings folder."""
    return sum(f.stat().st_size for f in folder.rglob("*.npy")) if folder.is_dir() else 0


def reserve(path: Path) -> None:
    """Allocate a (sparse) file's blocks now, so a full disk is an error here rather than a
    SIGBUS when a memory-mapped write reaches the missing block."""
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise CacheDiskFull(f"no room for the decode cache in {path.parent} "
                                f"({os.fstat(handle.fileno()).st_size / 1e6:.0f} MB): free "
                                "disk space, set data.cache_dir to a larger disk, or "
                                "data.cache: none") from None


@contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder`` across processes (runs, DDP ranks), released on exit.

    Waiting is logged: another process building the same cache can take minutes.
    """
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another maskclf process to finish the cache in %s "
                        "(it holds %s)", folder, folder / ".lock")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def in_threads(work: Callable[[int], object], count: int, workers: int | None = None) -> None:
    """Run ``work(i)`` for every i in parallel threads (decoding and I/O free the GIL)."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, range(count)):
            pass


def build_cache(data_root: Path | str, cfg: DataConfig, rel_paths: list[str]) -> dict:
    """Decode and preprocess every image not yet cached straight into a new pack of its
    home (:func:`cache_homes`: an outside source's image goes to the source's cache, the
    rest to the data folder's); report the folders (``dir``, the sources') and their bytes.

    Loose entries left by an earlier plain-loader epoch are packed first, and an image
    packed in any of the homes (an older cache holds the sources' images in the data
    folder's) is not decoded again.
    """
    data_root = Path(data_root)
    homes = cache_homes(data_root, cfg)
    paths = [data_root / rel for rel in rel_paths]
    keys = file_keys(paths)
    owners = source_homes(cfg)
    groups: dict[Path, dict[str, Path]] = {home: {} for home in homes}
    for key, path in zip(keys, paths, strict=True):
        home = next((root for folder, root in owners if path.is_relative_to(folder)), homes[0])
        groups[home][key] = path
    decoded = 0
    for home, images in groups.items():
        if images:
            decoded += _fill(DecodeCache(home, cfg, [h for h in homes if h != home]), images,
                             cfg)
    folders = list(dict.fromkeys(home / settings_key(cfg) for home in homes))
    return {"dir": str(folders[0]), "sources": [str(folder) for folder in folders[1:]],
            "images": len(paths), "decoded": decoded,
            "bytes": sum(stored_bytes(folder) for folder in folders)}


def _fill(cache: DecodeCache, images: dict[str, Path], cfg: DataConfig) -> int:
    """Pack ``images`` (file key -> path) that none of ``cache``'s folders holds into its
    own folder, under its lock; how many were decoded."""
    with writer_lock(cache.dir):  # one writer; others wait, then find their images packed
        cache.remove_leftovers()
        cache.pack()
        cached = cache.index()
        missing = {key: path for key, path in images.items() if key not in cached}
        todo = list(missing.values())
        ticker = Ticker(f"decode-once cache in {cache.dir}", len(todo), log)

        def decode(row: int) -> np.ndarray:
            image = decode_preprocessed(todo[row], cfg)
            ticker.tick()
            return image

        cache.write_pack(list(missing), decode, (*stored_size(cfg), 3))
    return len(todo)
