"""What a network's outputs mean: the 18 classes, three attribute heads, or one attribute.

A task turns raw outputs into a loss (against 18-class targets, hard or soft), into
predictions for the validation metric, and into probabilities. Multi-head probabilities
over the 18 classes are the product of the three softmaxes, so prediction files, metrics
and ensembles are the same for every head. ``build_task(spec)`` makes the task of a
:class:`~maskclf.models.spec.ModelSpec`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from maskclf import labels
from maskclf.models.losses import (
    age_ordinal_smoothing,
    class_weights,
    create_loss,
    distillation_loss,
    soft_targets,
)
from maskclf.models.spec import ModelSpec
from maskclf.registry import TASKS

ATTRIBUTE_SIZES = labels.ATTRIBUTE_SIZES
AGE_SCALE = 100.0
"""Ages in years are regressed divided by this, so the L1 term is on the scale of the
classification losses."""


def attribute_targets(targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """18-class targets (ids or N x 18 probabilities) -> per-attribute soft targets."""
    return labels.attribute_marginals(soft_targets(targets, labels.NUM_CLASSES))


def attribute_ids(classes: torch.Tensor) -> dict[str, torch.Tensor]:
    mask, gender, age = labels.decode_class(classes)
    return {"mask": mask, "gender": gender, "age": age}


class KnownTargets(NamedTuple):
    """Hard targets of rows that may not know every attribute (``labels.partial_code``)."""

    classes: torch.Tensor
    """The class of each row's known values (unknown attributes as value 0)."""
    known: dict[str, torch.Tensor]
    """Per attribute, which rows know it."""
    source: torch.Tensor
    """0 for the competition's photos, k for the k-th ``data.external`` source."""

    @property
    def full(self) -> torch.Tensor:
        return self.known["mask"] & self.known["gender"] & self.known["age"]

    def consistent(self) -> torch.Tensor:
        """N x 18: the classes each row's known attributes allow (all 18 when it knows
        nothing, its own class alone when it knows everything)."""
        table = torch.as_tensor(np.stack(labels.decode_class(np.arange(labels.NUM_CLASSES)),
                                         axis=1), device=self.classes.device)
        allowed = torch.ones(len(self.classes), labels.NUM_CLASSES, dtype=torch.bool,
                             device=self.classes.device)
        for column, (name, value) in enumerate(attribute_ids(self.classes).items()):
            allowed &= ~self.known[name][:, None] | (table[None, :, column] == value[:, None])
        return allowed


def partial_nll(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Per row, -log of the probability of what the row knows: -log sum_{c allowed} p_c.
    One allowed class: cross-entropy; every class allowed: 0 (the row teaches nothing)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -torch.logsumexp(log_p.masked_fill(~allowed, float("-inf")), dim=1)


def by_source(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              outputs: torch.Tensor, targets: torch.Tensor, source: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
    """Sum over sources of weight x rows x ``loss`` on the source's rows: the configured loss
    (a batch mean, perhaps over the whole batch like soft F1) kept per source, each source's
    rows weighted by its ``data.external`` weight."""
    total = outputs.new_zeros((), dtype=torch.float32)
    for value in source.unique():
        rows = source == value
        total = total + weights[value] * rows.sum() * loss(outputs[rows], targets[rows])
    return total


class SingleTask(torch.nn.Module):
    """One 18-way head."""

    num_outputs = labels.NUM_CLASSES
    num_metric_classes = labels.NUM_CLASSES

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss_fn = loss
        # buffers, so they move with the module: no copy to the device at every step
        self.register_buffer("age_smoothing", None, persistent=False)
        self.register_buffer("source_weights", torch.ones(1), persistent=False)
        self.partial_targets = False

    def known(self, targets: torch.Tensor) -> KnownTargets | None:
        """The batch's partial codes, or None when every row of the run knows everything
        (class ids, or mixup probabilities) and the configured loss applies as it always
        did. Decided by the run's data, so a step never waits on the device."""
        if targets.ndim == 2 or not self.partial_targets:
            return None
        classes, known, source = labels.split_code(targets.long())
        return KnownTargets(classes, dict(zip(ATTRIBUTE_SIZES, known, strict=True)), source)

    def weigh_sources(self, weights: list[float], partial: bool) -> SingleTask:
        """The loss weight of each ``data.external`` source's rows (the competition's: 1),
        and whether targets are partial codes (outside rows, labels made unknown)."""
        self.source_weights = torch.tensor([1.0, *weights])
        self.partial_targets = partial or bool(weights)
        return self

    def smooth_age(self, eps: float) -> SingleTask:
        """Train on targets whose age mass partly moves to the adjacent age group."""
        self.age_smoothing = age_ordinal_smoothing(eps) if eps > 0 else None
        return self

    def training_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """18-class targets as the loss sees them: ids (or mixup probabilities), age-smoothed
        into probabilities when asked."""
        if self.age_smoothing is None:
            return targets
        return soft_targets(targets, labels.NUM_CLASSES) @ self.age_smoothing

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             ages: torch.Tensor | None = None) -> torch.Tensor:
        """The loss against 18-class targets; ``ages`` (years) only feed an age-regression
        head. Rows that know every attribute take the configured loss; the others, the
        likelihood of what they know (:func:`partial_nll`); each source's rows weighted."""
        known = self.known(targets)
        if known is None:
            return self.loss_fn(outputs, self.training_targets(targets))
        full, weights = known.full, self.source_weights
        total = by_source(self.loss_fn, outputs[full], known.classes[full], known.source[full],
                          weights) if bool(full.any()) else outputs.new_zeros(())
        partial = ~full
        nll = partial_nll(outputs[partial], known.consistent()[partial])
        return (total + (weights[known.source[partial]] * nll).sum()) / len(targets)

    def probs(self, outputs: torch.Tensor) -> torch.Tensor:
        return F.softmax(outputs.float(), dim=1)

    def teacher_targets(self, teacher: torch.Tensor
                        ) -> list[tuple[slice, torch.Tensor, float]]:
        """A teacher's N x 18 probabilities as targets of this task's softmaxes: (the outputs
        a softmax runs over, the teacher's distribution over them, the term's weight)."""
        return [(slice(0, labels.NUM_CLASSES), teacher, 1.0)]

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        """The soft-target loss against a teacher's 18-class probabilities, summed over
        this task's softmaxes."""
        return sum(weight * distillation_loss(outputs[:, span], target, temperature)
                   for span, target, weight in self.teacher_targets(teacher))

    def metric_targets(self, classes: torch.Tensor) -> torch.Tensor:
        return classes

    def metric_known(self, targets: torch.Tensor) -> torch.Tensor:
        """Which rows know what the metric scores (every attribute here)."""
        known = self.known(targets)
        return torch.ones_like(targets, dtype=torch.bool) if known is None else known.full

    def attribute_groups(self) -> dict[str, tuple[slice, np.ndarray]]:
        """Per attribute: the outputs its softmax runs over and which of them make each value
        (values x outputs, 0/1), so P(attribute = v) = softmax(outputs[span]) @ members[v]:
        here the six classes of the 18 that have the value."""
        decoded = dict(zip(ATTRIBUTE_SIZES, labels.decode_class(np.arange(labels.NUM_CLASSES)),
                           strict=True))
        return {name: (slice(0, labels.NUM_CLASSES),
                       (decoded[name][None, :] == np.arange(size)[:, None]).astype(np.float32))
                for name, size in ATTRIBUTE_SIZES.items()}


def known_attribute_loss(loss: torch.nn.Module, logits: torch.Tensor, known: KnownTargets,
                         attribute: str, weights: torch.Tensor) -> torch.Tensor:
    """One attribute's loss over the rows that know it (each source's rows weighted), a mean
    over those rows; 0, with no gradient to any row, when none of the batch knows it."""
    rows = known.known[attribute]
    if not bool(rows.any()):
        return logits.sum() * 0.0
    values = attribute_ids(known.classes)[attribute]
    return by_source(loss, logits[rows], values[rows], known.source[rows], weights) / rows.sum()


class MultiHeadTask(SingleTask):
    """Three heads on one backbone: outputs are mask (3), gender (2), age (3) logits, and with
    ``age_regression`` > 0 one more output, the age in years / ``AGE_SCALE`` (L1 loss)."""

    def __init__(self, losses: dict[str, torch.nn.Module], weights: dict[str, float],
                 age_regression: float = 0.0):
        torch.nn.Module.__init__(self)
        self.register_buffer("age_smoothing", None, persistent=False)
        self.register_buffer("source_weights", torch.ones(1), persistent=False)
        self.partial_targets = False
        self.losses = torch.nn.ModuleDict(losses)
        self.weights = weights
        self.age_regression = age_regression
        self.num_outputs = sum(ATTRIBUTE_SIZES.values()) + int(age_regression > 0)

    def split(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        sizes = list(ATTRIBUTE_SIZES.values())
        heads = outputs[:, :sum(sizes)].split(sizes, dim=1)
        return dict(zip(ATTRIBUTE_SIZES, heads, strict=True))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             ages: torch.Tensor | None = None) -> torch.Tensor:
        """Each head's loss, weighted; with rows that do not know every attribute, each head
        learns from the rows that know its attribute (mean over them), and the age in years
        from the rows that know it."""
        logits, known = self.split(outputs), self.known(targets)
        if self.age_regression > 0 and ages is None:
            raise ValueError("an age-regression head needs the ages in years")
        if known is None:
            soft = attribute_targets(self.training_targets(targets))
            total = sum(self.weights[name] * self.losses[name](logits[name], soft[name])
                        for name in ATTRIBUTE_SIZES)
            if self.age_regression > 0:
                total = total + self.age_regression * F.l1_loss(
                    outputs[:, -1].float(), ages.float() / AGE_SCALE)
            return total
        total = sum(self.weights[name] * known_attribute_loss(self.losses[name], logits[name],
                                                              known, name, self.source_weights)
                    for name in ATTRIBUTE_SIZES)
        if self.age_regression > 0:
            rows = known.known["age"] & (ages >= 0)
            if bool(rows.any()):
                error = (outputs[rows, -1].float() - ages[rows].float() / AGE_SCALE).abs()
                total = total + self.age_regression * (
                    self.source_weights[known.source[rows]] * error).sum() / rows.sum()
        return total

    def probs(self, outputs: torch.Tensor) -> torch.Tensor:
        parts = {name: F.softmax(x.float(), dim=1) for name, x in self.split(outputs).items()}
        return labels.combine_attributes(parts["mask"], parts["gender"], parts["age"])

    def teacher_targets(self, teacher: torch.Tensor
                        ) -> list[tuple[slice, torch.Tensor, float]]:
        """Each head learns the teacher's marginal of its attribute, weighted as its loss."""
        marginals = labels.attribute_marginals(teacher.float())
        return [(span, marginals[name], self.weights[name])
                for name, (span, _) in self.attribute_groups().items()]

    def attribute_groups(self) -> dict[str, tuple[slice, np.ndarray]]:
        """Each attribute's own head (the age-in-years output takes part in none)."""
        groups, start = {}, 0
        for name, size in ATTRIBUTE_SIZES.items():
            groups[name] = (slice(start, start + size), np.eye(size, dtype=np.float32))
            start += size
        return groups


class AttributeTask(SingleTask):
    """One attribute's head (a per-attribute model); probabilities are over that attribute."""

    def __init__(self, attribute: str, loss: torch.nn.Module):
        super().__init__(loss)
        self.attribute = attribute
        self.num_outputs = self.num_metric_classes = ATTRIBUTE_SIZES[attribute]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             ages: torch.Tensor | None = None) -> torch.Tensor:
        """The attribute's loss; with rows that may not know it, over the rows that do."""
        known = self.known(targets)
        if known is None:
            return self.loss_fn(
                outputs, attribute_targets(self.training_targets(targets))[self.attribute])
        return known_attribute_loss(self.loss_fn, outputs, known, self.attribute,
                                    self.source_weights)

    def metric_targets(self, classes: torch.Tensor) -> torch.Tensor:
        return attribute_ids(classes)[self.attribute]

    def metric_known(self, targets: torch.Tensor) -> torch.Tensor:
        known = self.known(targets)
        return (torch.ones_like(targets, dtype=torch.bool) if known is None
                else known.known[self.attribute])

    def teacher_targets(self, teacher: torch.Tensor
                        ) -> list[tuple[slice, torch.Tensor, float]]:
        size = ATTRIBUTE_SIZES[self.attribute]
        return [(slice(0, size), labels.attribute_marginals(teacher.float())[self.attribute],
                 1.0)]

    def attribute_groups(self) -> dict[str, tuple[slice, np.ndarray]]:
        size = ATTRIBUTE_SIZES[self.attribute]
        return {self.attribute: (slice(0, size), np.eye(size, dtype=np.float32))}


Weights = Callable[[str | None], "np.ndarray | None"]
"""Class weights of an attribute (None: the 18 classes), or None when not asked for."""


class Task(NamedTuple):
    """A registered task: its output width (before an age-regression output), how to build
    it from a spec and its class weights, and the attribute it predicts (None: all 18
    classes, which makes it a ``model.head`` value)."""

    outputs: int
    build: Callable[[ModelSpec, Weights], SingleTask]
    attribute: str | None = None


def _single(spec: ModelSpec, weights: Weights) -> SingleTask:
    return SingleTask(create_loss(spec.cfg.loss, weights(None)))


def _multihead(spec: ModelSpec, weights: Weights) -> SingleTask:
    loss_cfg = spec.cfg.loss
    losses = {name: create_loss(loss_cfg.attributes.get(name, loss_cfg), weights(name))
              for name in ATTRIBUTE_SIZES}
    return MultiHeadTask(losses, loss_cfg.attribute_weights, spec.cfg.model.age_regression_weight)


def _attribute(spec: ModelSpec, weights: Weights) -> SingleTask:
    return AttributeTask(spec.attribute, create_loss(spec.cfg.loss, weights(spec.attribute)))


TASKS.register("single")(Task(labels.NUM_CLASSES, _single))
TASKS.register("multihead")(Task(sum(ATTRIBUTE_SIZES.values()), _multihead))
for _name, _size in ATTRIBUTE_SIZES.items():
    TASKS.register(_name)(Task(_size, _attribute, _name))


def build_task(spec: ModelSpec, counts: labels.ClassCounts | None = None,
               partial: bool = False) -> SingleTask:
    """The task of ``spec`` with its loss; class weights come from the training targets'
    counts: the 18 classes over the rows that know every attribute, an attribute's values
    over the rows that know it. Each ``data.external`` source's rows get its weight;
    ``partial``: a row may not know every attribute (labels made unknown)."""
    loss_cfg = spec.cfg.loss

    def weights(attribute: str | None):
        if counts is None:
            return None
        per_class = counts.classes if attribute is None else counts.attributes[attribute]
        return class_weights(per_class, loss_cfg.class_weights, loss_cfg.effective_beta)

    task = TASKS.get(spec.task).build(spec, weights).smooth_age(loss_cfg.age_ordinal_smoothing)
    return task.weigh_sources([source.weight for source in spec.cfg.data.external], partial)
