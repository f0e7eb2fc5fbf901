"""Networks: any timm model sized for a spec, and a network rebuilt from a checkpoint alone.

Training and inference both build their networks here; neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.layers import convert_splitbn_model
from timm.utils.model import freeze

from maskclf.config import ConfigError, ModelConfig
from maskclf.errors import InputFileError, MaskclfError, ModelWeightsError
from maskclf.labels import NUM_CLASSES
from maskclf.models.spec import ModelSpec, Preprocessing
from maskclf.models.weights import (
    PACKAGED,
    Normalisation,
    head_keys,
    map_backbone,
    packaged_weights,
    read_tensors,
    safe_torch_load,
)

CHECKPOINT_KEY = "maskclf"
"""Key of a checkpoint's hyper-parameters that holds the spec and the preprocessing."""
CHECKPOINT_FORMAT = 2
"""What ``hyper_parameters["maskclf"]`` holds: 2 adds ``format`` and keeps only mean/std
under ``preprocessing``; 1 (no ``format`` key) also copied six data settings there."""


def _timm_kwargs(cfg: ModelConfig) -> dict:
    kwargs = {"drop_rate": cfg.drop_rate, "drop_path_rate": cfg.drop_path_rate}
    return {key: value for key, value in kwargs.items() if value is not None}


def create_model(cfg: ModelConfig, num_classes: int = NUM_CLASSES,
                 pretrained: bool | None = None) -> torch.nn.Module:
    """A timm model with a fresh ``num_classes`` head.

    ``cfg.weights`` (a file, or the name of packaged weights such as
    ``efficientnet_lite0``) loads the backbone — read by maskclf itself, safely, whatever
    the timm version — and sets the input normalisation the weights expect;
    ``cfg.pretrained`` downloads from timm's hub. ``pretrained`` overrides both, e.g.
    ``False`` when a checkpoint will be loaded next anyway.
    """
    if not timm.is_model(cfg.name):
        close = timm.list_models(f"*{cfg.name.split('.')[0][:6]}*")[:8]
        raise ConfigError(f"model.name {cfg.name!r} is not a timm model; similar: {close}")
    use_weights = (cfg.pretrained or cfg.weights is not None) if pretrained is None else pretrained
    from_hub = use_weights and cfg.weights is None
    try:
        net = timm.create_model(cfg.name, pretrained=from_hub, num_classes=num_classes,
                                **_timm_kwargs(cfg))
    except Exception as exc:
        if not from_hub:
            raise
        raise ModelWeightsError(
            f"could not load pretrained weights for {cfg.name!r} from timm's hub (needs "
            f"network): {type(exc).__name__}: {exc}. Offline, set model.weights to a weights "
            f"file (convert one with `maskclf weights import`) or to packaged weights "
            f"({', '.join(PACKAGED)}), or model.pretrained: false to train from scratch."
        ) from exc
    if use_weights and cfg.weights is not None:
        _load_backbone(net, cfg.weights)
    if cfg.freeze_stages:
        freeze(net, submodules=stage_modules(net, cfg.freeze_stages),
               include_bn_running_stats=True)
    return net


def stage_modules(net: torch.nn.Module, stages: int) -> list[str]:
    """Names of the modules up to the end of feature stage ``stages`` (1-based) of ``net``,
    in order: the stem, then each stage (``net.feature_info``), outermost names only."""
    names = [info["module"] for info in getattr(net, "feature_info", [])]
    if not 1 <= stages <= len(names):
        raise ConfigError(f"model.freeze_stages={stages}, but {type(net).__name__} has "
                          f"{len(names)} feature stages ({names}); use 0-{len(names)}")
    last, chosen = names[stages - 1], []
    for name, _ in net.named_modules():  # pre-order: a parent comes before its children
        if not name or any(name.startswith(f"{c}.") for c in chosen):
            continue
        if name == last:
            return [*chosen, name]
        if not last.startswith(f"{name}."):  # not a container of the last stage
            chosen.append(name)
    raise AssertionError(f"{last} is not a module of {type(net).__name__}")


def _load_backbone(net: torch.nn.Module, weights: Path) -> None:
    """Load a weights file into ``net`` except its (new) classifier, and adopt the file's
    recorded normalisation."""
    path = packaged_weights(str(weights)) if str(weights) in PACKAGED else Path(weights)
    try:
        tensors, metadata = read_tensors(path)
        source_net = timm.create_model(net.pretrained_cfg["architecture"], pretrained=False)
        mapped, _, _ = map_backbone(tensors, source_net, str(path))
    except MaskclfError as exc:
        raise ModelWeightsError(f"model.weights: {exc}") from None
    source_head = set(head_keys(source_net))
    missing, unexpected = net.load_state_dict(
        {k: v for k, v in mapped.items() if k not in source_head}, strict=False)
    backbone_missing = set(missing) - set(head_keys(net))
    if backbone_missing or unexpected:
        raise ModelWeightsError(f"model.weights {path} does not fit the model: missing "
                                f"{sorted(backbone_missing)[:3]}, unexpected "
                                f"{sorted(unexpected)[:3]}")
    if "mean" in metadata:
        norm = Normalisation.recorded(metadata, net.pretrained_cfg)
        net.pretrained_cfg = {**net.pretrained_cfg, "mean": norm.mean, "std": norm.std,
                              "interpolation": norm.interpolation}


def build_net(spec: ModelSpec, pretrained: bool | None = None) -> torch.nn.Module:
    """The network of ``spec`` with as many outputs as its task needs."""
    return create_model(spec.cfg.model, num_classes=spec.num_outputs, pretrained=pretrained)


AUXILIARY_BATCHNORM = ".aux_bn."
"""Part of the names of split BatchNorm's auxiliary layers (timm), which only training uses."""


def training_net(spec: ModelSpec) -> torch.nn.Module:
    """The network of ``spec`` as it trains: with ``model.outside_batchnorm: split`` every
    BatchNorm becomes timm's ``SplitBatchNorm2d`` (first half of a batch: the main
    statistics, which inference uses; second half, the outside rows: their own)."""
    net = build_net(spec)
    if spec.cfg.model.outside_batchnorm == "split":
        net = convert_splitbn_model(net, num_splits=2)
    return net


def checkpoint_hparams(spec: ModelSpec, preprocessing: Preprocessing) -> dict:
    """What a checkpoint stores to describe itself (see :func:`load_net`)."""
    return {CHECKPOINT_KEY: {"format": CHECKPOINT_FORMAT, "spec": spec.to_dict(),
                             "preprocessing": preprocessing.to_dict()}}


@dataclass
class LoadedNet:
    """A trained network with the spec it was trained under and its preprocessing."""

    net: torch.nn.Module
    spec: ModelSpec
    preprocessing: Preprocessing
    checkpoint: Path


def load_net(checkpoint: Path | str) -> LoadedNet:
    """Rebuild the network of a maskclf checkpoint from the file alone (loaded safely,
    ``weights_only=True``); its EMA weights when it holds them. It is the inference
    network: split BatchNorm's auxiliary layers are left out (evaluation never uses them)."""
    checkpoint = Path(checkpoint)
    state = safe_torch_load(checkpoint, "maskclf checkpoint")
    described = (state.get("hyper_parameters", {}).get(CHECKPOINT_KEY)
                 if isinstance(state, dict) else None)
    if described is None:
        raise InputFileError(f"{checkpoint} does not describe its network (no maskclf spec in "
                             "its hyper-parameters); it was not written by this maskclf: "
                             "retrain the run")
    written = described.get("format", 1)
    if not isinstance(written, int) or written > CHECKPOINT_FORMAT:
        raise InputFileError(f"{checkpoint} is a maskclf checkpoint of format {written!r}; this "
                             f"maskclf reads formats 1 to {CHECKPOINT_FORMAT}: upgrade maskclf")
    spec = ModelSpec.from_dict(described["spec"])
    net = build_net(spec, pretrained=False)
    weights = state["state_dict"]
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in weights) else "net."
    net.load_state_dict({k.removeprefix(prefix): v for k, v in weights.items()
                         if k.startswith(prefix) and AUXILIARY_BATCHNORM not in k})
    return LoadedNet(net.eval(), spec, Preprocessing.from_dict(described["preprocessing"], spec),
                     checkpoint)
