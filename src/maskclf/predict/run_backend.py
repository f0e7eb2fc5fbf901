"""The run backend of the prediction engine, and ``open_predictor``, which picks a backend.

A :class:`RunPredictor` is a run directory's fold networks as torch checkpoints: each one
rebuilt from its file (``load_net``) and run through Lightning's predict loop with the
run's test-time views. It answers the engine's interface (``engine.Predictor``), so
training's out-of-fold pass, ``predict``, ``oof``, ``--images``, the person vote and the
export's verification read images and combine folds the same way an export does.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from maskclf.data.loaders import make_dataset
from maskclf.deploy.manifest import is_export
from maskclf.errors import UsageError
from maskclf.models.factory import LoadedNet, load_net
from maskclf.models.spec import ModelSpec, resolve_specs
from maskclf.predict.engine import Network, Predictor
from maskclf.predict.module import predict_embeddings, predict_probs
from maskclf.predict.onnx_backend import ExportedModel
from maskclf.runs.directory import RunDir
from maskclf.tta import check_views


class RunPredictor(Predictor):
    """A run's networks from their checkpoints (best by validation F1, else last)."""

    kind = "run"

    def __init__(self, run: RunDir, views: list[str] | None = None,
                 folds: Sequence[int] | None = None):
        self.run, self.source = run, run.path
        cfg = run.read_config()
        self.specs = resolve_specs(cfg)
        self.data_cfg = cfg.data
        self.views = list(cfg.predict.tta if views is None else check_views(views))
        self._specs = {spec.task: spec for spec in self.specs}
        self._folds = folds

    @cached_property
    def networks(self) -> list[Network]:
        """Every trained fold of every network (looked up when first needed: a training
        run scores a fold before its other networks exist)."""
        return [Network(spec.task, fold, self.run.fold(spec, fold).checkpoint())
                for spec in self.specs
                for fold in (self.run.trained_folds(spec) if self._folds is None
                             else self._folds)]

    @classmethod
    def open(cls, path: Path | str, views: list[str] | None = None,
             allow_unfinished: bool = False) -> RunPredictor:
        """A finished run's predictor; an unfinished one only when allowed (its
        checkpoints may come from a fold that stopped part-way)."""
        run = RunDir.open(path)
        if not allow_unfinished:
            run.require_finished("to predict with the checkpoints it has, pass "
                                 "--allow-unfinished")
        return cls(run, views)

    @property
    def settings(self):
        """The run's ``predict`` settings (person vote, decision biases)."""
        return self.specs[0].cfg.predict

    def network_probs(self, network: Network, root: Path, paths: Sequence[str],
                      cache: bool = True) -> np.ndarray:
        model = load_net(network.file)
        return predict_probs(model, _dataset(model, root, paths, cache), self.views)

    def voting_spec(self) -> ModelSpec:
        """The network whose features group persons: the age network of a per-attribute
        run (gender and age are what the vote decides), else the run's one network."""
        return self._specs.get("age", self.specs[0])

    def embed(self, root: Path, paths: Sequence[str], fold: int) -> np.ndarray:
        network = next(n for n in self._chosen(fold) if n.task == self.voting_spec().task)
        model = load_net(network.file)
        return predict_embeddings(model, _dataset(model, root, paths, True))


def _dataset(model: LoadedNet, root: Path, paths: Sequence[str], cache: bool):
    """The evaluation dataset of ``paths`` as the checkpoint's own spec reads images
    (through the decode-once cache unless ``cache`` is False)."""
    cfg = model.spec.cfg
    if not cache:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"cache": "none"})})
    return make_dataset(cfg, root, paths, None, train=False)


def open_predictor(path: Path | str, views: list[str] | None = None,
                   allow_unfinished: bool = False) -> Predictor:
    """The predictor of a run directory or an export folder (``manifest.json``).

    ``views`` replaces a run's ``predict.tta``; an export's views are inside its graphs,
    so asking for others is refused.
    """
    if is_export(path):
        model = ExportedModel.load(path)
        if views is not None and list(views) != model.views:
            raise UsageError(f"{path} is an export: its TTA views {model.views} are fixed "
                             "when it is made (`maskclf export --tta`)")
        return model
    return RunPredictor.open(path, views, allow_unfinished)
