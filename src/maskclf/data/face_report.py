"""Face detection over a dataset: boxes CSV, detection rate, and a grid of crops to inspect."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from maskclf.atomic import write_csv
from maskclf.config import DataConfig
from maskclf.data.faces import detect_face
from maskclf.data.io import read_rgb
from maskclf.data.layout import read_train
from maskclf.data.transforms import preprocess


def face_report(data_root: Path | str, out_dir: Path | str, cfg: DataConfig,
                limit: int | None = None, grid: int = 8) -> dict:
    """Detect faces in the training images; write ``boxes.csv`` and ``faces.png`` to out_dir."""
    data_root, out_dir = Path(data_root), Path(out_dir)
    paths = read_train(data_root, check_images=False)["path"].tolist()[:limit]

    def detect(rel_path: str):
        image = read_rgb(data_root / rel_path)
        return image, detect_face(image)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(detect, paths))
    boxes = pd.DataFrame([(p, *(box or (-1, -1, -1, -1)), box is not None)
                          for p, (_, box) in zip(paths, results, strict=True)],
                         columns=["path", "x", "y", "w", "h", "found"])
    write_csv(boxes, out_dir / "boxes.csv")
    face_cfg = cfg.model_copy(update={"crop": "face"})
    tiles = [preprocess(image, face_cfg) for image, _ in results[: grid * grid]]
    tiles += [np.zeros_like(tiles[0])] * (grid * grid - len(tiles))
    rows = [np.concatenate(tiles[r * grid:(r + 1) * grid], axis=1) for r in range(grid)]
    cv2.imwrite(str(out_dir / "faces.png"), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))
    return {"images": len(paths), "detected": int(boxes["found"].sum()),
            "detection_rate": float(boxes["found"].mean()) if len(boxes) else 0.0,
            "boxes": str(out_dir / "boxes.csv"), "grid": str(out_dir / "faces.png")}
