"""Half-face CutMix: the left part of one face joined to the right part of another.

The 2022 winner mixed faces at the vertical midline (lambda near 0.5), within a class and
across classes; random-box CutMix, by contrast, pasted patches that "made wrong examples".
Targets stay soft 18-class probabilities (the share of the width each face keeps), so every
head reads its attribute targets from them as from timm's Mixup. Random draws come from
torch's global generator, which training reseeds at every epoch: runs and resumes repeat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskclf.labels import NUM_CLASSES


class HalfFaceMix:
    """Called like timm's ``Mixup``: ``(images N x C x H x W, class ids) -> (mixed, soft)``."""

    def __init__(self, prob: float, within_class: bool, lam: tuple[float, float]):
        self.prob, self.within_class, self.lam = prob, within_class, lam

    def partners(self, targets: torch.Tensor) -> torch.Tensor:
        """Index of each image's partner: any image, or one of the same class (itself when it
        is alone in the batch)."""
        if not self.within_class:
            return torch.randperm(len(targets), device=targets.device)
        partner = torch.arange(len(targets), device=targets.device)
        for label in targets.unique():
            members = torch.nonzero(targets == label).flatten()
            partner[members] = members[torch.randperm(len(members), device=targets.device)]
        return partner

    def __call__(self, images: torch.Tensor, targets: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        mixed, soft, _ = self.mix(images, targets)
        return mixed, soft

    def mix(self, images: torch.Tensor, targets: torch.Tensor, ages: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Mixed images, soft targets, and ages (years, for an age-regression head) mixed
        with the same shares as the targets."""
        soft = F.one_hot(targets.long(), NUM_CLASSES).float()
        if torch.rand(1).item() >= self.prob:
            return images, soft, ages
        low, high = self.lam
        cut = round((low + (high - low) * torch.rand(1).item()) * images.shape[-1])
        partner = self.partners(targets)
        mixed = images.clone()
        mixed[..., cut:] = images[partner][..., cut:]
        kept = cut / images.shape[-1]
        if ages is not None:
            ages = kept * ages + (1.0 - kept) * ages[partner]
        return mixed, kept * soft + (1.0 - kept) * soft[partner], ages
