"""Checks of the machine and the model that must pass before a run directory exists.

The config schema checks what a config says; these check whether this machine can run
it: each network builds (model name, weights file), takes ``data.image_size`` in one
forward pass, the accelerator exists, and optional loggers are installed. A typo or a
wrong size then costs seconds and leaves nothing behind, instead of an unfinished run.
"""

from __future__ import annotations

import importlib.util

import torch
from lightning.pytorch.accelerators import AcceleratorRegistry
from timm.data import resolve_model_data_config

from maskclf.config import ConfigError, RunConfig
from maskclf.models.factory import build_net
from maskclf.models.spec import ModelSpec, resolve_specs


def _check_accelerator(name: str) -> None:
    if name == "auto":
        return
    known = sorted(AcceleratorRegistry.available_accelerators() | {"auto", "gpu"})
    if name not in known:
        raise ConfigError(f"train.accelerator {name!r} is not one of {known}")
    candidates = ["cuda", "mps"] if name == "gpu" else [name]
    if not any(AcceleratorRegistry[c]["accelerator"].is_available() for c in candidates):
        raise ConfigError(f"train.accelerator {name!r} is not available on this machine; "
                          "use train.accelerator=auto (or cpu)")


def _check_forward(spec: ModelSpec) -> None:
    """Build the network (with its pretrained weights) and run one image of the run's size."""
    net = build_net(spec)
    height, width = spec.cfg.data.image_size
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, height, width))
    except Exception as exc:  # timm raises assertion, value or runtime errors for bad sizes
        takes = resolve_model_data_config(net)["input_size"][1:]
        raise ConfigError(
            f"model.name {spec.cfg.model.name!r} cannot take data.image_size "
            f"[{height}, {width}]: {type(exc).__name__}: {exc}. It was made for "
            f"{list(takes)}: set data.image_size: {list(takes)} or pick a model that "
            "takes any size (most CNNs)") from None


def preflight(cfg: RunConfig) -> list[ModelSpec]:
    """Check that ``cfg`` can run here; returns the specs of the networks it trains."""
    specs = resolve_specs(cfg)
    for spec in specs:
        _check_accelerator(spec.cfg.train.accelerator)
        if spec.cfg.train.wandb_project is not None and importlib.util.find_spec("wandb") is None:
            raise ConfigError("train.wandb_project is set but wandb is not installed: "
                              "pip install 'maskclf[wandb]' (or drop the setting)")
        _check_forward(spec)
    return specs
