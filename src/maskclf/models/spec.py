"""What a run trains: one :class:`ModelSpec` per network, resolved from the config once.

``resolve_specs`` is the only code that turns ``model.head`` into networks. A single or
multi-head run trains one network; a per-attribute run trains three (mask, gender, age),
each with its own merged config and its own folder of the run directory. Specs are saved
in every checkpoint (with the preprocessing the network expects), so a checkpoint alone
rebuilds its network: see ``models.factory.load_net``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.data import resolve_model_data_config

from maskclf import labels
from maskclf.config import DataConfig, RunConfig, build_config
from maskclf.registry import TASKS


@dataclass(frozen=True)
class ModelSpec:
    """One network of a run: its task (``single``, ``multihead``, ``mask``, ``gender`` or
    ``age``) and the config it trains with (per-attribute sections already merged)."""

    task: str
    cfg: RunConfig

    def __post_init__(self) -> None:
        TASKS.check(self.task)

    @property
    def regresses_age(self) -> bool:
        """The multi-head network carries an auxiliary age-in-years output."""
        return self.task == "multihead" and self.cfg.model.age_regression_weight > 0

    @property
    def num_outputs(self) -> int:
        return TASKS.get(self.task).outputs + int(self.regresses_age)

    @property
    def attribute(self) -> str | None:
        """The attribute a per-attribute network predicts; None for 18-class networks."""
        return self.task if self.task in labels.ATTRIBUTE_SIZES else None

    @property
    def subdir(self) -> str:
        """Folder of this network's folds inside the run directory ('' for the run itself)."""
        return self.attribute or ""

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "config": self.cfg.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSpec:
        config = raw["config"]
        if "face_detector" not in config.get("data", {}):  # saved before mtcnn: Haar crops
            config = {**config, "data": {**config.get("data", {}), "face_detector": "haar"}}
        return cls(raw["task"], build_config(config, "checkpoint spec"))


def resolve_specs(cfg: RunConfig) -> list[ModelSpec]:
    """The networks ``cfg`` trains, in training order."""
    if cfg.model.head == "per_attribute":
        return [ModelSpec(attribute, cfg.for_attribute(attribute))
                for attribute in labels.ATTRIBUTES]
    return [ModelSpec(cfg.model.head, cfg)]


@dataclass(frozen=True)
class Preprocessing:
    """What an image goes through before the network: the spec's ``data`` settings (crop,
    size, face detector: how the datasets read pixels) and the mean/std (0-1 scale) the
    backbone's weights expect. A checkpoint stores only the mean/std; the data settings
    are its spec's, so nothing is kept twice."""

    data: DataConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.data.image_size)

    @classmethod
    def of(cls, spec: ModelSpec, net: torch.nn.Module) -> Preprocessing:
        model_data = resolve_model_data_config(net)
        return cls(spec.cfg.data, tuple(model_data["mean"]), tuple(model_data["std"]))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], spec: ModelSpec) -> Preprocessing:
        """Checkpoints of format 1 also copied six data settings here; the spec's rule."""
        return cls(spec.cfg.data, tuple(raw["mean"]), tuple(raw["std"]))
