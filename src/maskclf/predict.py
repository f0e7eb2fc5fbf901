"""Inference: load a run's models, predict images, write predictions and the submission."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from timm.data import resolve_model_data_config
from torch.utils.data import DataLoader

from maskclf.config import RunConfig, load_config
from maskclf.data.dataset import ImageDataset
from maskclf.data.layout import read_eval
from maskclf.data.transforms import build_transforms
from maskclf.models import create_model
from maskclf.progress import quiet_lightning
from maskclf.submission import prediction_table, write_csv, write_submission
from maskclf.training import build_module


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


def load_net(cfg: RunConfig, checkpoint: Path) -> torch.nn.Module:
    """The network of ``cfg`` with the weights of a Lightning checkpoint (loaded safely)."""
    net = create_model(cfg.model, pretrained=False)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()
                         if k.startswith("net.")})
    return net


def predict_probs(cfg: RunConfig, net: torch.nn.Module, dataset: ImageDataset) -> np.ndarray:
    """Softmax probabilities (N x 18) of ``net`` on ``dataset``, in dataset order."""
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers,
                        pin_memory=torch.cuda.is_available())
    quiet_lightning()
    trainer = L.Trainer(accelerator=cfg.train.accelerator, devices=1, logger=False,
                        precision=cfg.train.precision, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    batches = trainer.predict(build_module(cfg, net), loader)
    return torch.cat(batches).double().numpy()


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


def predict_run(run: Path | str, data_root: Path | str) -> PredictResult:
    """Predict ``eval/images`` in ``info.csv`` order, averaging the run's fold models.

    Writes ``predictions.csv`` and a validated ``submission.csv`` into the run directory.
    """
    run, data_root = Path(run), Path(data_root)
    cfg = load_config(run / "config.yaml")
    info = read_eval(data_root)
    checkpoints = run_checkpoints(run)
    probs = np.zeros((len(info), 18))
    for checkpoint in checkpoints:
        net = load_net(cfg, checkpoint)
        probs += predict_probs(cfg, net, make_dataset(cfg, data_root, info["path"], None, net,
                                                      train=False))
    probs /= len(checkpoints)
    table = prediction_table(info["ImageID"], probs)
    predictions, submission = run / "predictions.csv", run / "submission.csv"
    write_submission(info["ImageID"], probs.argmax(axis=1), info, submission)
    write_csv(table, predictions)
    return PredictResult(predictions, submission, checkpoints, len(info))

