"""What a run's report should tell its owner to do next.

A report that only shows curves leaves the reading to the user; these checks read the same
numbers (per-epoch fold metrics, out-of-fold predictions) and turn the common problems into
findings, each with the remedy maskclf itself offers: still improving at the last epoch,
a class or attribute value the model hardly predicts, classes at F1 0, a large gap
between training and validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from maskclf import labels
from maskclf.config import RunConfig
from maskclf.metrics import TRAIN_ACC, VAL_ACC, VAL_F1
from maskclf.runs.directory import RunDir

RARE_SHARE = 0.25
"""A value predicted for fewer than this share of the images that truly have it is flagged."""
MIN_SUPPORT = 10
"""...when at least this many images truly have it (fewer say little)."""
GAP = 0.2
"""Training accuracy this far above validation accuracy at the last epoch is flagged."""


@dataclass(frozen=True)
class Finding:
    what: str
    remedy: str

    def markdown(self) -> str:
        return f"- **{self.what}** → {self.remedy}"


def _rate(lr: float | str) -> str:
    return lr if isinstance(lr, str) else f"{lr:g}"


def recipe_lines(cfg: RunConfig) -> list[str]:
    """The recipe in a few lines: backbone, size, epochs, loss, optimizer, schedule, tricks."""
    weights = (f"weights `{cfg.model.weights}`" if cfg.model.weights is not None
               else "ImageNet weights from the hub" if cfg.model.pretrained else "from scratch")
    split = (f"{cfg.data.folds}-fold" if cfg.data.folds >= 2
             else f"hold-out {cfg.data.val_ratio:g}" if cfg.data.val_ratio > 0
             else "no validation")
    loss = cfg.loss.name if isinstance(cfg.loss.name, str) else "+".join(cfg.loss.name)
    mixing = ("half-face CutMix" if cfg.aug.cutmix_mode == "vertical_half"
              else "mixup/cutmix" if cfg.aug.mixup_alpha or cfg.aug.cutmix_alpha else "none")
    return [f"- model: `{cfg.model.name}` ({cfg.model.head} head), {weights}",
            f"- images: {cfg.data.image_size[0]}x{cfg.data.image_size[1]}, crop "
            f"{cfg.data.crop}; validation: {split} (seed {cfg.split_seed})",
            f"- training: {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, "
            f"{cfg.optim.name} lr {_rate(cfg.optim.lr)} wd {cfg.optim.weight_decay:g}, "
            f"{cfg.sched.name} schedule",
            f"- loss: {loss} (class weights {cfg.loss.class_weights}, label smoothing "
            f"{cfg.loss.label_smoothing:g}); augmentation: "
            f"{cfg.aug.pipeline or 'built-in switches'}, mixing {mixing}",
            *(f"- outside data: `{source.path.name}` ("
              + (f"{source.share:.0%} of each epoch" if source.share else "every row each epoch")
              + f", loss weight {source.weight:g})" for source in cfg.data.external)]


def still_improving(curves: dict[str, pd.DataFrame], run: str) -> Finding | None:
    """Validation macro F1 best at the last epoch, and higher than the epoch before."""
    rising = [fold for fold, epochs in curves.items() if VAL_F1 in epochs
              and len(f1 := epochs[VAL_F1].dropna()) >= 2
              and f1.iloc[-1] >= f1.max() and f1.iloc[-1] > f1.iloc[-2]]
    if not rising:
        return None
    last = max(int(curves[fold][VAL_F1].dropna().index[-1]) + 1 for fold in rising)
    return Finding(f"validation macro F1 was still rising at the last epoch ({len(rising)} of "
                   f"{len(curves)} folds, epoch {last})",
                   f"train longer: `{RunDir(run).continue_command(2 * last)}` continues from "
                   "the last checkpoints as a new run")


def rarely_predicted(truth: np.ndarray, predicted: np.ndarray) -> list[Finding]:
    """Attribute values predicted far less often than they occur, and classes at F1 0."""
    found = []
    truth_parts, predicted_parts = labels.decode_class(truth), labels.decode_class(predicted)
    for (name, values), true, guess in zip(labels.ATTRIBUTES.items(), truth_parts,
                                           predicted_parts, strict=True):
        for value, value_name in enumerate(values):
            support, hits = int((true == value).sum()), int((guess == value).sum())
            if support >= MIN_SUPPORT and hits < RARE_SHARE * support:
                found.append(Finding(
                    f"{name} `{value_name}` is predicted for {hits} images but is true for "
                    f"{support}",
                    f"weight the rare {name} values: `-o loss.class_weights=effective`, or "
                    f"balance batches: `-o data.sampler=balanced -o data.sampler_by={name}`"))
    present = np.unique(truth)
    scores = f1_score(truth, predicted, labels=present, average=None, zero_division=0)
    zero = int((scores == 0).sum())
    if zero:
        found.append(Finding(
            f"{zero} of the {len(present)} classes in the validation data "
            f"{'has' if zero == 1 else 'have'} F1 0",
            "more epochs, class weights (`-o loss.class_weights=effective`) or a balanced "
            "sampler (`-o data.sampler=balanced`)"))
    return found


def train_val_gap(curves: dict[str, pd.DataFrame], cfg: RunConfig) -> Finding | None:
    """Last-epoch training accuracy far above validation accuracy (mean over folds); the
    remedies offered are the ones ``cfg`` does not use yet."""
    pairs = [(epochs[TRAIN_ACC].dropna(), epochs[VAL_ACC].dropna())
             for epochs in curves.values() if {TRAIN_ACC, VAL_ACC} <= set(epochs)]
    pairs = [(train.iloc[-1], val.iloc[-1]) for train, val in pairs if len(train) and len(val)]
    if not pairs:
        return None
    train, val = np.mean(pairs, axis=0)
    if train - val <= GAP:
        return None
    remedies = [
        ("`-o aug.pipeline=strong`", str(cfg.aug.pipeline) != "strong"),
        ("`-o aug.cutmix_mode=vertical_half`", cfg.aug.cutmix_mode != "vertical_half"),
        (f"`-o model.drop_rate={min(0.5, cfg.model.drop_rate + 0.2):g}`", True),
        (f"`-o optim.weight_decay={cfg.optim.weight_decay * 5 or 0.05:g}`", True),
        ("`-o train.early_stopping_patience=3`", cfg.train.early_stopping_patience is None)]
    return Finding(f"training accuracy {train:.2f} vs validation {val:.2f} at the last epoch",
                   "regularise: " + ", ".join(text for text, useful in remedies if useful))


ATTENTION_INSIDE = 0.5
"""Below this median share of a map inside the face box, the report says the network reads
something else."""


def looks_outside_face(shares: dict[str, tuple[float, int, float]], cfg: RunConfig
                       ) -> list[Finding]:
    """Attributes whose activation maps lie mostly outside the face found in the crop."""
    remedy = ("check attention.png: crop to the face (data.crop: face) so background and "
              "clothes leave the picture" if cfg.data.crop != "face" else
              "check attention.png: a smaller data.face_margin keeps less around the face; "
              "background-changing augmentation (aug.pipeline) stops it paying")
    return [Finding(f"the {name} maps lie mostly outside the face: {share:.0%} of their mass "
                    f"inside the face box, which covers {area:.0%} of the crop (medians of "
                    f"{count} out-of-fold crops)", remedy)
            for name, (share, count, area) in shares.items() if share < ATTENTION_INSIDE]


def findings(curves: dict[str, pd.DataFrame], truth: np.ndarray | None,
             predicted: np.ndarray | None, run: str, cfg: RunConfig,
             face_shares: dict[str, tuple[float, int, float]] | None = None
             ) -> list[Finding]:
    """Every finding for a run: ``curves`` are per-epoch metrics per fold (indexed by
    epoch), ``truth``/``predicted`` the out-of-fold classes (None without validation),
    ``cfg`` the run's config (remedies it already uses are not offered), ``face_shares``
    each attribute's median share of its maps inside the face (``report.face_shares``)."""
    found = [still_improving(curves, run)]
    if truth is not None and predicted is not None:
        found += rarely_predicted(truth, predicted)
    found.append(train_val_gap(curves, cfg))
    found += looks_outside_face(face_shares or {}, cfg)
    return [finding for finding in found if finding is not None]
