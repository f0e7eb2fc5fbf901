import os

from maskclf.config import AugConfig, DataConfig
from maskclf.data.cache import DecodeCache, build_cache
from maskclf.data.dataset import ImageDataset
from maskclf.data.loaders import loader_workers, make_loader
from maskclf.data.transforms import build_transforms
from tests.conftest import tiny_config


def test_auto_workers_follow_the_usable_cores():
    cores = len(os.sched_getaffinity(0))
    assert loader_workers("auto") == min(8, cores)
    assert loader_workers(3) == 3


def test_packed_unaugmented_data_loads_in_the_main_process(synthetic_root, tmp_path):
    cfg = tiny_config("data.num_workers=2", "data.cache=disk", f"data.cache_dir={tmp_path}")
    paths = [str(p.relative_to(synthetic_root))
             for p in sorted((synthetic_root / "train/images").rglob("*.*"))][:5]

    def dataset(train: bool) -> ImageDataset:
        return ImageDataset(synthetic_root, paths, None, cfg.data,
                            build_transforms(AugConfig(), train=train),
                            disk=DecodeCache(tmp_path, cfg.data))

    assert make_loader(dataset(False), cfg).num_workers == 2  # not cached yet
    build_cache(synthetic_root, DataConfig(**cfg.data.model_dump()), paths)
    assert make_loader(dataset(False), cfg).num_workers == 0
    assert make_loader(dataset(True), cfg).num_workers == 2  # augmentation needs workers
