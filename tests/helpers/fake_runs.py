"""Run directories as the readers of out-of-fold rows see them, without training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskclf.atomic import write_csv
from maskclf.results.submission import oof_table


def labelled_persons(persons: int = 80, images: int = 7, seed: int = 0):
    """Image ids, random 18-class labels and the person of each image."""
    rng = np.random.default_rng(seed)
    person = np.repeat([f"p{i:03d}" for i in range(persons)], images)
    ids = np.array([f"{p}/img{i % images}.jpg" for i, p in enumerate(person)])
    return rng, ids, rng.integers(0, 18, len(ids)), person


def probabilities(rng, truth, right: float) -> np.ndarray:
    """Peaked probabilities whose argmax is the true class for a share ``right`` of rows."""
    classes = np.where(rng.random(len(truth)) < right, truth, rng.integers(0, 18, len(truth)))
    probs = np.full((len(truth), 18), 0.01)
    probs[np.arange(len(truth)), classes] = 0.83
    return probs


def fake_run(folder: Path, ids, probs, truth, person) -> Path:
    """A run directory holding its config and its out-of-fold rows."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 42\n")
    write_csv(oof_table(ids, probs, np.zeros(len(ids)), truth, person), folder / "oof.csv")
    return folder
