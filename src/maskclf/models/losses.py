"""Losses by name, for any number of classes, on hard labels or soft (mixup) targets.

Every loss takes ``(logits N x C, targets)`` where targets are class ids (N) or
probabilities (N x C). ``create_loss(cfg)`` builds one from the config; ``cfg.name`` may
be one name or a weighted sum ``{cross_entropy: 1.0, soft_f1: 0.5}``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from maskclf import labels
from maskclf.config import LossConfig
from maskclf.registry import LOSSES

LossBuilder = Callable[[LossConfig, "torch.Tensor | None"], torch.nn.Module]
register_loss = LOSSES.register
list_losses = LOSSES.names


def soft_targets(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids -> one-hot probabilities; probabilities pass through."""
    if targets.ndim == 2:
        return targets.float()
    return F.one_hot(targets.long(), num_classes).float()


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Hinton's soft-target term: T^2 KL(teacher_T || student_T), where _T is the softmax at
    temperature T. The teacher gives probabilities, so its logits are their logs (a shift
    per row does not change a softmax); T^2 keeps the gradients' size as T changes."""
    teacher_t = F.softmax(torch.log(teacher.float().clamp_min(1e-8)) / temperature, dim=1)
    student_t = F.log_softmax(logits.float() / temperature, dim=1)
    return F.kl_div(student_t, teacher_t, reduction="batchmean") * temperature ** 2


def age_ordinal_smoothing(eps: float) -> torch.Tensor:
    """18 x 18 matrix taking ``eps`` of each class's mass to the classes with the same mask
    and gender and the adjacent age group (split evenly between two neighbours), nothing
    elsewhere: ``soft_targets @ matrix`` smooths age labels toward their neighbours only."""
    ages = len(labels.AGE_NAMES)
    age = torch.zeros(ages, ages)
    for group in range(ages):
        neighbours = [n for n in (group - 1, group + 1) if 0 <= n < ages]
        age[group, group] = 1.0 - eps
        age[group, neighbours] = eps / len(neighbours)
    mask, gender, group = labels.decode_class(torch.arange(labels.NUM_CLASSES))
    same_person_group = (mask[:, None] == mask[None, :]) & (gender[:, None] == gender[None, :])
    return same_person_group.float() * age[group[:, None], group[None, :]]


def class_weights(counts, mode: str, beta: float = 0.999) -> np.ndarray | None:
    """Per-class loss weights, normalised to average 1 over the classes present.

    ``inverse``: 1 / n_c. ``effective``: (1 - beta) / (1 - beta ** n_c), the "effective
    number of samples" of Cui et al. (2019). Absent classes get weight 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if mode == "none":
        return None
    present = counts > 0
    weights = np.zeros_like(counts)
    if mode == "inverse":
        weights[present] = 1.0 / counts[present]
    elif mode == "effective":
        weights[present] = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
    else:
        raise ValueError(f"loss.class_weights must be none, inverse or effective; got {mode!r}")
    return weights * present.sum() / weights.sum()


class _WeightedLoss(torch.nn.Module):
    def __init__(self, weight: torch.Tensor | None):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)

    def _class_weight(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.ones(logits.shape[1], device=logits.device) if self.weight is None else (
            self.weight.to(logits.device))


class FocalLoss(_WeightedLoss):
    """mean_n sum_c w_c alpha t_nc (1 - p_nc)^gamma (-log p_nc); gamma 0, alpha 1 is CE."""

    def __init__(self, gamma: float = 2.0, alpha: float = 1.0, smoothing: float = 0.0,
                 weight: torch.Tensor | None = None):
        super().__init__(weight)
        self.gamma, self.alpha, self.smoothing = gamma, alpha, smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        target = soft_targets(targets, num_classes)
        if self.smoothing:
            target = target * (1 - self.smoothing) + self.smoothing / num_classes
        log_p = F.log_softmax(logits.float(), dim=1)
        modulation = (1 - log_p.exp()).pow(self.gamma) if self.gamma else 1.0
        per_class = -target * modulation * log_p * self._class_weight(logits)
        return self.alpha * per_class.sum(dim=1).mean()


class SoftF1Loss(_WeightedLoss):
    """1 - macro F1 computed on probabilities (differentiable); 0 for perfect predictions."""

    def __init__(self, eps: float = 1e-7, weight: torch.Tensor | None = None):
        super().__init__(weight)
        self.eps = eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        target = soft_targets(targets, logits.shape[1])
        probs = F.softmax(logits.float(), dim=1)
        tp = (probs * target).sum(dim=0)
        fp = (probs * (1 - target)).sum(dim=0)
        fn = ((1 - probs) * target).sum(dim=0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)
        weight = self._class_weight(logits)
        return 1 - (f1 * weight).sum() / weight.sum()


class WeightedSum(torch.nn.Module):
    """sum_i w_i loss_i."""

    def __init__(self, terms: dict[str, tuple[float, torch.nn.Module]]):
        super().__init__()
        self.weights = {name: weight for name, (weight, _) in terms.items()}
        self.terms = torch.nn.ModuleDict({name: loss for name, (_, loss) in terms.items()})

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[name] * loss(logits, targets) for name, loss in self.terms.items())


@register_loss("cross_entropy")
def _cross_entropy(cfg: LossConfig, weight: torch.Tensor | None) -> torch.nn.Module:
    return FocalLoss(gamma=0.0, smoothing=cfg.label_smoothing, weight=weight)


@register_loss("label_smoothing")
def _label_smoothing(cfg: LossConfig, weight: torch.Tensor | None) -> torch.nn.Module:
    return FocalLoss(gamma=0.0, smoothing=cfg.label_smoothing or 0.1, weight=weight)


@register_loss("focal")
def _focal(cfg: LossConfig, weight: torch.Tensor | None) -> torch.nn.Module:
    return FocalLoss(gamma=cfg.gamma, alpha=cfg.alpha, smoothing=cfg.label_smoothing,
                     weight=weight)


@register_loss("soft_f1")
def _soft_f1(cfg: LossConfig, weight: torch.Tensor | None) -> torch.nn.Module:
    return SoftF1Loss(weight=weight)



def create_loss(cfg: LossConfig, class_weights=None) -> torch.nn.Module:
    """The loss of ``cfg``; ``class_weights`` (one per class) weight its per-class terms."""
    weight = None if class_weights is None else torch.as_tensor(class_weights,
                                                                 dtype=torch.float32)
    if isinstance(cfg.name, str):
        return LOSSES.get(cfg.name)(cfg, weight)
    return WeightedSum({name: (w, LOSSES.get(name)(cfg, weight)) for name, w in cfg.name.items()})
