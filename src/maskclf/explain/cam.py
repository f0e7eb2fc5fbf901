"""Class activation maps: where a network looked when it gave an attribute its value.

One meaning everywhere: the map of attribute A at value v explains ``P(A = v)`` under the
network's task (for an 18-class network, the softmax mass of the six classes with that
value; for a multi-head or attribute network, that head's softmax) — its log-odds, whose
gradient points where that of ``log P(A = v)`` does — at the layer whose output the
classifier pools (:func:`cam_layer`).

- :func:`network_maps` computes it with the ``grad-cam`` package (pytorch-grad-cam), by any
  of its methods (:data:`CAM_METHODS`: Grad-CAM, Grad-CAM++, LayerCAM, EigenCAM, ...), for
  any timm backbone: ``maskclf explain`` and the report's maps.
- :class:`CamHead` computes Grad-CAM itself without autograd for timm's
  pooled-features-then-linear heads: there ``d target / d pooled = (d target / d logits) W``
  exactly, so the map is ``relu(sum_k a_k F_k)`` with ``a`` from the logits — a few
  tensor operations that live inside the exported ONNX graph (``maskclf export``), equal to
  the package's ``GradCAM`` (tested to 1e-4).

Maps are scaled to 0-1 per image, as the package scales them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)

from maskclf.labels import ATTRIBUTES
from maskclf.models.heads import SingleTask
from maskclf.models.spec import Preprocessing
from maskclf.registry import CAM_METHODS

for _name, _method in {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM,
                       "xgradcam": XGradCAM, "layercam": LayerCAM, "eigencam": EigenCAM,
                       "eigengradcam": EigenGradCAM, "scorecam": ScoreCAM}.items():
    CAM_METHODS.register(_name)(_method)

EXACT_TOLERANCE = 1e-4
"""How closely ``forward_head`` must match mean-pool + linear for :class:`CamHead`."""


@dataclass(frozen=True)
class CamLayer:
    """The layer maps are computed at: its module name, channels, and how far it is
    shrunk from the input (timm's ``reduction``), and how its output becomes N x C x h x w."""

    name: str
    module: torch.nn.Module
    channels: int
    reduction: int
    stage: str
    """timm's last feature stage (``feature_info[-1]``), which ``name`` is or follows."""
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None

    def describe(self) -> str:
        after = "" if self.stage == self.name else f", after timm's last feature stage {self.stage}"
        return (f"{self.name} ({self.channels} channels, 1/{self.reduction} of the input"
                f"{after})")


def cam_layer(net: torch.nn.Module, image_size: tuple[int, int]) -> CamLayer:
    """The module whose output the classifier pools: timm's last feature stage
    (``feature_info[-1]``) or, when ``forward_features`` goes on after it (EfficientNet's
    ``conv_head`` + ``bn2``), the last module that makes ``forward_features``' output. Token
    outputs (ViT) and channels-last maps are reshaped to N x C x h x w."""
    stage = net.feature_info[-1] if getattr(net, "feature_info", None) else None
    finished: list[tuple[str, torch.Tensor]] = []
    hooks = [module.register_forward_hook(
        lambda _m, _i, output, name=name: finished.append((name, output)))
        for name, module in net.named_modules() if name]
    try:
        with torch.no_grad():
            features = net.forward_features(torch.zeros(1, 3, *image_size))
    finally:
        for hook in hooks:
            hook.remove()
    producers = [name for name, output in finished if output is features]
    name = producers[-1] if producers else stage["module"]
    modules = dict(net.named_modules())
    reduction = stage["reduction"] if stage else round(image_size[0] / features.shape[-2])
    reshape = _reshape_for(net, features, image_size, reduction)
    channels = (features if reshape is None else reshape(features)).shape[1]
    return CamLayer(name, modules[name], int(channels), int(reduction),
                    stage["module"] if stage else name, reshape)


def _reshape_for(net: torch.nn.Module, features: torch.Tensor, image_size: tuple[int, int],
                 reduction: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """How a layer's output becomes N x C x h x w: None when it already is."""
    width = getattr(net, "num_features", features.shape[1])
    if features.ndim == 4 and features.shape[1] == width:
        return None
    grid = (image_size[0] // reduction, image_size[1] // reduction)
    if features.ndim == 4:  # N x h x w x C
        return lambda x: x.permute(0, 3, 1, 2)
    prefix = getattr(net, "num_prefix_tokens", features.shape[1] - grid[0] * grid[1])
    return lambda x: x[:, prefix:].reshape(x.shape[0], *grid, x.shape[-1]).permute(0, 3, 1, 2)


class AttributeTarget:
    """A grad-cam target: the log-odds of ``attribute = value`` for one image's outputs,
    log P(v) - log P(not v), as two log-sum-exps.

    Its gradient is that of log P(v) divided by P(not v) (the same direction, so the same
    map once scaled), and each part is a softmax over its own outputs: for a confident
    value, the gradient of log P(v) itself is a difference of near-equal numbers, float32
    noise rather than a map."""

    def __init__(self, task: SingleTask, attribute: str, value: int):
        span, members = task.attribute_groups()[attribute]
        self.span, self.members = span, torch.as_tensor(members[value])

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        logits = output[..., self.span].float()
        inside = self.members.to(logits.device)
        return (torch.logsumexp(logits - 1e4 * (1 - inside), dim=-1)
                - torch.logsumexp(logits - 1e4 * inside, dim=-1))


def normalised(images: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 N x H x W x 3 crops as the network takes them (float N x 3 x H x W)."""
    mean = torch.tensor(preprocessing.mean).view(1, -1, 1, 1) * 255
    std = torch.tensor(preprocessing.std).view(1, -1, 1, 1) * 255
    return (torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
            - mean) / std


def network_maps(net: torch.nn.Module, task: SingleTask, preprocessing: Preprocessing,
                 images: np.ndarray, values: dict[str, np.ndarray], method: str = "gradcam",
                 batch_size: int = 16) -> dict[str, np.ndarray]:
    """Maps (N x H x W, 0-1, at the crops' size) of each attribute in ``values`` (the value
    to explain per image) that ``task`` predicts, by grad-cam's ``method``."""
    layer = cam_layer(net, images.shape[1:3])
    net.requires_grad_(True)  # frozen stages too: the gradient must reach the layer
    groups = task.attribute_groups()
    maps: dict[str, list[np.ndarray]] = {name: [] for name in values if name in groups}
    with CAM_METHODS.get(method)(model=net, target_layers=[layer.module],
                                 reshape_transform=layer.reshape) as explainer:
        for start in range(0, len(images), batch_size):
            batch = normalised(images[start:start + batch_size], preprocessing)
            for name in maps:
                targets = [AttributeTarget(task, name, int(v))
                           for v in values[name][start:start + batch_size]]
                maps[name].append(explainer(input_tensor=batch, targets=targets))
    return {name: np.concatenate(parts).astype(np.float32) for name, parts in maps.items()}


def exact_cam(net: torch.nn.Module, image_size: tuple[int, int]) -> str | None:
    """Why :class:`CamHead` cannot explain ``net`` (None when it can): the classifier must
    be mean pooling then one linear layer over an N x C x h x w map."""
    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    if not isinstance(classifier, torch.nn.Linear):
        return f"its classifier is {type(classifier).__name__}, not one linear layer"
    with torch.no_grad():
        features = net.forward_features(torch.zeros(1, 3, *image_size))
        if features.ndim != 4 or features.shape[1] != classifier.in_features:
            return f"its features are {tuple(features.shape)}, not N x C x h x w"
        probe = torch.randn_like(features)
        pooled = classifier(probe.mean(dim=(2, 3)))
        gap = float((net.forward_head(probe) - pooled).abs().max())
    if gap > EXACT_TOLERANCE:
        return f"its head is not mean pooling then linear (differs by {gap:.2g})"
    return None


class CamHead(torch.nn.Module):
    """Grad-CAM of the log-odds of ``attribute = value`` at the pooled layer, for every value
    of every attribute ``task`` predicts, without autograd (see the module docstring): N x V x
    h x w maps, 0-1 per map, V in :meth:`names` order."""

    def __init__(self, net: torch.nn.Module, task: SingleTask):
        super().__init__()
        self.net = net
        spans, members, rows = [], [], []
        for attribute, (span, member) in task.attribute_groups().items():
            spans.append((span.start, span.stop))
            members.append(torch.as_tensor(member, dtype=torch.float32))
            rows.append(attribute)
        self.attributes, self.spans = rows, spans
        for index, member in enumerate(members):
            self.register_buffer(f"members{index}", member, persistent=False)

    def names(self) -> list[str]:
        return [f"{attribute}/{value}" for attribute in self.attributes
                for value in ATTRIBUTES[attribute]]

    def forward(self, normalised_images: torch.Tensor) -> torch.Tensor:
        features = self.net.forward_features(normalised_images)
        logits = self.net.forward_head(features)
        weight = self.net.get_classifier().weight  # outputs x channels
        maps = []
        for index, (start, stop) in enumerate(self.spans):
            members = getattr(self, f"members{index}")  # values x outputs
            span = logits[:, start:stop].float()[:, None, :]  # N x 1 x S
            # the gradient of AttributeTarget's log-odds: p(c | v) inside the value,
            # -p(c | not v) outside it, each a softmax over its own outputs
            inside = members[None]
            grads = (F.softmax(span - 1e4 * (1 - inside), dim=2) * inside
                     - F.softmax(span - 1e4 * inside, dim=2) * (1 - inside))
            channel = grads @ weight[start:stop].float()  # N x V x C
            maps.append(torch.einsum("nvc,nchw->nvhw", channel, features.float()))
        cam = F.relu(torch.cat(maps, dim=1))
        low = cam.amin(dim=(2, 3), keepdim=True)
        cam = cam - low
        return cam / (cam.amax(dim=(2, 3), keepdim=True) + 1e-7)
