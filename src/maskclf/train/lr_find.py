"""The learning-rate range test (Smith 2017; fastai's ``lr_find``) through Lightning's Tuner.

The test trains the run's own module — its model, loss, mixing, optimizer and
augmentation — on the first fold's training rows for ``steps`` batches while the rate
grows exponentially from ``min_lr`` to ``max_lr``, and suggests a rate inside the longest
stretch where the loss keeps falling (fastai's ``valley``). The weights are restored
afterwards (Lightning's Tuner does it), so nothing of the test leaks into the training that
follows.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure

from maskclf.config import RunConfig, build_config, config_to_dict
from maskclf.data.corrections import folder_labels
from maskclf.data.datamodule import FoldDataModule
from maskclf.data.splits import attach_folds, make_folds
from maskclf.errors import UsageError
from maskclf.models.factory import training_net
from maskclf.models.spec import ModelSpec, resolve_specs
from maskclf.predict.module import quiet_lightning
from maskclf.reports.plots import save
from maskclf.results.teacher import teacher_of
from maskclf.runs.directory import RunDir
from maskclf.train.module import build_module
from maskclf.train.plan import RunPlan, checked_inputs, fold_ids
from maskclf.train.request import MAX_LR, MIN_LR, STEPS, check_range

log = logging.getLogger(__name__)

"""The default range and length of the test: six decades in 100 batches."""


@dataclass(frozen=True)
class LrFinding:
    """What a range test found: the suggested rate (None when the loss never fell), the
    range tried, and the (rate, smoothed loss) curve."""

    suggested_lr: float | None
    min_lr: float
    max_lr: float
    steps: int
    lrs: list[float]
    losses: list[float]

    def record(self, plot: str | None = None) -> dict:
        """For run.json and the CLI's JSON: the figures without the curve itself."""
        found = asdict(self)
        del found["lrs"], found["losses"]
        return {**found, "steps_run": len(self.lrs), "plot": plot}


def find_lr(spec: ModelSpec, root: Path, records: pd.DataFrame, fold: int,
            min_lr: float = MIN_LR, max_lr: float = MAX_LR, steps: int = STEPS) -> LrFinding:
    """The range test of ``spec``'s network on fold ``fold``'s training rows of
    ``records`` (a ``fold`` column), on the config's accelerator, one device."""
    check_range(min_lr, max_lr, steps)
    cfg = spec.cfg  # the test sets the rate itself; optim.lr may still be `auto`
    spec = ModelSpec(spec.task, cfg.model_copy(update={
        "optim": cfg.optim.model_copy(update={"lr": min_lr})}))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = FoldDataModule(cfg, root, records, fold, with_ages=spec.regresses_age,
                          teacher=teacher_of(cfg))
    data.prepare_data()
    module = build_module(spec, training_net(spec), data.class_counts(),
                          data.partial_targets)
    loader = data.train_dataloader()
    epochs = math.ceil(steps / max(1, len(loader))) + 1  # the test stops at `steps` batches
    with tempfile.TemporaryDirectory(prefix="maskclf-lr-find-") as scratch, quiet_lightning():
        trainer = L.Trainer(accelerator=cfg.train.accelerator, devices=1,
                            precision=cfg.train.precision, max_epochs=epochs, logger=False,
                            enable_checkpointing=False, enable_model_summary=False,
                            enable_progress_bar=False, default_root_dir=scratch,
                            accumulate_grad_batches=cfg.train.accumulate,
                            gradient_clip_val=cfg.train.grad_clip, num_sanity_val_steps=0,
                            limit_val_batches=0)
        finder = Tuner(trainer).lr_find(module, train_dataloaders=loader, min_lr=min_lr,
                                        max_lr=max_lr, num_training=steps, update_attr=False)
    losses = unbiased(finder.results["loss"])
    suggested = valley(finder.results["lr"], losses)
    log.info("lr-find: %d steps from %g to %g; suggested %s", len(finder.results["lr"]),
             min_lr, max_lr, "none" if suggested is None else f"{suggested:.3g}")
    return LrFinding(None if suggested is None else float(suggested), min_lr, max_lr, steps,
                     [float(v) for v in finder.results["lr"]], [float(v) for v in losses])


LIGHTNING_BETA = 0.98
"""The smoothing of Lightning's range-test callback (``_LRCallback(beta=0.98)``)."""


def unbiased(smoothed: list[float], beta: float = LIGHTNING_BETA) -> list[float]:
    """Lightning's smoothed losses with its start-up bias removed: it divides the running
    mean of k losses by 1 - beta**(k + 1) instead of 1 - beta**k, which halves the first
    point and bends the curve's first few dozen steps down (on faces-real 2.2 where the
    loss was 4.4)."""
    return [value * (1 - beta ** (k + 1)) / (1 - beta ** k)
            for k, value in enumerate(smoothed, start=1)]


def valley(lrs: list[float], losses: list[float]) -> float | None:
    """fastai's ``valley`` rule: the rate halfway along the longest stretch over which the
    loss keeps falling (the longest decreasing subsequence, ending at its lowest point);
    None when the loss never falls.

    Lightning's ``suggestion()`` takes the steepest gradient against the rate itself, so
    on an exponential sweep the smallest, noisiest steps win: on faces-real it chose
    4.2e-5, on the plateau before the loss starts to fall. The valley ignores the noise
    of single steps and the divergence after the minimum.
    """
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(losses)
    lrs, losses = lrs[finite], losses[finite]
    longest = np.ones(len(losses), dtype=int)  # longest decreasing subsequence ending here
    for i in range(1, len(losses)):
        falling = losses[:i] > losses[i]
        if falling.any():
            longest[i] = longest[:i][falling].max() + 1
    end = int(np.argmax(longest))
    if longest[end] < 3:
        return None
    start = end - int(longest[end])
    third = (end - start) / 3
    return float(lrs[max(0, start + int(third) + int(third / 2))])


def lr_figure(found: LrFinding, path: Path, title: str) -> Path:
    """Loss against rate (log scale) with the suggestion marked and labelled."""
    figure = Figure(figsize=(6.5, 4))
    ax = figure.add_subplot()
    ax.plot(found.lrs, found.losses, color="C0")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)", title=title)
    ax.grid(alpha=0.3, which="both")
    if found.suggested_lr is not None:
        index = min(range(len(found.lrs)), key=lambda i: abs(found.lrs[i] - found.suggested_lr))
        ax.plot(found.lrs[index], found.losses[index], "o", color="C3", markersize=9,
                label=f"suggested {found.suggested_lr:.2g} (fastai's valley)")
        ax.axvline(found.suggested_lr, color="C3", alpha=0.4)
        ax.legend()
    return save(figure, path)


def find_learning_rate(cfg: RunConfig, data_root: Path | str, plot: Path,
                       min_lr: float = MIN_LR, max_lr: float = MAX_LR,
                       steps: int = STEPS) -> dict:
    """``maskclf lr-find``: the range test of each network of ``cfg`` on the first fold's
    training rows of ``data_root`` (the rows a new run's first fold trains on), with a
    plot per network (``plot``, or ``<plot stem>-<attribute>.png``)."""
    check_range(min_lr, max_lr, steps)
    root = Path(data_root)
    records, _, specs = checked_inputs(cfg, root)
    plot.parent.mkdir(parents=True, exist_ok=True)
    split = make_folds(folder_labels(records), cfg.data.folds, cfg.data.val_ratio, cfg.split_seed)
    fold = fold_ids(split)[0]
    records = attach_folds(records, split)
    found = {}
    for spec in specs:
        finding = find_lr(spec, root, records, fold, min_lr, max_lr, steps)
        path = plot if not spec.attribute else plot.with_name(
            f"{plot.stem}-{spec.attribute}{plot.suffix}")
        lr_figure(finding, path, f"{cfg.model.name}: {spec.task} network, fold {fold}")
        found[spec.task] = finding.record(str(path))
    return {"fold": fold, "networks": found}


def with_found_rates(plan: RunPlan, run: RunDir) -> RunPlan:
    """``optim.lr: auto`` replaced by the rate the range test suggests for each network
    (:func:`find_lr` on the first planned fold's training rows). The run's config.yaml
    then holds the rates, so a resume or continuation trains with them and tests nothing;
    run.json records each test (``lr_find``) and report/ holds its plot."""
    auto = [spec for spec in plan.specs if spec.cfg.optim.lr == "auto"]
    if not auto:
        return plan
    raw, found = config_to_dict(plan.cfg), {}
    for spec in auto:
        finding = find_lr(spec, plan.root, plan.records, plan.folds[0])
        if finding.suggested_lr is None:
            raise UsageError(f"optim.lr: auto: the learning-rate test of the {spec.task} "
                             f"network found no rate where the loss falls "
                             f"({len(finding.lrs)} steps); set optim.lr")
        plot = lr_figure(finding, run.lr_find_plot(spec.subdir),
                         f"{run.name}: {spec.task} network, fold {plan.folds[0]}")
        found[spec.task] = finding.record(plot.name)
        section = (raw["per_attribute"].setdefault(spec.attribute, {}) if spec.attribute
                   else raw)
        section.setdefault("optim", {})["lr"] = finding.suggested_lr
        log.info("optim.lr: auto -> %.3g for the %s network (plot: %s)",
                 finding.suggested_lr, spec.task, plot)
    if raw["optim"]["lr"] == "auto":  # a per-attribute run: the first network's rate
        raw["optim"]["lr"] = next(iter(found.values()))["suggested_lr"]
    cfg = build_config(raw, f"{run.file(RunDir.CONFIG)} with the rates found")
    run.write_config(cfg)
    plan.record["lr_find"] = found
    run.write_record(plan.record)
    return replace(plan, cfg=cfg, specs=resolve_specs(cfg))

