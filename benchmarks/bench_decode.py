"""Decode speed: maskclf's ``read_rgb`` against PIL and OpenCV on the same files, one core.

    python benchmarks/bench_decode.py DATA [--limit 1000] [--size 256 192]

Prints images/s of (a) PIL open + convert("RGB") (the baseline's decode), (b) OpenCV
imdecode, (c) ``read_rgb`` at full size and (d) ``read_rgb`` with the network size as
``min_size`` (reduced JPEG decoding), and ``ratio_decode`` = (d) / (a).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from maskclf.data.io import read_rgb
from maskclf.data.layout import read_train


def pil(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def opencv(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def images_per_second(decode, paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        decode(path)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("H", "W"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    paths = [args.data / p for p in read_train(args.data, check_images=False)["path"]]
    paths = paths[: args.limit]
    for path in paths[:50]:  # warm the page cache so every decoder reads from memory
        path.read_bytes()
    size = tuple(args.size)
    results = {"pil": images_per_second(pil, paths),
               "opencv": images_per_second(opencv, paths),
               "read_rgb": images_per_second(read_rgb, paths),
               "read_rgb_reduced": images_per_second(lambda p: read_rgb(p, min_size=size), paths)}
    print(f"images={len(paths)} min_size={size[0]}x{size[1]}")
    for name, rate in results.items():
        print(f"{name}_images_per_s={rate:.1f}")
    print(f"ratio_decode={results['read_rgb_reduced'] / results['pil']:.2f}")


if __name__ == "__main__":
    main()
