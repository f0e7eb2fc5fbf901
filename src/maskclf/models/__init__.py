"""Models: timm backbones with the competition's heads, sized by a spec."""

from maskclf.models.factory import (
    LoadedNet,
    ModelWeightsError,
    build_net,
    create_model,
    load_net,
)
from maskclf.models.spec import ModelSpec, Preprocessing, resolve_specs

__all__ = ["LoadedNet", "ModelSpec", "ModelWeightsError", "Preprocessing", "build_net",
           "create_model", "load_net", "resolve_specs"]
