"""Test-time augmentation on image batches: the views are averaged in probability space.

Views are pure tensor functions of an N x C x H x W batch, so they cost no decoding and
apply to validation (OOF) and eval predictions alike. This module imports torch only when
a view runs, so the config can check view names without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from maskclf.registry import VIEWS

if TYPE_CHECKING:
    import torch

register_view = VIEWS.register
list_views = VIEWS.names


@register_view("hflip")
def _hflip(images: torch.Tensor) -> torch.Tensor:
    return images.flip(dims=[3])


@register_view("scale")
def _scale(images: torch.Tensor, keep: float = 0.9) -> torch.Tensor:
    """Zoom in: the central ``keep`` share, resized back to the input size."""
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    crop_h, crop_w = round(height * keep), round(width * keep)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    centre = images[..., top:top + crop_h, left:left + crop_w]
    return F.interpolate(centre, size=(height, width), mode="bilinear", align_corners=False)


@register_view("shift")
def _shift(images: torch.Tensor, share: float = 0.05) -> torch.Tensor:
    """Move the content right and down by ``share`` of the size, edges replicated."""
    import torch.nn.functional as F

    dy, dx = round(images.shape[-2] * share), round(images.shape[-1] * share)
    padded = F.pad(images, (dx, 0, dy, 0), mode="replicate")
    return padded[..., : images.shape[-2], : images.shape[-1]]


def check_views(names: list[str]) -> list[str]:
    """``names`` when every view exists (a ``ConfigError`` naming the first that does not)."""
    for name in names:
        VIEWS.check(name)
    return names


def tta_probs(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
              views: list[str]) -> torch.Tensor:
    """Mean of ``predict`` over the original batch and each named view."""
    total = predict(images)
    for name in views:
        total = total + predict(VIEWS.get(name)(images))
    return total / (1 + len(views))
