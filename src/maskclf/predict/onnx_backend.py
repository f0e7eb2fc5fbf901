"""Run an exported model (``maskclf export``) on onnxruntime: no torch, no Lightning.

An export folder holds ``manifest.json`` and one ONNX file per network and fold. Each ONNX
graph takes uint8 N x H x W x 3 images (already cropped and resized by ``preprocess``) and
returns probabilities with normalisation and TTA inside the graph, so predicting here is
the same arithmetic as ``maskclf predict`` on the run: folds averaged, per-attribute networks
combined by the product rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from maskclf import labels
from maskclf.data.transforms import centre_crop, evaluation_view, preprocess
from maskclf.deploy.manifest import MANIFEST, Manifest, load_manifest
from maskclf.errors import InputFileError, MissingFileError, UsageError, first_line
from maskclf.predict.engine import Network, Predictor
from maskclf.reports.plots import unit_scaled


def open_session(path: Path, threads: int | None = None, outputs: int | None = None,
                 cam: bool = False):
    """An onnxruntime CPU session for one ONNX file; a damaged file, or a graph that does
    not take uint8 N x H x W x 3 images (and give ``outputs`` probabilities, then with
    ``cam`` the N x maps x h x w activation maps), is one :class:`InputFileError` naming
    the file."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("running an export needs onnxruntime: pip install "
                         "'maskclf[serve]'") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors for a file it cannot load
        raise InputFileError(f"{path} is not an ONNX model onnxruntime can load: "
                             f"{first_line(exc)}") from None
    inputs, results = session.get_inputs(), session.get_outputs()
    takes_images = (len(inputs) == 1 and inputs[0].type == "tensor(uint8)"
                    and len(inputs[0].shape) == 4 and inputs[0].shape[-1] == 3)
    width = results[0].shape[-1] if results and results[0].shape else None
    gives_classes = len(results) == 1 + cam and (outputs is None or not isinstance(width, int)
                                                 or width == outputs)
    gives_maps = not cam or len(results[-1].shape or ()) == 4
    if not (takes_images and gives_classes and gives_maps):
        raise InputFileError(f"{path} is not a maskclf network: it takes "
                             f"{[(i.name, i.type, i.shape) for i in inputs]} and gives "
                             f"{[(o.name, o.type, o.shape) for o in results]}; expected uint8 "
                             "N x H x W x 3 images in and one N x classes output"
                             + (", then N x maps x h x w activation maps" if cam else ""))
    return session


def run_session(session, batch: np.ndarray) -> np.ndarray:
    """A network's probabilities (its activation maps, when it has them, are not computed)."""
    return session.run([session.get_outputs()[0].name],
                       {session.get_inputs()[0].name: batch})[0]


class ExportedModel(Predictor):
    """The export backend of the prediction engine: the networks of an export folder on
    onnxruntime's CPU provider (TTA views and normalisation are inside each graph)."""

    kind = "export"

    def __init__(self, folder: Path, manifest: dict, sessions: dict[Network, object],
                 checked: Manifest | None = None):
        self.source = self.folder = folder
        self.manifest = manifest
        self.sessions = sessions
        self.networks = list(sessions)
        checked = self.checked = checked or Manifest.model_validate(manifest)
        self.data_cfg = checked.data
        self.views = list(checked.tta)

    @classmethod
    def load(cls, folder: Path | str, threads: int | None = None) -> ExportedModel:
        """An export folder's networks, every file checked (see ``maskclf.deploy.manifest``)."""
        folder = Path(folder)
        return cls.of_manifest(folder, *load_manifest(folder), threads)

    @classmethod
    def of_manifest(cls, folder: Path, manifest: dict, checked: Manifest,
                    threads: int | None = None) -> ExportedModel:
        """The networks ``manifest`` lists in ``folder`` (``maskclf.deploy.int8`` opens its
        quantized files this way before their manifest is written)."""
        sessions = {}
        for network in checked.networks:
            path = folder / network.file
            if path.is_symlink() or not path.is_file():
                raise MissingFileError(f"{path} (listed in {folder / MANIFEST}) is missing "
                                       "or not a plain file")
            sessions[Network(network.task, network.fold, path)] = open_session(
                path, threads, len(network.outputs), cam=network.cam is not None)
        return cls(folder, manifest, sessions, checked)

    @property
    def cam_unavailable(self) -> str | None:
        """Why this export gives no activation maps (None when it does)."""
        if all(network.cam for network in self.checked.networks):
            return None
        return (self.manifest.get("cam") or {}).get("unavailable") or (
            "it was exported without activation maps (export the run again)")

    def probs_and_maps(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """N x 18 probabilities of preprocessed images, and per attribute its activation
        maps (N x h x w, 0-1) at the value the ensemble gives it, averaged over folds."""
        outputs = {network: session.run(None, {session.get_inputs()[0].name: batch})
                   for network, session in self.sessions.items()}
        probs = self.ensemble(None, lambda network: outputs[network][0])
        said = {name: values.argmax(axis=1)
                for name, values in labels.attribute_marginals(probs).items()}
        sums: dict[str, list[np.ndarray]] = {}
        for checked, (_, maps) in zip(self.checked.networks, outputs.values(), strict=True):
            for name, values in labels.ATTRIBUTES.items():
                if f"{name}/{values[0]}" not in checked.cam:
                    continue  # an attribute network of another attribute
                rows = np.array([checked.cam.index(f"{name}/{value}") for value in values])
                sums.setdefault(name, []).append(maps[np.arange(len(batch)), rows[said[name]]])
        return probs, {name: unit_scaled(np.mean(parts, axis=0))
                       for name, parts in sums.items()}

    run_one = staticmethod(run_session)
    """One network on one batch (a subclass may run other backends through the same API)."""

    def probs(self, batch: np.ndarray, fold: int | None = None) -> np.ndarray:
        """N x 18 probabilities of preprocessed uint8 N x H x W x 3 images."""
        return self.ensemble(fold, lambda network: self.run_one(self.sessions[network], batch))

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """An RGB image cropped and resized as the run's networks saw evaluation images."""
        cfg = self.data_cfg
        return centre_crop(preprocess(image, cfg), cfg.image_size)

    def _batches(self, root: Path, paths: Sequence[str], batch_size: int = 32
                 ) -> Iterator[np.ndarray]:
        """Preprocessed batches of image files, decoded in threads, in order."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            for start in range(0, len(paths), batch_size):
                chunk = [Path(root) / p for p in paths[start:start + batch_size]]
                yield np.stack(list(pool.map(lambda p: evaluation_view(p, self.data_cfg),
                                             chunk)))

    def predict(self, root: Path, paths: Sequence[str], fold: int | None = None,
                cache: bool = True) -> np.ndarray:
        """The engine's fold ensemble, each batch decoded once for all networks (an export
        never writes a decode cache)."""
        out = [self.probs(batch, fold) for batch in self._batches(root, list(paths))]
        return np.concatenate(out) if out else np.zeros((0, labels.NUM_CLASSES))

    def network_probs(self, network: Network, root: Path, paths: Sequence[str],
                      cache: bool = True) -> np.ndarray:
        return np.concatenate([self.run_one(self.sessions[network], batch)
                               for batch in self._batches(root, list(paths))])

    def predict_files(self, paths: list[Path], batch_size: int = 32) -> np.ndarray:
        """N x 18 probabilities of image files (absolute or relative to here), in order."""
        return self.predict(Path(), [str(p) for p in paths])
