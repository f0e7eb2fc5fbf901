"""Inference: load a run's models, predict images, write predictions and the submission."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from timm.data import resolve_model_data_config
from torch.utils.data import DataLoader

from maskclf import labels
from maskclf.config import RunConfig, load_config
from maskclf.data.dataset import ImageDataset
from maskclf.data.layout import read_eval
from maskclf.data.transforms import build_transforms
from maskclf.models import create_model
from maskclf.models.heads import combine_attributes
from maskclf.progress import quiet_lightning
from maskclf.submission import prediction_table, write_csv, write_submission
from maskclf.training import build_module, build_task


@dataclass
class PredictResult:
    predictions: Path
    submission: Path
    checkpoints: list[Path]
    n_images: int


def normalisation(net: torch.nn.Module) -> tuple[tuple, tuple]:
    """(mean, std) the backbone expects, from its timm pretrained config."""
    data_cfg = resolve_model_data_config(net)
    return tuple(data_cfg["mean"]), tuple(data_cfg["std"])


def make_dataset(cfg: RunConfig, root: Path, paths, targets, net, train: bool) -> ImageDataset:
    mean, std = normalisation(net)
    return ImageDataset(root, paths, targets, cfg.data,
                        build_transforms(cfg.aug, train=train, mean=mean, std=std))


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
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers,
                        pin_memory=torch.cuda.is_available())
    quiet_lightning()
    trainer = L.Trainer(accelerator=cfg.train.accelerator, devices=1, logger=False,
                        precision=cfg.train.precision, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    module = build_module(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"ema": False, "compile": False})}), net, build_task(cfg, attribute))
    return torch.cat(trainer.predict(module, loader)).double().numpy()


def run_checkpoints(run: Path) -> list[Path]:
    """One checkpoint per fold of ``run``: the best by validation F1, else the last."""
    found = []
    for fold in sorted(Path(run).glob("fold*/checkpoints")):
        for name in ("best.ckpt", "last.ckpt"):
            if (fold / name).is_file():
                found.append(fold / name)
                break
    if not found:
        raise FileNotFoundError(f"no checkpoints under {run}/fold*/checkpoints; is {run} a "
                                "finished maskclf run?")
    return found


def combine_attribute_probs(parts: dict[str, np.ndarray]) -> np.ndarray:
    """N x 18 probabilities from per-attribute ones (the product rule)."""
    tensors = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in parts.items()}
    return combine_attributes(tensors["mask"], tensors["gender"], tensors["age"]).numpy()


def _fold_average(cfg: RunConfig, model_dir: Path, root: Path, paths,
                  attribute: str | None) -> tuple[np.ndarray, list[Path]]:
    checkpoints = run_checkpoints(model_dir)
    total = None
    for checkpoint in checkpoints:
        net = load_net(cfg, checkpoint, attribute)
        probs = predict_probs(cfg, net, make_dataset(cfg, root, paths, None, net, train=False),
                              attribute)
        total = probs if total is None else total + probs
    return total / len(checkpoints), checkpoints


def predict_paths(run: Path, cfg: RunConfig, root: Path, paths) -> tuple[np.ndarray, list[Path]]:
    """N x 18 probabilities of a run for images ``paths``, averaged over its fold models."""
    if cfg.model.head != "per_attribute":
        return _fold_average(cfg, run, root, paths, None)
    parts, checkpoints = {}, []
    for attribute in labels.ATTRIBUTES:
        parts[attribute], used = _fold_average(cfg.for_attribute(attribute), run / attribute,
                                               root, paths, attribute)
        checkpoints += used
    return combine_attribute_probs(parts), checkpoints


def predict_run(run: Path | str, data_root: Path | str) -> PredictResult:
    """Predict ``eval/images`` in ``info.csv`` order, averaging the run's fold models.

    Writes ``predictions.csv`` and a validated ``submission.csv`` into the run directory.
    """
    run, data_root = Path(run), Path(data_root)
    cfg = load_config(run / "config.yaml")
    info = read_eval(data_root)
    probs, checkpoints = predict_paths(run, cfg, data_root, info["path"])
    predictions, submission = run / "predictions.csv", run / "submission.csv"
    write_submission(info["ImageID"], probs.argmax(axis=1), info, submission)
    write_csv(prediction_table(info["ImageID"], probs), predictions)
    return PredictResult(predictions, submission, checkpoints, len(info))
