"""Checkpoint averaging (a "model soup" of one fold's best epochs): ``train.average_checkpoints``.

A fold keeps its ``K`` best epochs by validation macro F1 (weights only). ``uniform`` averages
all of them; ``greedy`` adds them best first and keeps each only while the soup's validation
F1 does not drop (Wortsman et al., 2022). During the greedy search BatchNorm statistics are
averaged like the weights; the final soup's statistics are recomputed on training batches
(``torch.optim.swa_utils.update_bn``), since an average of weights does not match an average
of statistics. The soup is kept only when it scores at least as well as the best single
epoch on the same validation images; either way the fold's record says which was used.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn

from maskclf.atomic import atomic_write
from maskclf.data.datamodule import FoldDataModule
from maskclf.labels import NUM_CLASSES
from maskclf.metrics import macro_f1
from maskclf.models.factory import LoadedNet, load_net
from maskclf.models.heads import build_task
from maskclf.models.spec import ModelSpec
from maskclf.models.weights import safe_torch_load
from maskclf.predict.module import InferenceModule, predict_probs
from maskclf.runs.directory import FoldDir

log = logging.getLogger(__name__)
BN_BATCHES = 50
"""Training batches that recompute the soup's BatchNorm statistics."""


@dataclass
class SoupResult:
    used: bool
    members: list[str]
    f1_best: float
    f1_soup: float

    def to_dict(self) -> dict:
        return {"used": self.used, "members": self.members, "f1_best": self.f1_best,
                "f1_soup": self.f1_soup}


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of floating-point tensors; counters (``num_batches_tracked``) from the first."""
    return {key: (torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
                  if value.is_floating_point() else value.clone())
            for key, value in states[0].items()}


class SoupScorer:
    """Validation macro F1 of a network's weights, as the fold is scored (validation_step:
    the rows whose label knows what the network's metric scores)."""

    def __init__(self, template: LoadedNet, data: FoldDataModule):
        self.template, self.data = template, data
        task = build_task(template.spec, partial=True)  # truth codes: labels.truth_codes
        targets = torch.tensor(data.val_rows["truth"].to_numpy())
        known = task.metric_known(targets)
        self.truth = task.metric_targets(targets[known] % NUM_CLASSES).numpy()
        self.dataset = data.dataset(data.val_rows[known.numpy()], False)

    def __call__(self, state: dict[str, torch.Tensor]) -> float:
        self.template.net.load_state_dict(state)
        probs = predict_probs(self.template, self.dataset, self.template.spec.cfg.predict.tta)
        return macro_f1(self.truth, probs.argmax(axis=1))


def _recompute_bn(template: LoadedNet, data: FoldDataModule) -> dict[str, torch.Tensor]:
    """The template's weights with BatchNorm statistics measured on training batches."""
    net = template.net
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return {k: v.clone() for k, v in net.state_dict().items()}
    module = InferenceModule(net, build_task(template.spec), template.preprocessing)
    batches = (batch[0] for batch in itertools.islice(data.train_dataloader(), BN_BATCHES))
    with torch.no_grad():
        update_bn(batches, module)
    net.eval()
    return {k: v.clone() for k, v in net.state_dict().items()}


def average_fold(fold: FoldDir, spec: ModelSpec, data: FoldDataModule,
                 ranked: list[Path], best: Path) -> tuple[Path, SoupResult]:
    """Soup ``ranked`` (the fold's top epochs, best first) per ``train.average_mode``; write
    ``averaged.ckpt`` and return it when it scores at least as well as ``best``, else
    ``best``."""
    mode = spec.cfg.train.average_mode
    template = load_net(best)
    states = [load_net(path).net.state_dict() for path in ranked]
    score = SoupScorer(template, data)
    f1_best = score(states[0])
    chosen = [0]
    if mode == "greedy":
        current = f1_best
        for i in range(1, len(states)):
            trial = score(average_states([states[j] for j in [*chosen, i]]))
            if trial >= current:
                chosen, current = [*chosen, i], trial
    if mode == "uniform":
        chosen = list(range(len(states)))
    template.net.load_state_dict(average_states([states[j] for j in chosen]))
    soup = _recompute_bn(template, data)
    f1_soup = score(soup)
    members = [ranked[j].name for j in chosen]
    used = len(members) > 1 and f1_soup >= f1_best
    log.info("%s: soup of %d epochs (%s) F1 %.4f vs best epoch %.4f: %s", fold.path,
             len(members), mode, f1_soup, f1_best, "kept" if used else "not kept")
    if not used:
        return best, SoupResult(False, members, f1_best, f1_soup)
    checkpoint = safe_torch_load(best, "maskclf checkpoint")
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in
                                  checkpoint["state_dict"]) else "net."
    checkpoint["state_dict"].update({f"{prefix}{k}": v for k, v in soup.items()})
    atomic_write(fold.averaged, lambda tmp: torch.save(checkpoint, tmp))
    return fold.averaged, SoupResult(True, members, f1_best, f1_soup)
