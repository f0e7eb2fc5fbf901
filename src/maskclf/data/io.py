"""Image decoding that is fast for the common case and correct for odd files.

RGB and greyscale JPEGs (nearly every competition photo) go through OpenCV, which decodes
them 2-3x faster than PIL on this data (``benchmarks/bench_decode.py``), straight to a
reduced size (1/2, 1/4, 1/8) when the caller needs less than full resolution, and applies
the EXIF orientation itself. Everything else takes the PIL path, which honours EXIF
orientation and turns every mode (L, RGBA, CMYK, I;16, P) into 8-bit RGB.
"""

from __future__ import annotations

import glob
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskclf.errors import ImageTooLarge, InputFileError, MissingFileError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
MAX_PIXELS = 89_478_485
"""Largest image decoded (PIL's own warning threshold, ~9500 x 9500): PIL only warns up to
twice that, and a PNG decodes at full size, so a crafted file could take gigabytes."""


log = logging.getLogger(__name__)


def is_image_file(path: Path) -> bool:
    """True for visible .jpg/.jpeg/.png files in any case; ``._x.jpg`` and dotfiles are not."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB") if image.mode != "RGB" else image


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                  4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def reduction_factor(size: tuple[int, int], min_size: tuple[int, int] | None) -> int:
    """Largest JPEG scale-down (1, 2, 4, 8) that keeps both sides of ``size`` at least
    those of ``min_size``, compared short side to short side so EXIF rotation cannot matter."""
    if min_size is None:
        return 1
    short, long = sorted(size)
    need_short, need_long = sorted(min_size)
    return max((f for f in _REDUCED_FLAGS if short // f >= need_short and long // f >= need_long),
               default=1)


def _decode_jpeg_opencv(data: bytes, factor: int) -> np.ndarray | None:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[factor])
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_png16(data: bytes) -> np.ndarray:
    """A 16-bit greyscale PNG scaled by its full range (65535 -> 255). Through OpenCV:
    Pillow opens these as mode I or I;16 depending on its version, losing the bit depth."""
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    grey = grey[..., 0] if grey.ndim == 3 else grey  # grey + alpha: the grey channel
    scale = 65535.0 if grey.dtype == np.uint16 else 255.0
    grey = np.clip(np.rint(grey.astype(np.float64) / scale * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _decode_pil(image: Image.Image, min_size: tuple[int, int] | None) -> np.ndarray:
    if min_size is not None and image.format == "JPEG":
        image.draft("RGB", (min_size[1], min_size[0]))
    return np.asarray(_to_rgb(ImageOps.exif_transpose(image)))


def read_rgb(path: Path | str, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to an upright H x W x 3 uint8 RGB array.

    ``min_size`` (height, width) lets JPEG decoding skip detail: the result is at least
    that large (when the file is), possibly smaller than the original.
    """
    return decode_rgb(Path(path).read_bytes(), min_size)


def decode_rgb(data: bytes, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """``read_rgb`` for bytes already in memory (an upload). The format comes from the
    content, never a file name; PIL raises ``UnidentifiedImageError`` for a non-image."""
    try:
        opened = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:  # Pillow's own cap, at twice maskclf's
        raise ImageTooLarge(f"{exc}; maskclf decodes at most {MAX_PIXELS:,} pixels") from None
    with opened as image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageTooLarge(f"{width} x {height} pixels is more than maskclf decodes "
                                f"({MAX_PIXELS:,}); shrink it, or remove it if unexpected")
        if image.format == "PNG" and image.mode.startswith("I"):
            return _decode_png16(data)
        if image.format == "JPEG" and image.mode in ("RGB", "L"):
            decoded = _decode_jpeg_opencv(data, reduction_factor(image.size, min_size))
            if decoded is not None:
                return decoded
        return _decode_pil(image, min_size)


def probe_image(path: Path | str, full: bool = False) -> str | None:
    """Decode ``path`` — cheaply (draft mode), or ``full``y, as prediction will — and
    return what is wrong with it, or None."""
    try:
        if Path(path).stat().st_size == 0:
            return "is empty"
        read_rgb(path, min_size=None if full else (8, 8))
    except UnidentifiedImageError:  # its message names a BytesIO object, not the file
        return "is not an image (no format that PIL reads)"
    except Exception as exc:  # noqa: BLE001 - any decode failure is reported, not raised
        return f"cannot be decoded as an image ({type(exc).__name__}: {exc})"
    return None


def unreadable_images(paths: list[Path]) -> dict[Path, str]:
    """The files of ``paths`` that do not decode whole, with the reason (decoded in
    threads)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = dict(zip(paths, pool.map(lambda p: probe_image(p, full=True), paths),
                         strict=True))
    return {path: reason for path, reason in found.items() if reason is not None}


def readable_images(files: list[Path], strict: bool = False, given_as: str = "--images"
                    ) -> tuple[list[Path], dict[Path, str]]:
    """The one reader of a user's image files (``predict --images``, ``explain``): the
    files that decode whole, and the others (damaged, empty, too large) with their reasons,
    each logged; an :class:`InputFileError` naming ``given_as`` (the argument) when none
    decodes, or with ``strict`` when any does not."""
    skipped = unreadable_images(files)
    listed = "; ".join(f"{path}: {reason}" for path, reason in list(skipped.items())[:10])
    more = f" (and {len(skipped) - 10} more)" if len(skipped) > 10 else ""
    if skipped and (strict or len(skipped) == len(files)):
        what = ("none of the" if len(skipped) == len(files) else
                f"{len(skipped)} of the")
        raise InputFileError(f"{given_as}: {what} {len(files)} images can be read"
                             f"{' (--strict)' if strict else ''}: {listed}{more}")
    for path, reason in skipped.items():
        log.warning("skipped %s: %s", path, reason)
    return [f for f in files if f not in skipped], skipped


def collect_images(sources: list[str]) -> list[Path]:
    """Image files named by ``sources`` — files, folders (searched recursively) and glob
    patterns — as sorted, unique absolute paths; a clear error for a source that names
    nothing, or when no image is found."""
    found: set[Path] = set()
    for source in sources:
        path = Path(source).expanduser()
        if any(char in source for char in "*?["):
            matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
        elif path.is_dir():
            matches = [p for p in path.rglob("*") if p.is_file()]
        elif path.is_file():
            matches = [path]
        else:
            raise MissingFileError(f"--images {source}: no such file, folder or pattern")
        found.update(p.resolve() for p in matches if is_image_file(p))
    if not found:
        raise MissingFileError(f"--images {' '.join(sources)}: no .jpg/.jpeg/.png image found")
    return sorted(found)
