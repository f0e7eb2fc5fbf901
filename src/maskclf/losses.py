"""Losses by name: ``create_loss(cfg.loss)`` builds one from the config."""

from __future__ import annotations

from collections.abc import Callable

import torch

from maskclf.config import LossConfig

_LOSSES: dict[str, Callable[[LossConfig], torch.nn.Module]] = {}


def register_loss(name: str):
    def add(builder: Callable[[LossConfig], torch.nn.Module]):
        _LOSSES[name] = builder
        return builder

    return add


def list_losses() -> list[str]:
    return sorted(_LOSSES)


@register_loss("cross_entropy")
def _cross_entropy(cfg: LossConfig) -> torch.nn.Module:
    return torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


def create_loss(cfg: LossConfig) -> torch.nn.Module:
    name = cfg.name.lower()
    if name not in _LOSSES:
        raise ValueError(f"Unknown loss {cfg.name!r}. Available: {', '.join(list_losses())}")
    return _LOSSES[name](cfg)
