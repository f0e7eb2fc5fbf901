"""Masks drawn onto labelled faces (``maskclf synth-masks``), so a face set's gender and age
reach masked photos.

Each face's five landmarks (eyes, nose tip, mouth corners) come from MTCNN (``faceie``, the
``faces`` extra; nothing is downloaded). A mask is a polygon laid over the lower face in the
face's own frame (eye line and eye-to-mouth distance, so it follows a tilted head), in one
of several shapes, colours and textures:

- ``wear``: from the bridge of the nose (just under the eyes) to below the chin: nose and
  mouth covered;
- ``incorrect``: worn wrong, either under the nose (nose out, mouth covered) or down on the
  chin (nose and mouth out).

A face without landmarks is skipped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import atomic_write, write_csv
from maskclf.config import ExternalSource
from maskclf.data.external import IMAGES, LABELS, read_sources
from maskclf.data.io import read_rgb
from maskclf.errors import UsageError
from maskclf.ticker import Ticker

log = logging.getLogger(__name__)

SHAPES = ("surgical", "cloth", "pointed")
COLOURS = ((120, 180, 235), (245, 245, 245), (30, 30, 35), (40, 150, 150), (60, 70, 160),
           (200, 120, 150))
PLACEMENTS = {"wear": ("covering",), "incorrect": ("nose_out", "chin")}
SHEET = "contact.png"


@dataclass(frozen=True)
class Landmarks:
    """Five points (x, y) in image pixels."""

    left_eye: np.ndarray
    right_eye: np.ndarray
    nose: np.ndarray
    mouth_left: np.ndarray
    mouth_right: np.ndarray

    @classmethod
    def of(cls, values) -> Landmarks:
        """From MTCNN's ten numbers: (x, y) of each point in that order."""
        points = np.asarray(values, dtype=np.float64).reshape(5, 2)
        return cls(*points)

    def frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """The face's own axes: the eyes' midpoint, a unit vector along the eye line (to the
        image's right), one down the face, and the eye-to-mouth distance."""
        eyes = (self.left_eye + self.right_eye) / 2
        across = self.right_eye - self.left_eye
        across = across / max(np.linalg.norm(across), 1e-6)
        down = np.array([-across[1], across[0]])
        mouth = (self.mouth_left + self.mouth_right) / 2
        return eyes, across, down, max(float((mouth - eyes) @ down), 1.0)


def face_landmarks(image: np.ndarray) -> Landmarks | None:
    """The largest face's landmarks in an RGB image, or None (MTCNN, upright faces)."""
    from faceie.mtcnn import detect_faces
    from PIL import Image

    found = detect_faces(Image.fromarray(image), rotations=np.zeros(1), extract_images=None)
    if not len(found.bounding_boxes):
        return None
    boxes = np.asarray(found.bounding_boxes, dtype=np.float64)
    largest = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    return Landmarks.of(found.landmarks[largest])


def mask_polygon(points: Landmarks, placement: str, shape: str) -> np.ndarray:
    """The mask's outline (N x 2 image pixels) for a placement and shape. Heights are in
    eye-to-mouth distances (d) below the eye line: the nose tip sits near 0.5 d, the mouth
    at 1 d, the chin near 1.6 d."""
    eyes, across, down, d = points.frame()
    half = float(np.linalg.norm(points.right_eye - points.left_eye)) * 0.95
    top, bottom = {"covering": (0.35, 1.75), "nose_out": (0.7, 1.8),
                   "chin": (1.25, 2.0)}[placement]
    if shape == "surgical":
        outline = [(-half, top), (half, top), (half * 0.95, bottom), (-half * 0.95, bottom)]
    elif shape == "cloth":
        arc = np.linspace(0, np.pi, 12)
        outline = [(-half, top), (half, top)] + [
            (half * np.cos(a), bottom - 0.15 + 0.15 * np.sin(a)) for a in arc]
    else:  # pointed: a ridge down the middle, like an N95
        outline = [(-half, top + 0.1), (0.0, top - 0.05), (half, top + 0.1),
                   (half * 0.85, bottom - 0.1), (0.0, bottom), (-half * 0.85, bottom - 0.1)]
    return np.array([eyes + across * x + down * (y * d) for x, y in outline])


def draw_mask(image: np.ndarray, points: Landmarks, placement: str, shape: str,
              colour: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """``image`` with a mask drawn: the polygon filled with ``colour``, a fabric texture
    (pleats or noise) and a soft shade, edges anti-aliased."""
    out = image.copy()
    polygon = np.round(mask_polygon(points, placement, shape) * 4).astype(np.int32)
    cover = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(cover, [polygon], 255, lineType=cv2.LINE_AA, shift=2)
    fabric = np.empty_like(image, dtype=np.float32)
    fabric[:] = colour
    fabric *= rng.uniform(0.9, 1.05, size=image.shape[:2])[..., None]  # weave
    if shape == "surgical":  # horizontal pleats
        rows = np.arange(image.shape[0])[:, None, None]
        fabric *= 0.92 + 0.08 * np.cos(rows * 2 * np.pi / max(4.0, points.frame()[3] / 3))
    alpha = cover.astype(np.float32)[..., None] / 255.0
    blended = alpha * np.clip(fabric, 0, 255) + (1 - alpha) * out.astype(np.float32)
    return blended.round().astype(np.uint8)


def synth_masks(source: Path, out: Path, seed: int = 0, per_face: int = 1) -> dict:
    """Write a new source into ``out``: for each face of ``source`` with landmarks,
    ``per_face`` worn masks and ``per_face`` worn wrong, each a random shape, colour and
    placement, labelled with the face's own gender and age and the drawn mask; a contact
    sheet of the first ones; returns the counts."""
    out = Path(out)
    rows = read_sources([ExternalSource(path=source)], check_images=False)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written, skipped, shown = [], 0, []
    ticker = Ticker("drawing masks", len(rows), log)
    for row in rows.itertuples(index=False):
        image = read_rgb(row.path)
        points = face_landmarks(image)
        if points is None:
            skipped += 1
        else:
            for status in ("wear", "incorrect"):
                for k in range(per_face):
                    shape = SHAPES[rng.integers(len(SHAPES))]
                    placement = PLACEMENTS[status][rng.integers(len(PLACEMENTS[status]))]
                    colour = COLOURS[rng.integers(len(COLOURS))]
                    drawn = draw_mask(image, points, placement, shape, colour, rng)
                    name = f"{Path(row.path).stem}-{status}{k}.png"
                    save_png(out / IMAGES / name, drawn)
                    written.append({"file": name, "mask": status,
                                    "gender": _name(labels.GENDER_NAMES, row.gender),
                                    "age": "" if row.age < 0 else str(int(row.age))})
                    if len(shown) < 24:
                        shown.append(drawn)
        ticker.tick()
    if not written:
        raise UsageError(f"no face of {source} gave landmarks: nothing to draw on")
    write_csv(pd.DataFrame(written), out / LABELS)
    _contact_sheet(shown, out / SHEET)
    return {"source": str(source), "out": str(out), "faces": len(rows),
            "skipped_without_landmarks": skipped, "images": len(written),
            "sheet": str(out / SHEET)}


def _name(names: tuple[str, ...], value: int) -> str:
    return "" if value < 0 else names[int(value)]


def _contact_sheet(images: list[np.ndarray], path: Path, side: int = 128) -> None:
    tiles = [cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA) for image in images]
    tiles += [np.full((side, side, 3), 255, np.uint8)] * (-len(tiles) % 6)
    save_png(path, np.vstack([np.hstack(tiles[i:i + 6]) for i in range(0, len(tiles), 6)]))


def save_png(path: Path, rgb: np.ndarray) -> None:
    """An RGB image as a PNG file, written atomically."""
    encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    atomic_write(path, lambda tmp: tmp.write_bytes(encoded))
