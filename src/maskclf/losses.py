"""Losses by name: ``create_loss(cfg.loss)`` builds one from the config."""

from __future__ import annotations

from collections.abc import Callable

import torch

from maskclf.config import LossConfig

LossBuilder = Callable[[LossConfig, "torch.Tensor | None"], torch.nn.Module]
_LOSSES: dict[str, LossBuilder] = {}


def register_loss(name: str):
    def add(builder: LossBuilder):
        _LOSSES[name] = builder
        return builder

    return add


def list_losses() -> list[str]:
    return sorted(_LOSSES)


@register_loss("cross_entropy")
def _cross_entropy(cfg: LossConfig, weight: torch.Tensor | None) -> torch.nn.Module:
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def create_loss(cfg: LossConfig, class_weights=None) -> torch.nn.Module:
    """The loss named by ``cfg.name``; ``class_weights`` (one per class) weight its terms."""
    name = cfg.name.lower()
    if name not in _LOSSES:
        raise ValueError(f"Unknown loss {cfg.name!r}. Available: {', '.join(list_losses())}")
    weight = None if class_weights is None else torch.as_tensor(class_weights,
                                                                 dtype=torch.float32)
    return _LOSSES[name](cfg, weight)
