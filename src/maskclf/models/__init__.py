"""Models: timm backbones with the competition's heads."""

from maskclf.models.factory import ModelWeightsError, create_model

__all__ = ["ModelWeightsError", "create_model"]
