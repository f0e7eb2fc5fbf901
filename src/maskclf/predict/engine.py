"""The prediction engine's interface: what every predictor (a run's checkpoints, an export's
ONNX files) answers, and the fold ensemble computed once for all of them.

A predictor is a set of networks, each a task (``single``, ``multihead``, ``mask``,
``gender``, ``age``) trained on one fold. :meth:`Predictor.predict` runs the networks of
every fold (or of one) on a list of images and combines them with
``labels.combine_networks`` (mean over folds, product rule across attributes); backends
only say how one network predicts. ``maskclf.predict.run_backend.open_predictor`` picks the backend
for a folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskclf import labels
from maskclf.config import DataConfig
from maskclf.errors import UsageError


@dataclass(frozen=True)
class Network:
    """One network of a predictor: its task, the fold it was trained on, its file."""

    task: str
    fold: int
    file: Path


class Predictor(ABC):
    """Probabilities and embeddings of images, from a set of fold networks."""

    kind: str = "predictor"
    """What the backend is, for messages: ``run`` or ``export``."""
    source: Path
    """The run directory or export folder."""
    networks: list[Network]
    data_cfg: DataConfig
    """How images are read: crop, size, face detector (the networks' preprocessing)."""
    views: list[str]
    """The test-time views averaged into every network's probabilities."""

    @property
    def folds(self) -> list[int]:
        return sorted({network.fold for network in self.networks})

    def files(self, fold: int | None = None) -> list[Path]:
        """The files of the networks that predict (every fold, or ``fold``)."""
        return [network.file for network in self._chosen(fold)]

    def describe(self) -> dict:
        """What this predictor is, for logs and JSON output."""
        return {"source": str(self.source), "kind": self.kind, "folds": self.folds,
                "tasks": sorted({network.task for network in self.networks}),
                "networks": [str(file) for file in self.files()], "tta": list(self.views),
                "image_size": list(self.data_cfg.image_size), "crop": self.data_cfg.crop}

    def summary_line(self) -> str:
        """What predicts, in one log line (``describe()`` lists every file, for JSON)."""
        tasks = "+".join(sorted({network.task for network in self.networks}))
        width, height = self.data_cfg.image_size
        views = f", TTA {'+'.join(self.views)}" if self.views else ""
        return (f"{self.source} ({self.kind}: {len(self.networks)} network(s) of {tasks} over "
                f"fold(s) {', '.join(map(str, self.folds))}; {width}x{height}, "
                f"{self.data_cfg.crop} crop{views})")

    def _chosen(self, fold: int | None) -> list[Network]:
        if fold is None:
            return list(self.networks)
        chosen = [network for network in self.networks if network.fold == fold]
        if not chosen:
            raise UsageError(f"{self.source} has no fold {fold}; its folds: {self.folds}")
        return chosen

    def ensemble(self, fold: int | None,
                 probs_of: Callable[[Network], np.ndarray]) -> np.ndarray:
        """N x 18 probabilities: ``probs_of`` each network of every fold (or of ``fold``),
        combined by ``labels.combine_networks``."""
        outputs: dict[str, list[np.ndarray]] = {}
        for network in self._chosen(fold):
            outputs.setdefault(network.task, []).append(probs_of(network))
        return labels.combine_networks(outputs)

    def predict(self, root: Path, paths: Sequence[str], fold: int | None = None,
                cache: bool = True) -> np.ndarray:
        """N x 18 probabilities of the images ``root / paths`` in order: the fold ensemble
        (or the networks of ``fold``). ``cache=False`` writes no decode cache (a user's
        own folder)."""
        return self.ensemble(fold, lambda network: self.network_probs(network, root, paths,
                                                                       cache))

    @abstractmethod
    def network_probs(self, network: Network, root: Path, paths: Sequence[str],
                      cache: bool = True) -> np.ndarray:
        """One network's probabilities over its task (N x 18, or N x one attribute)."""

    def predict_oof(self, root: Path, paths: Sequence[str], folds: Sequence[int]
                    ) -> np.ndarray:
        """N x 18 probabilities of out-of-fold images, each by the networks of its own fold
        (the fold that validated on it, never saw it in training), in the given order."""
        return self._by_own_fold(paths, folds,
                                 lambda chosen, fold: self.predict(root, chosen, fold))

    def embed_oof(self, root: Path, paths: Sequence[str], folds: Sequence[int]) -> np.ndarray:
        """Features of out-of-fold images, each from its own fold's network, in order."""
        return self._by_own_fold(paths, folds,
                                 lambda chosen, fold: self.embed(root, chosen, fold))

    @staticmethod
    def _by_own_fold(paths: Sequence[str], folds: Sequence[int],
                     compute: Callable[[list[str], int], np.ndarray]) -> np.ndarray:
        paths, folds = list(paths), np.asarray(folds, dtype=int)
        result = np.empty((0, 0))
        for fold in np.unique(folds):
            rows = np.flatnonzero(folds == fold)
            values = compute([paths[i] for i in rows], int(fold))
            if not result.size:
                result = np.empty((len(paths), values.shape[1]), values.dtype)
            result[rows] = values
        return result

    def embed(self, root: Path, paths: Sequence[str], fold: int) -> np.ndarray:
        """Features that group images into persons (N x features), from ``fold``'s network."""
        raise UsageError(f"{self.source} is a {self.kind}, which gives probabilities only; "
                         "use the run directory for embeddings (the person vote)")
