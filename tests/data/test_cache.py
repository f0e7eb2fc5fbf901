import errno
import logging
import os
import pickle
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

from maskclf.config import DataConfig
from maskclf.data import cache as cache_module
from maskclf.data.cache import (
    CacheDiskFull,
    DecodeCache,
    build_cache,
    cache_root,
    file_key,
    fits_disk,
    open_cache,
    settings_key,
    writer_lock,
)
from maskclf.data.dataset import ImageDataset


def _dataset(root, cfg, cache):
    return ImageDataset(root, ["img.jpg"], None, cfg, transform=None, disk=cache)


def _write(path, colour):
    Image.new("RGB", (64, 48), colour).save(path, quality=95)


def test_cache_hit_returns_the_fresh_decode(synthetic_root, tmp_path):
    cfg = DataConfig(image_size=(32, 24), cache="disk", cache_dir=tmp_path / "cache")
    paths = [str(next((synthetic_root / "train/images").rglob("mask1.*"))
                 .relative_to(synthetic_root))]
    cache = DecodeCache(tmp_path / "cache", cfg)
    cached = ImageDataset(synthetic_root, paths, None, cfg, transform=None, disk=cache)
    fresh = ImageDataset(synthetic_root, paths, None, cfg.model_copy(update={"cache": "none"}),
                         transform=None)
    first = np.array(cached.load(0))
    assert len(list(cache.dir.rglob("*.npy"))) == 1
    cached.decode = lambda path: pytest.fail("a cache hit must not decode")
    second = cached.load(0)
    np.testing.assert_array_equal(second, fresh.load(0))
    np.testing.assert_array_equal(first, second)


def test_changed_file_invalidates_only_its_entry(tmp_path):
    cfg = DataConfig(image_size=(16, 16), crop="none", cache="disk")
    _write(tmp_path / "img.jpg", (255, 0, 0))
    cache = DecodeCache(tmp_path / "cache", cfg)
    old_entry = cache.entry(file_key(tmp_path / "img.jpg"))
    assert _dataset(tmp_path, cfg, cache).load(0)[..., 0].mean() > 200
    _write(tmp_path / "img.jpg", (0, 0, 255))
    stat = (tmp_path / "img.jpg").stat()
    os.utime(tmp_path / "img.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.entry(file_key(tmp_path / "img.jpg")) != old_entry
    assert _dataset(tmp_path, cfg, cache).load(0)[..., 2].mean() > 200
    assert old_entry.is_file()  # other entries untouched


def test_pack_serves_the_same_pixels_without_loose_files(synthetic_root, tmp_path):
    cfg = DataConfig(image_size=(32, 24), cache="disk")
    paths = [str(p.relative_to(synthetic_root))
             for p in sorted((synthetic_root / "train/images").rglob("*.*"))][:6]
    cache = DecodeCache(tmp_path / "cache", cfg)
    loose = ImageDataset(synthetic_root, paths, None, cfg, transform=None, disk=cache)
    expected = [np.array(loose.load(i)) for i in range(len(paths))]
    assert cache.pack() == len(paths)
    assert not list(cache.dir.glob("??/*.npy")) and len(list(cache.dir.glob("pack-*.npy"))) == 1
    packed = ImageDataset(synthetic_root, paths[::-1], None, cfg, transform=None,
                          disk=DecodeCache(tmp_path / "cache", cfg))
    packed.decode = lambda path: pytest.fail("a packed image must not be decoded")
    for i, image in enumerate(reversed(expected)):
        np.testing.assert_array_equal(packed.load(i), image)
    # a loader worker gets the cache without the mapped pack (it would copy every image) and
    # maps the pack itself
    pickled = pickle.dumps(packed.disk)
    assert len(pickled) < 32 * 24 * 3
    worker = ImageDataset(synthetic_root, paths, None, cfg, transform=None,
                          disk=pickle.loads(pickled))
    worker.decode = packed.decode
    np.testing.assert_array_equal(worker.load(0), expected[0])


def test_changed_file_after_packing_is_decoded_again(tmp_path):
    cfg = DataConfig(image_size=(16, 16), crop="none", cache="disk")
    _write(tmp_path / "img.jpg", (255, 0, 0))
    cache = DecodeCache(tmp_path / "cache", cfg)
    _dataset(tmp_path, cfg, cache).load(0)
    cache.pack()
    _write(tmp_path / "img.jpg", (0, 0, 255))
    stat = (tmp_path / "img.jpg").stat()
    os.utime(tmp_path / "img.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _dataset(tmp_path, cfg, cache).load(0)[..., 2].mean() > 200


def test_changed_settings_use_another_folder():
    assert settings_key(DataConfig(image_size=(32, 24))) != settings_key(
        DataConfig(image_size=(64, 48)))
    assert settings_key(DataConfig()) == settings_key(DataConfig(num_workers=7))


def test_build_cache_reports_size_and_read_only_data_goes_to_home(synthetic_root, tmp_path,
                                                                   monkeypatch):
    data = shutil.copytree(synthetic_root, tmp_path / "data")
    cfg = DataConfig(image_size=(16, 12), cache="disk")
    paths = [str(p.relative_to(data)) for p in sorted((data / "train/images").rglob("*.*"))][:5]
    report = build_cache(data, cfg, paths)
    assert report["images"] == 5 and report["bytes"] >= 5 * 16 * 12 * 3
    assert len(DecodeCache(data / ".maskclf-cache", cfg).index()) == 5  # packed
    assert cache_root(data, cfg) == data / ".maskclf-cache"
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert str(cache_root(data, cfg)).startswith(str(tmp_path / "home"))
    assert open_cache(data, DataConfig(cache="none"), 5) is None
    assert open_cache(data, DataConfig(cache="auto", cache_max_gb=1e-9), 5) is None


def _build(args):
    root, cfg, paths = args
    return build_cache(root, cfg, paths)["decoded"]


def test_concurrent_builders_decode_each_image_once(synthetic_root, tmp_path):
    import multiprocessing

    cfg = DataConfig(image_size=(16, 12), cache="disk", cache_dir=tmp_path / "cache")
    paths = [str(p.relative_to(synthetic_root))
             for p in sorted((synthetic_root / "train/images").rglob("*.*"))][:20]
    with multiprocessing.get_context("fork").Pool(3) as pool:
        decoded = pool.map(_build, [(synthetic_root, cfg, paths)] * 3)
    assert sorted(decoded) == [0, 0, 20]  # the lock let one writer decode; the others waited
    cache = DecodeCache(tmp_path / "cache", cfg)
    assert len(cache.index()) == 20 and not list(cache.dir.glob("??/*.npy"))


def test_a_file_replaced_with_its_old_mtime_is_decoded_again(tmp_path):
    """``cp -p`` / ``rsync -a`` keep size and mtime; the inode change time still moves."""
    cfg = DataConfig(image_size=(16, 16), crop="none", cache="disk")
    _write(tmp_path / "img.jpg", (255, 0, 0))
    _write(tmp_path / "new.jpg", (0, 0, 255))
    assert (tmp_path / "img.jpg").stat().st_size == (tmp_path / "new.jpg").stat().st_size
    cache = DecodeCache(tmp_path / "cache", cfg)
    assert _dataset(tmp_path, cfg, cache).load(0)[..., 0].mean() > 200
    old = (tmp_path / "img.jpg").stat()
    time.sleep(0.01)
    shutil.copyfile(tmp_path / "new.jpg", tmp_path / "img.jpg")
    os.utime(tmp_path / "img.jpg", ns=(old.st_atime_ns, old.st_mtime_ns))  # as cp -p does
    assert _dataset(tmp_path, cfg, cache).load(0)[..., 2].mean() > 200


@pytest.mark.parametrize("garbage", [b"", b"\x93NUMPY\x01", b"not an array at all"])
def test_a_corrupt_loose_entry_is_a_miss_and_is_rewritten(tmp_path, caplog, garbage):
    cfg = DataConfig(image_size=(16, 16), crop="none", cache="disk")
    _write(tmp_path / "img.jpg", (255, 0, 0))
    cache = DecodeCache(tmp_path / "cache", cfg)
    entry = cache.entry(file_key(tmp_path / "img.jpg"))
    entry.parent.mkdir(parents=True)
    entry.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="maskclf.data.cache"):
        image = _dataset(tmp_path, cfg, cache).load(0)
    assert image[..., 0].mean() > 200 and "unreadable" in caplog.text
    np.testing.assert_array_equal(np.load(entry), image)


def test_build_cache_removes_what_killed_writers_left(synthetic_root, tmp_path):
    cfg = DataConfig(image_size=(16, 12), cache="disk", cache_dir=tmp_path / "cache")
    cache = DecodeCache(tmp_path / "cache", cfg)
    half_pack = cache.dir / ".pack-0123.npy.abc.tmp"
    orphan = cache.dir / "pack-0123456789abcdef.npy"  # killed between the .npy and .keys
    (cache.dir / "ab").mkdir()
    old_loose, fresh_loose = cache.dir / "ab" / ".x.npy.1.tmp", cache.dir / "ab" / ".y.npy.2.tmp"
    for path in (half_pack, orphan, old_loose, fresh_loose):
        path.write_bytes(b"partial")
    os.utime(old_loose, (time.time() - 7200, time.time() - 7200))
    paths = [str(p.relative_to(synthetic_root))
             for p in sorted((synthetic_root / "train/images").rglob("*.*"))][:3]
    build_cache(synthetic_root, cfg, paths)
    assert not half_pack.exists() and not orphan.exists() and not old_loose.exists()
    assert fresh_loose.exists()  # may belong to a loader worker writing right now
    assert len(DecodeCache(tmp_path / "cache", cfg).index()) == 3


def test_a_full_disk_is_a_clear_error_not_a_sigbus(synthetic_root, tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    cfg = DataConfig(image_size=(16, 12), cache="disk", cache_dir=tmp_path / "cache")
    paths = [str(p.relative_to(synthetic_root))
             for p in sorted((synthetic_root / "train/images").rglob("*.*"))][:3]
    with pytest.raises(CacheDiskFull, match=r"no room for the decode cache in .*data.cache"):
        build_cache(synthetic_root, cfg, paths)
    folder = DecodeCache(tmp_path / "cache", cfg).dir
    assert not list(folder.glob("pack-*")) and not list(folder.glob("*.tmp"))


def test_a_waiting_builder_says_who_it_waits_for(tmp_path, caplog):
    held, release = threading.Event(), threading.Event()

    def holder():
        with writer_lock(tmp_path):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    threading.Timer(0.2, release.set).start()
    with caplog.at_level(logging.WARNING, logger="maskclf.data.cache"), writer_lock(tmp_path):
        pass
    thread.join()
    assert "waiting for another maskclf process" in caplog.text and str(tmp_path) in caplog.text


def test_fits_disk_counts_only_images_not_yet_cached(synthetic_root, tmp_path, monkeypatch):
    cfg = DataConfig(image_size=(16, 12), cache="disk", cache_dir=tmp_path / "cache")
    paths = [str(p.relative_to(synthetic_root))
             for p in sorted((synthetic_root / "train/images").rglob("*.*"))][:10]
    needed = cache_module.estimate_bytes(len(paths), cfg)
    free = shutil.disk_usage(tmp_path)._replace(free=needed)  # half of it: too little
    monkeypatch.setattr(shutil, "disk_usage", lambda path: free)
    assert not fits_disk(tmp_path / "cache", len(paths), cfg)
    build_cache(synthetic_root, cfg, paths)
    assert fits_disk(tmp_path / "cache", len(paths), cfg)  # all there: nothing more needed


def test_a_copied_data_folder_finds_its_cache_warm_and_a_changed_image_does_not(tmp_path):
    """Copied without keeping times (``cp -r``): new paths, times and inodes, the same
    images: every key is found; an image whose bytes changed is decoded again."""
    cfg = DataConfig(image_size=(16, 16), crop="none", cache="disk")
    original = tmp_path / "data"
    original.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        _write(original / f"img{i}.jpg", colour)
    names = [f"img{i}.jpg" for i in range(3)]
    build_cache(original, cfg, names)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, copy_function=shutil.copyfile)  # times not kept
    assert (copy / "img0.jpg").stat().st_mtime_ns != (original / "img0.jpg").stat().st_mtime_ns
    assert build_cache(copy, cfg, names)["decoded"] == 0
    _write(copy / "img1.jpg", (9, 9, 9))
    assert build_cache(copy, cfg, names)["decoded"] == 1


def _folder(path, colours):
    path.mkdir(parents=True)
    for i, colour in enumerate(colours):
        _write(path / f"img{i}.jpg", colour)
    return path


def test_outside_images_are_cached_with_their_source_so_a_copied_data_folder_finds_them(
        tmp_path, monkeypatch):
    """A source's images go to the source's cache (beside it; under ~/.cache/maskclf when
    it is read-only), the competition's to the data folder's: a fresh copy of the data
    folder decodes its own images only, and a run reads both caches without decoding."""
    source = _folder(tmp_path / "faces" / "images", [(200, 0, 0), (0, 200, 0)]).parent
    cfg = DataConfig(image_size=(16, 16), crop="none", cache="disk", external=[source])
    data = _folder(tmp_path / "data", [(0, 0, 200), (90, 90, 90), (10, 10, 10)])
    names = [f"img{i}.jpg" for i in range(3)]
    outside = [str((source / "images" / f"img{i}.jpg").resolve()) for i in range(2)]
    report = build_cache(data, cfg, [*names, *outside])
    assert report["decoded"] == 5 and report["sources"] == [
        str(source.resolve() / ".maskclf-cache" / settings_key(cfg))]
    assert len(DecodeCache(data / ".maskclf-cache", cfg).index()) == 3  # its own only
    assert len(DecodeCache(source / ".maskclf-cache", cfg).index()) == 2

    copy = shutil.copytree(data, tmp_path / "copy", ignore=shutil.ignore_patterns(".maskclf-*"))
    assert build_cache(copy, cfg, [*names, *outside])["decoded"] == 3  # not the sources'
    monkeypatch.setattr(ImageDataset, "decode", lambda self, path: pytest.fail(f"decoded {path}"))
    dataset = ImageDataset(copy, [*names, *outside], None, cfg, transform=None,
                           disk=open_cache(copy, cfg, 5))
    assert dataset.served_from_packs()
    assert dataset.load(3).shape == (16, 16, 3) and dataset.load(3)[8, 8, 0] > 150  # red

    # a source marked read-only (chmod a-w; root could still write there): its images go
    # under the home cache
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shutil.rmtree(source / ".maskclf-cache")
    source.chmod(0o555)
    try:
        report = build_cache(copy, cfg, [*names, *outside])
    finally:
        source.chmod(0o755)
    assert report["decoded"] == 2 and report["sources"][0].startswith(str(tmp_path / "home"))
    assert not (source / ".maskclf-cache").exists()


def test_a_cache_that_holds_the_sources_images_is_read_not_rebuilt(tmp_path):
    """Caches made before the sources had their own held outside images in the data
    folder's cache (as data.cache_dir still does): those rows are read, none decoded."""
    source = _folder(tmp_path / "faces" / "images", [(200, 0, 0), (0, 200, 0)]).parent
    data = _folder(tmp_path / "data", [(0, 0, 200)])
    outside = [str((source / "images" / f"img{i}.jpg").resolve()) for i in range(2)]
    together = DataConfig(image_size=(16, 16), crop="none", cache="disk",
                          cache_dir=data / ".maskclf-cache", external=[source])
    assert build_cache(data, together, ["img0.jpg", *outside])["decoded"] == 3
    apart = together.model_copy(update={"cache_dir": None})
    assert build_cache(data, apart, ["img0.jpg", *outside])["decoded"] == 0
    assert not list(source.rglob("pack-*"))  # nothing stored twice
