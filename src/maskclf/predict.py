"""Inference: load a run's models, predict images, write predictions and the submission."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from maskclf import labels
from maskclf.config import RunConfig, load_config
from maskclf.data.cache import open_cache
from maskclf.data.dataset import ImageDataset
from maskclf.data.layout import read_eval
from maskclf.data.transforms import build_transforms
from maskclf.decisions import apply_biases, load_biases
from maskclf.metrics import score
from maskclf.models import create_model
from maskclf.models.heads import combine_attributes
from maskclf.progress import quiet_lightning
from maskclf.submission import (
    CLASS_COLUMNS,
    prediction_table,
    read_prediction_file,
    write_csv,
    write_submission,
)
from maskclf.training import build_module, build_task
from maskclf.tta import check_views


@dataclass
class PredictResult:
    predictions: Path
    submission: Path
    checkpoints: list[Path]
    n_images: int


def make_dataset(cfg: RunConfig, root: Path, paths, targets, train: bool) -> ImageDataset:
    """Images of ``paths`` with the run's transforms, read through the decode-once cache."""
    crop_to = tuple(cfg.data.image_size) if cfg.data.crop_margin else None
    transform = build_transforms(cfg.aug, train=train, seed=cfg.seed, crop_to=crop_to)
    return ImageDataset(root, paths, targets, cfg.data, transform,
                        disk=open_cache(root, cfg.data, len(paths)))


def loader_workers(setting: int | str) -> int:
    """``data.num_workers``, with ``auto`` resolved to the CPU cores this process may use."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, cores or 1)


def make_loader(dataset: ImageDataset, cfg: RunConfig, shuffle: bool = False, sampler=None,
                drop_last: bool = False) -> DataLoader:
    """The DataLoader of every stage: workers kept alive, pinned memory on a GPU.

    Images read straight from a cache pack with nothing to augment load in the main
    process: a row copy is cheaper than shipping the batch from a worker.
    """
    workers = 0 if dataset.served_from_packs() else loader_workers(cfg.data.num_workers)
    return DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=shuffle, sampler=sampler,
                      drop_last=drop_last and len(dataset) > cfg.train.batch_size,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())


def build_net(cfg: RunConfig, attribute: str | None = None,
              pretrained: bool | None = None) -> torch.nn.Module:
    """The network of ``cfg`` with as many outputs as its head needs."""
    return create_model(cfg.model, num_classes=build_task(cfg, attribute).num_outputs,
                        pretrained=pretrained)


def load_net(cfg: RunConfig, checkpoint: Path, attribute: str | None = None) -> torch.nn.Module:
    """The network of a Lightning checkpoint (loaded safely); its EMA weights when saved."""
    net = build_net(cfg, attribute, pretrained=False)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in state) else "net."
    net.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()
                         if k.startswith(prefix)})
    return net


def predict_probs(cfg: RunConfig, net: torch.nn.Module, dataset: ImageDataset,
                  attribute: str | None = None) -> np.ndarray:
    """Probabilities of ``net`` on ``dataset`` in dataset order (N x 18, or N x attribute)."""
    loader = make_loader(dataset, cfg)
    quiet_lightning()
    trainer = L.Trainer(accelerator=cfg.train.accelerator, devices=1, logger=False,
                        precision=cfg.train.precision, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    module = build_module(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"ema": False, "compile": False})}), net, build_task(cfg, attribute))
    return torch.cat(trainer.predict(module, loader)).double().numpy()


def fold_checkpoint(model_dir: Path, fold: int) -> Path:
    """The checkpoint of one fold: the best by validation F1, else the last."""
    for name in ("best.ckpt", "last.ckpt"):
        path = Path(model_dir) / f"fold{fold}" / "checkpoints" / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"no checkpoint in {model_dir}/fold{fold}/checkpoints; is "
                            f"{model_dir} a finished maskclf run?")


def run_folds(run: Path, cfg: RunConfig) -> list[int]:
    """The folds a run trained (from its first model directory)."""
    model_dir = run / "mask" if cfg.model.head == "per_attribute" else run
    folds = sorted(int(p.name.removeprefix("fold")) for p in model_dir.glob("fold*")
                   if p.name.removeprefix("fold").isdigit() and (p / "checkpoints").is_dir())
    if not folds:
        raise FileNotFoundError(f"no fold*/checkpoints under {model_dir}; is {run} a finished "
                                "maskclf run?")
    return folds


def combine_attribute_probs(parts: dict[str, np.ndarray]) -> np.ndarray:
    """N x 18 probabilities from per-attribute ones (the product rule)."""
    tensors = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in parts.items()}
    return combine_attributes(tensors["mask"], tensors["gender"], tensors["age"]).numpy()


def _predict_model(cfg: RunConfig, checkpoint: Path, root: Path, paths,
                   attribute: str | None) -> np.ndarray:
    net = load_net(cfg, checkpoint, attribute)
    return predict_probs(cfg, net, make_dataset(cfg, root, paths, None, train=False),
                         attribute)


def predict_fold(run: Path, cfg: RunConfig, root: Path, paths, fold: int
                 ) -> tuple[np.ndarray, list[Path]]:
    """N x 18 probabilities of one fold's model (or its three attribute models)."""
    if cfg.model.head != "per_attribute":
        checkpoint = fold_checkpoint(run, fold)
        return _predict_model(cfg, checkpoint, root, paths, None), [checkpoint]
    parts, used = {}, []
    for attribute in labels.ATTRIBUTES:
        sub = cfg.for_attribute(attribute).model_copy(update={"predict": cfg.predict})
        checkpoint = fold_checkpoint(run / attribute, fold)
        parts[attribute] = _predict_model(sub, checkpoint, root, paths, attribute)
        used.append(checkpoint)
    return combine_attribute_probs(parts), used


def predict_paths(run: Path, cfg: RunConfig, root: Path, paths) -> tuple[np.ndarray, list[Path]]:
    """N x 18 probabilities for images ``paths``: the mean over the run's fold models."""
    total, used = None, []
    for fold in run_folds(run, cfg):
        probs, checkpoints = predict_fold(run, cfg, root, paths, fold)
        total = probs if total is None else total + probs
        used += checkpoints
    return total / len(run_folds(run, cfg)), used


def with_tta(cfg: RunConfig, tta: list[str] | None) -> RunConfig:
    """``cfg`` with ``predict.tta`` replaced when ``tta`` is given."""
    if tta is None:
        return cfg
    return cfg.model_copy(update={"predict": cfg.predict.model_copy(
        update={"tta": check_views(tta)})})


def predict_run(run: Path | str, data_root: Path | str, tta: list[str] | None = None,
                tune_decisions: bool | None = None) -> PredictResult:
    """Predict ``eval/images`` in ``info.csv`` order, averaging the run's fold models.

    Writes ``predictions.csv`` and a validated ``submission.csv`` into the run directory;
    with ``predict.tune_decisions`` (or ``tune_decisions=True``) the run's decision biases
    choose the submitted class. ``tta`` replaces the config's ``predict.tta``.
    """
    run, data_root = Path(run), Path(data_root)
    cfg = with_tta(load_config(run / "config.yaml"), tta)
    info = read_eval(data_root)
    probs, checkpoints = predict_paths(run, cfg, data_root, info["path"])
    decided = probs.argmax(axis=1)
    if cfg.predict.tune_decisions if tune_decisions is None else tune_decisions:
        decided = apply_biases(probs, load_biases(run))
    predictions, submission = run / "predictions.csv", run / "submission.csv"
    write_submission(info["ImageID"], decided, info, submission)
    write_csv(prediction_table(info["ImageID"], probs), predictions)
    return PredictResult(predictions, submission, checkpoints, len(info))


def predict_oof(run: Path | str, data_root: Path | str, tta: list[str] | None = None,
                out_name: str = "oof_tta.csv") -> tuple[Path, dict]:
    """Recompute out-of-fold probabilities with each fold's own model (e.g. with TTA).

    The fold of each training image comes from ``RUN/oof.csv``; returns the file and scores.
    """
    run, data_root = Path(run), Path(data_root)
    cfg = with_tta(load_config(run / "config.yaml"), tta)
    oof = read_prediction_file(run / "oof.csv")
    tables = []
    for fold, rows in oof.groupby("fold", sort=True):
        probs, _ = predict_fold(run, cfg, data_root, rows["ImageID"], int(fold))
        tables.append(prediction_table(rows["ImageID"], probs).assign(
            fold=int(fold), **{"class": rows["class"].to_numpy()}))
    table = pd.concat(tables, ignore_index=True)
    write_csv(table, run / out_name)
    return run / out_name, score(table["class"], table[CLASS_COLUMNS].to_numpy().argmax(axis=1))
