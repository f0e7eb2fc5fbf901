"""Preprocessing and augmentation: one deterministic step, then albumentations.

``preprocess`` (crop + resize to the network size) is deterministic and identical for
training, validation and prediction, so predict sees exactly what validation saw.
``build_transforms`` adds random augmentation for training only; both paths end in a
uint8 tensor, normalised on the device by the model step.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np

from maskclf.config import LEGACY_RECIPES, RECIPES, AugConfig, ConfigError, DataConfig
from maskclf.data.faces import detect_face, face_box
from maskclf.data.io import read_rgb


def centre_box(height: int, width: int, fraction: float) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the central ``fraction`` of an image."""
    keep_h, keep_w = round(height * fraction), round(width * fraction)
    top, left = (height - keep_h) // 2, (width - keep_w) // 2
    return top, left, top + keep_h, left + keep_w


def crop_box(image: np.ndarray, cfg: DataConfig) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the region kept by ``cfg.crop``."""
    height, width = image.shape[:2]
    if cfg.crop == "none":
        return 0, 0, height, width
    if cfg.crop == "face":
        box = detect_face(image, cfg.face_detector)
        if box is not None:
            aspect = cfg.image_size[0] / cfg.image_size[1]
            return face_box(box, height, width, cfg.face_margin, aspect)
    return centre_box(height, width, cfg.crop_fraction)


def stored_size(cfg: DataConfig) -> tuple[int, int]:
    """(height, width) that preprocessing produces and the cache stores: the network size
    plus ``crop_margin`` for random crops."""
    return tuple(round(side * (1 + cfg.crop_margin)) for side in cfg.image_size)


def decode_size(cfg: DataConfig) -> tuple[int, int]:
    """Smallest decoded (height, width) that still gives full detail after cropping."""
    scale = {"center": cfg.crop_fraction, "face": 0.5}.get(cfg.crop, 1.0)
    return tuple(int(np.ceil(side / scale)) for side in stored_size(cfg))


def interpolation(source: tuple[int, int], target: tuple[int, int]) -> int:
    """Area averaging when shrinking by 2x or more (no aliasing), bilinear otherwise:
    OpenCV's area filter costs ~4x bilinear at fractional factors such as 256 -> 192."""
    shrink = max(s / t for s, t in zip(source, target, strict=True))
    return cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR


def preprocess(image: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Crop and resize an RGB uint8 image to ``stored_size(cfg)`` (deterministic)."""
    top, left, bottom, right = crop_box(image, cfg)
    height, width = stored_size(cfg)
    if (bottom - top, right - left) == (height, width):
        return np.ascontiguousarray(image[top:bottom, left:right])
    return cv2.resize(image[top:bottom, left:right], (width, height),
                      interpolation=interpolation((bottom - top, right - left), (height, width)))


def decode_preprocessed(path: Path | str, cfg: DataConfig) -> np.ndarray:
    """Decode ``path`` (skipping detail the network size does not need), then preprocess."""
    return preprocess(read_rgb(path, min_size=decode_size(cfg)), cfg)


def evaluation_view(path: Path | str, cfg: DataConfig) -> np.ndarray:
    """An image file as validation and prediction see it: preprocessed, then the centre
    ``image_size`` (dropping the ``crop_margin`` kept for random training crops)."""
    return centre_crop(decode_preprocessed(path, cfg), cfg.image_size)


def centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The central ``size`` (height, width) of ``image`` (a view; the image if already so)."""
    top, left = (image.shape[0] - size[0]) // 2, (image.shape[1] - size[1]) // 2
    return image[top:top + size[0], left:left + size[1]]


def build_transforms(aug: AugConfig, train: bool, seed: int = 0,
                     crop_to: tuple[int, int] | None = None) -> A.Compose | None:
    """Random augmentation for training; None for eval (nothing to do per image).

    ``crop_to`` (height, width) starts training augmentation with a random crop of that
    size, for images stored with a ``crop_margin``.

    Images stay uint8 H x W x C: batches collate with plain copies, and the model step
    normalises them on the device and views them as channels-last N x C x H x W.
    ``seed`` makes the random augmentation reproducible (albumentations keeps its own
    random state, untouched by global seeds).
    """
    if not train:
        return None
    crop = [] if crop_to is None else [A.RandomCrop(height=crop_to[0], width=crop_to[1])]
    if aug.pipeline is not None:
        return A.Compose([*crop, load_pipeline(aug.pipeline)], seed=seed)
    return A.Compose([
        *crop,
        A.HorizontalFlip(p=aug.hflip),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10),
                 border_mode=cv2.BORDER_REFLECT_101, p=aug.shift_scale_rotate),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02,
                      p=aug.color_jitter),
    ], seed=seed)


PRESETS = RECIPES / "aug"


def pipeline_file(setting: Path) -> Path:
    """``aug.pipeline`` as a file: a path, or a preset name from ``configs/aug/`` (also as
    the packaged file's path before the recipes folder was renamed, which old runs saved)."""
    path = Path(setting)
    if path.exists():
        return path
    legacy = path.parent.name == PRESETS.name and path.parent.parent.name == LEGACY_RECIPES
    preset = PRESETS / (path.name if legacy else f"{setting}.yaml")
    return preset if preset.is_file() else path


def load_pipeline(setting: Path) -> A.BasicTransform | A.BaseCompose:
    """The albumentations pipeline of ``aug.pipeline`` (YAML or JSON written by ``A.save``;
    only albumentations' own transforms can be named in it)."""
    path = pipeline_file(setting)
    if not path.is_file():
        raise ConfigError(f"aug.pipeline {setting} is neither a file nor a preset "
                          f"({', '.join(sorted(p.stem for p in PRESETS.glob('*.yaml')))})")
    data_format = "json" if path.suffix == ".json" else "yaml"
    try:
        return A.load(str(path), data_format=data_format)
    except Exception as exc:  # albumentations raises several types for unknown names/fields
        raise ConfigError(f"aug.pipeline {path} is not an albumentations pipeline: "
                          f"{type(exc).__name__}: {exc}") from None
