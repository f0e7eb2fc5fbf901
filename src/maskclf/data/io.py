"""Image decoding that is fast for downscaling and correct for odd files.

PIL's JPEG draft mode decodes straight to a reduced size (1/2, 1/4, 1/8) when the
caller needs less than full resolution, which is most of the decode cost saved.
EXIF orientation is honoured and every mode (L, RGBA, CMYK, I;16, P) becomes 8-bit RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})


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


def read_rgb(path: Path | str, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image to an upright H x W x 3 uint8 RGB array.

    ``min_size`` (height, width) lets JPEG decoding use draft mode: the result is at
    least that large (when the file is), possibly smaller than the original.
    """
    with Image.open(path) as image:
        if min_size is not None and image.format == "JPEG":
            image.draft("RGB", (min_size[1], min_size[0]))
        image = ImageOps.exif_transpose(image)
        return np.asarray(_to_rgb(image))


def probe_image(path: Path | str) -> str | None:
    """Decode ``path`` cheaply (draft mode) and return what is wrong with it, or None."""
    try:
        read_rgb(path, min_size=(8, 8))
    except Exception as exc:  # noqa: BLE001 - any decode failure is reported, not raised
        return f"cannot be decoded as an image ({type(exc).__name__}: {exc})"
    return None
