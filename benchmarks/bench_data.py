"""Loader throughput: the organisers'-baseline loader against maskclf's cold and warm epochs.

    python benchmarks/bench_data.py DATA [--size 256 192] [--workers 2] [--limit N]

(a) reference: PIL open + torchvision Resize/ToTensor/Normalize for every image, every epoch;
(b) maskclf's first epoch with an empty decode-once cache (decode + preprocess + store);
(c) a warm epoch (cache hits). Same images, batch size, workers and normalisation (maskclf's
loader yields uint8; its batch normalisation, done by the model step on the device, is timed
here on the CPU); no random augmentation on either side. Prints images/s and the ratios.
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

from maskclf.config import AugConfig, DataConfig
from maskclf.data.cache import DecodeCache
from maskclf.data.dataset import ImageDataset
from maskclf.data.layout import read_train
from maskclf.data.transforms import build_transforms

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


def images_per_second(dataset, workers: int, batch_size: int = 64, normalize=None) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    started = time.perf_counter()
    count = 0
    for images, _ in loader:
        if normalize is not None:
            images = normalize(images)
        count += len(images)
    return count / (time.perf_counter() - started)


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
    reference = images_per_second(BaselineDataset([args.data / p for p in rel_paths], size),
                                  args.workers)
    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = DataConfig(image_size=size, crop="none", cache="disk", cache_dir=Path(cache_dir))
        dataset = ImageDataset(args.data, rel_paths, None, cfg,
                               build_transforms(AugConfig(), train=False),
                               disk=DecodeCache(Path(cache_dir), cfg))
        normalize = None if args.device_normalize else _batch_normalizer()
        cold = images_per_second(dataset, args.workers, normalize=normalize)
        warm = images_per_second(dataset, args.workers, normalize=normalize)
    print(f"images={len(rel_paths)} size={size[0]}x{size[1]} workers={args.workers} "
          f"maskclf_normalisation_timed={not args.device_normalize}")
    print(f"reference_baseline_images_per_s={reference:.1f}")
    print(f"maskclf_cold_images_per_s={cold:.1f}")
    print(f"maskclf_warm_images_per_s={warm:.1f}")
    print(f"ratio_cold={cold / reference:.2f}")
    print(f"ratio_warm={warm / reference:.2f}")


if __name__ == "__main__":
    main()
