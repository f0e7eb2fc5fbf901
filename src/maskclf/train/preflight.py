"""Checks of the machine and the model that must pass before a run directory exists.

The config schema checks what a config says; these check whether this machine can run
it: each network builds (model name, weights file), takes ``data.image_size`` in one
forward pass, the accelerator and the optimizer exist, an augmentation pipeline file loads
and keeps the image size, the face detector and optional loggers are installed. A typo or a
wrong size then costs seconds and leaves nothing behind, instead of an unfinished run.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging

import numpy as np
import torch
from lightning.pytorch.accelerators import AcceleratorRegistry
from timm.data import resolve_model_data_config
from timm.optim import list_optimizers

from maskclf.config import ConfigError, RunConfig
from maskclf.data.faces import require_detector
from maskclf.data.transforms import build_transforms
from maskclf.models.factory import build_net, stage_modules
from maskclf.models.spec import ModelSpec, resolve_specs

log = logging.getLogger(__name__)


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
    if spec.cfg.model.freeze_stages:
        log.info("model.freeze_stages=%d: %s frozen for the whole run (BatchNorm statistics "
                 "too)", spec.cfg.model.freeze_stages,
                 ", ".join(stage_modules(net, spec.cfg.model.freeze_stages)))
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


def _check_optimizer(name: str) -> None:
    known = list_optimizers()
    if name not in known and name != "sgd":
        close = difflib.get_close_matches(name, known, n=3)
        raise ConfigError(f"optim.name {name!r} is not an optimizer timm knows"
                          + (f"; did you mean {', '.join(map(repr, close))}?" if close
                             else f"; see timm.optim.list_optimizers() ({len(known)} names)"))


def _check_augmentation(spec: ModelSpec) -> None:
    """A pipeline file loads and keeps the network size (batches must stack)."""
    if spec.cfg.aug.pipeline is None:
        return
    size = tuple(spec.cfg.data.image_size)
    transform = build_transforms(spec.cfg.aug, train=True, seed=spec.cfg.seed)
    shape = transform(image=np.zeros((*size, 3), dtype=np.uint8))["image"].shape[:2]
    if shape != size:
        raise ConfigError(f"aug.pipeline {spec.cfg.aug.pipeline} turns {list(size)} images "
                          f"into {list(shape)}; a training pipeline must keep "
                          "data.image_size")


def preflight(cfg: RunConfig) -> list[ModelSpec]:
    """Check that ``cfg`` can run here; returns the specs of the networks it trains."""
    specs = resolve_specs(cfg)
    for spec in specs:
        _check_accelerator(spec.cfg.train.accelerator)
        _check_optimizer(spec.cfg.optim.name)
        _check_augmentation(spec)
        if spec.cfg.data.crop == "face":
            require_detector(spec.cfg.data.face_detector)
        if spec.cfg.train.wandb_project is not None and importlib.util.find_spec("wandb") is None:
            raise ConfigError("train.wandb_project is set but wandb is not installed: "
                              "pip install 'maskclf[wandb]' (or drop the setting)")
        _check_forward(spec)
    return specs
