"""Networks: any timm model sized for a spec, and a network rebuilt from a checkpoint alone.

Training and inference both build their networks here; neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from maskclf.config import ConfigError, ModelConfig
from maskclf.errors import InputFileError, MaskclfError
from maskclf.labels import NUM_CLASSES
from maskclf.models.spec import ModelSpec, Preprocessing

CHECKPOINT_KEY = "maskclf"
"""Key of a checkpoint's hyper-parameters that holds the spec and the preprocessing."""


class ModelWeightsError(MaskclfError, RuntimeError):
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
        raise ConfigError(f"model.name {cfg.name!r} is not a timm model; similar: {close}")
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


def build_net(spec: ModelSpec, pretrained: bool | None = None) -> torch.nn.Module:
    """The network of ``spec`` with as many outputs as its task needs."""
    return create_model(spec.cfg.model, num_classes=spec.num_outputs, pretrained=pretrained)


def checkpoint_hparams(spec: ModelSpec, preprocessing: Preprocessing) -> dict:
    """What a checkpoint stores to describe itself (see :func:`load_net`)."""
    return {CHECKPOINT_KEY: {"spec": spec.to_dict(), "preprocessing": preprocessing.to_dict()}}


@dataclass
class LoadedNet:
    """A trained network with the spec it was trained under and its preprocessing."""

    net: torch.nn.Module
    spec: ModelSpec
    preprocessing: Preprocessing
    checkpoint: Path


def load_net(checkpoint: Path | str) -> LoadedNet:
    """Rebuild the network of a maskclf checkpoint from the file alone (loaded safely,
    ``weights_only=True``); its EMA weights when it holds them."""
    checkpoint = Path(checkpoint)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    described = state.get("hyper_parameters", {}).get(CHECKPOINT_KEY)
    if described is None:
        raise InputFileError(f"{checkpoint} does not describe its network (no maskclf spec in "
                             "its hyper-parameters); it was not written by this maskclf: "
                             "retrain the run")
    spec = ModelSpec.from_dict(described["spec"])
    net = build_net(spec, pretrained=False)
    weights = state["state_dict"]
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in weights) else "net."
    net.load_state_dict({k.removeprefix(prefix): v for k, v in weights.items()
                         if k.startswith(prefix)})
    return LoadedNet(net.eval(), spec, Preprocessing.from_dict(described["preprocessing"]),
                     checkpoint)
