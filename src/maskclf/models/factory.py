"""Build any timm model for the 18 classes, with hub or local pretrained weights."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from maskclf.config import ModelConfig
from maskclf.labels import NUM_CLASSES


class ModelWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be loaded; the message says how to fix it."""


def _timm_kwargs(cfg: ModelConfig) -> dict:
    kwargs = {"drop_rate": cfg.drop_rate, "drop_path_rate": cfg.drop_path_rate}
    return {key: value for key, value in kwargs.items() if value is not None}


def create_model(cfg: ModelConfig, num_classes: int = NUM_CLASSES,
                 pretrained: bool | None = None) -> torch.nn.Module:
    """A timm model with a fresh ``num_classes`` head.

    ``cfg.weights`` loads a local file into the backbone (timm drops its classifier and
    re-initialises the head); ``cfg.pretrained`` downloads from timm's hub. ``pretrained``
    overrides both, e.g. ``False`` when a checkpoint will be loaded next anyway.
    """
    if not timm.is_model(cfg.name):
        close = timm.list_models(f"*{cfg.name.split('.')[0][:6]}*")[:8]
        raise ValueError(f"model.name {cfg.name!r} is not a timm model; similar: {close}")
    use_weights = (cfg.pretrained or cfg.weights is not None) if pretrained is None else pretrained
    kwargs = _timm_kwargs(cfg)
    if use_weights and cfg.weights is not None:
        weights = Path(cfg.weights)
        if not weights.is_file():
            raise ModelWeightsError(f"model.weights file {weights} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
    try:
        return timm.create_model(cfg.name, pretrained=use_weights, num_classes=num_classes,
                                 **kwargs)
    except ModelWeightsError:
        raise
    except Exception as exc:
        if not use_weights:
            raise
        source = f"file {cfg.weights}" if cfg.weights else "timm's hub (needs network)"
        raise ModelWeightsError(
            f"could not load pretrained weights for {cfg.name!r} from {source}: "
            f"{type(exc).__name__}: {exc}. Offline, download the weights elsewhere and set "
            "model.weights: /path/to/weights.safetensors (or .pth), or set "
            "model.pretrained: false to train from scratch."
        ) from exc
