"""Face detection over a dataset: boxes CSV, detection rate per mask status, and a grid of
crops to inspect."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import atomic_write, write_csv
from maskclf.config import DataConfig, ExternalSource
from maskclf.data.external import read_sources
from maskclf.data.faces import detect_face, require_detector
from maskclf.data.io import read_rgb
from maskclf.data.layout import read_train
from maskclf.data.transforms import preprocess
from maskclf.ticker import Ticker

log = logging.getLogger(__name__)


def face_report(data_root: Path | str, out_dir: Path | str, cfg: DataConfig,
                limit: int | None = None, grid: int = 8,
                external: list[Path] | None = None) -> dict:
    """Detect faces in the training images (and the first ``limit`` of each ``external``
    source's) with ``cfg.face_detector``; write ``boxes.csv`` and ``faces.png`` (the first
    grid x grid face crops) to out_dir. An image without a face is centre-cropped in
    training: the counts say how many.

    Images are decoded one at a time and dropped after detection, so memory stays flat
    whatever the dataset size.
    """
    require_detector(cfg.face_detector)
    data_root, out_dir = Path(data_root), Path(out_dir)
    records = read_train(data_root, check_images=False).head(limit)
    sources = [ExternalSource(path=folder) for folder in external or []]
    outside = (read_sources(sources, data_root) if sources
               else pd.DataFrame({"path": [], "source": []}))
    outside = outside.groupby("source").head(limit) if limit else outside
    paths = [*records["path"], *outside["path"]]
    ticker = Ticker(f"{cfg.face_detector} face detection", len(paths), log)

    def detect(path: str):
        box = detect_face(read_rgb(data_root / path), cfg.face_detector)
        ticker.tick()
        return box

    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(pool.map(detect, paths))
    boxes = pd.DataFrame([box or (-1, -1, -1, -1) for box in found], columns=["x", "y", "w", "h"])
    boxes.insert(0, "path", paths)
    boxes["found"] = [box is not None for box in found]
    write_csv(boxes, out_dir / "boxes.csv")
    own = boxes.head(len(records))
    by_mask = own["found"].groupby(records["mask"].to_numpy()).mean()
    _write_grid(data_root, records["path"].head(grid * grid), cfg, grid, out_dir / "faces.png")
    by_source = boxes["found"].iloc[len(records):].groupby(outside["source"].to_numpy())
    return {"images": len(own), "detected": int(own["found"].sum()),
            "detection_rate": float(own["found"].mean()) if len(own) else 0.0,
            "detector": cfg.face_detector,
            "detection_rate_by_mask": {labels.MASK_NAMES[int(status)]: float(rate)
                                       for status, rate in by_mask.items()},
            "external": [{"source": str(sources[int(number) - 1].path), "images": len(hits),
                          "detected": int(hits.sum()), "without_face": int((~hits).sum())}
                         for number, hits in by_source],
            "boxes": str(out_dir / "boxes.csv"), "grid": str(out_dir / "faces.png")}


def _write_grid(data_root: Path, paths: pd.Series, cfg: DataConfig, grid: int,
                path: Path) -> None:
    face_cfg = cfg.model_copy(update={"crop": "face"})
    tiles = [preprocess(read_rgb(data_root / p), face_cfg) for p in paths]
    blank = np.zeros((*face_cfg.image_size, 3), np.uint8)
    tiles += [blank] * (grid * grid - len(tiles))
    rows = [np.concatenate(tiles[r * grid:(r + 1) * grid], axis=1) for r in range(grid)]
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode the face grid for {path}")
    atomic_write(path, lambda tmp: tmp.write_bytes(encoded.tobytes()))
