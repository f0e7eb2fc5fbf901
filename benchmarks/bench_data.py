"""Loader throughput: the organisers'-baseline loader against maskclf's cold and warm epochs.

    python benchmarks/bench_data.py DATA [--size 256 192] [--workers 2] [--limit N]

(a) reference: PIL open + torchvision Resize/ToTensor/Normalize for every image, every epoch;
(b) maskclf's first epoch from an empty decode-once cache as ``maskclf train`` runs it:
    ``build_cache`` (decode + preprocess in threads, then pack) and one epoch from the pack
    (``ratio_cold``); also the plain-loader variant, where the workers fill loose entries
    during the epoch (``ratio_cold_loader``);
(c) a warm epoch (cache hits). maskclf's loaders come from ``make_loader``, which reads
packed images without augmentation in the main process (``--workers`` otherwise).
Same images, batch size and normalisation (maskclf's
loader yields uint8; its batch normalisation, done by the model step on the device, is timed
here on the CPU unless --device-normalize); no random augmentation on either side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from maskclf.config import AugConfig, DataConfig, RunConfig, TrainConfig
from maskclf.data.cache import DecodeCache, build_cache
from maskclf.data.dataset import ImageDataset
from maskclf.data.layout import read_train
from maskclf.data.loaders import make_loader
from maskclf.data.transforms import build_transforms

BATCH = 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class BaselineDataset(Dataset):
    """Written like the organisers' baseline: PIL decode and torchvision per item."""

    def __init__(self, paths: list[Path], size: tuple[int, int]):
        self.paths = paths
        self.transform = transforms.Compose([transforms.Resize(size), transforms.ToTensor(),
                                             transforms.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(Image.open(self.paths[index]).convert("RGB")), 0


def epoch_seconds(loader: DataLoader, normalize=None) -> float:
    started = time.perf_counter()
    for images, _ in loader:
        if normalize is not None:
            images = normalize(images)
    return time.perf_counter() - started


def _batch_normalizer():
    mean = 255 * torch.tensor(MEAN).view(1, 3, 1, 1)
    std = 255 * torch.tensor(STD).view(1, 3, 1, 1)
    return lambda images: images.permute(0, 3, 1, 2).float().sub_(mean).div_(std)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("H", "W"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--device-normalize", action="store_true",
                        help="leave maskclf's batch normalisation out of the timing, as on a "
                             "GPU where the model step does it on the device")
    args = parser.parse_args()
    rel_paths = read_train(args.data, check_images=False)["path"].tolist()[: args.limit]
    size = tuple(args.size)
    count = len(rel_paths)
    normalize = None if args.device_normalize else _batch_normalizer()
    reference = count / epoch_seconds(DataLoader(
        BaselineDataset([args.data / p for p in rel_paths], size), batch_size=BATCH,
        num_workers=args.workers))

    def maskclf_loader(cache_dir: str) -> DataLoader:
        """maskclf's own loader (``make_loader`` picks its workers) over a fresh dataset."""
        cfg = RunConfig(data=DataConfig(image_size=size, crop="none", cache="disk",
                                        cache_dir=Path(cache_dir), num_workers=args.workers),
                        train=TrainConfig(batch_size=BATCH))
        dataset = ImageDataset(args.data, rel_paths, None, cfg.data,
                               build_transforms(AugConfig(), False),
                               disk=DecodeCache(Path(cache_dir), cfg.data))
        return make_loader(dataset, cfg)

    with tempfile.TemporaryDirectory() as cache_dir:
        cold_loader = count / epoch_seconds(maskclf_loader(cache_dir), normalize)
    with tempfile.TemporaryDirectory() as cache_dir:
        started = time.perf_counter()
        build_cache(args.data, maskclf_loader(cache_dir).dataset.data_cfg, rel_paths)
        build = time.perf_counter() - started
        loader = maskclf_loader(cache_dir)
        cold = count / (build + epoch_seconds(loader, normalize))
        warm = count / epoch_seconds(loader, normalize)
    print(f"images={count} size={size[0]}x{size[1]} workers={args.workers} "
          f"maskclf_normalisation_timed={not args.device_normalize}")
    print(f"reference_baseline_images_per_s={reference:.1f}")
    print(f"maskclf_cold_loader_images_per_s={cold_loader:.1f}")
    print(f"maskclf_cold_images_per_s={cold:.1f} (build_cache {build:.1f}s + first epoch)")
    print(f"maskclf_warm_images_per_s={warm:.1f}")
    print(f"ratio_cold_loader={cold_loader / reference:.2f}")
    print(f"ratio_cold={cold / reference:.2f}")
    print(f"ratio_warm={warm / reference:.2f}")


if __name__ == "__main__":
    main()
