"""Face boxes from OpenCV's bundled Haar cascade (offline), and crops around them.

The detector ships inside ``opencv-python-headless`` (4.x), so nothing is downloaded.
It misses many masked faces; the crop then falls back to the centre crop, and callers
report the detection rate.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

DETECT_SIDE = 256


MIN_FACE = 24
_local = threading.local()


def _detector() -> cv2.CascadeClassifier:
    """One cascade per thread: a CascadeClassifier is not safe to share between threads."""
    if not hasattr(_local, "detector"):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        _local.detector = cv2.CascadeClassifier(path)
        if _local.detector.empty():
            raise RuntimeError(f"OpenCV could not load its face cascade from {path}; "
                               "install opencv-python-headless<5")
    return _local.detector


def detect_face(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest face as (x, y, w, h) in ``image`` pixels, or None."""
    height, width = image.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(height, width))
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else image
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    if min(gray.shape) < MIN_FACE:
        return None
    min_side = max(MIN_FACE, min(gray.shape) // 8)
    faces = _detector().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4,
                                         minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda box: box[2] * box[3])
    return tuple(int(round(v / scale)) for v in (x, y, w, h))


def face_box(box: tuple[int, int, int, int], height: int, width: int, margin: float,
             aspect: float) -> tuple[int, int, int, int]:
    """(top, left, bottom, right): the face grown by ``margin`` to the target aspect (h/w)."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    side_h = max(h, w * aspect) * (1 + 2 * margin)
    side_w = side_h / aspect
    top, left = int(round(cy - side_h / 2)), int(round(cx - side_w / 2))
    bottom, right = int(round(cy + side_h / 2)), int(round(cx + side_w / 2))
    return max(0, top), max(0, left), min(height, bottom), min(width, right)
