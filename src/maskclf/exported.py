"""Run an exported model (``maskclf export``) on onnxruntime: no torch, no Lightning.

An export folder holds ``manifest.json`` and one ONNX file per network and fold. Each ONNX
graph takes uint8 N x H x W x 3 images (already cropped and resized by ``preprocess``) and
returns probabilities with normalisation and TTA inside the graph, so predicting here is
the same arithmetic as ``maskclf predict`` on the run: folds averaged, per-attribute networks
combined by the product rule.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskclf import labels
from maskclf.atomic import write_csv_set
from maskclf.config import DataConfig
from maskclf.data.layout import read_eval
from maskclf.data.transforms import centre_crop, evaluation_view, preprocess
from maskclf.errors import InputFileError, MissingFileError, UsageError
from maskclf.submission import PredictResult, checked_submission, prediction_table

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


def is_export(path: Path | str) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(folder: Path | str) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise MissingFileError(f"{path} not found: {folder} is not a maskclf export "
                               "(make one with `maskclf export RUN --out DIR`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InputFileError(f"{path} has format {manifest.get('format')!r}; this maskclf "
                             f"reads format {MANIFEST_FORMAT}: export the run again")
    return manifest


def open_session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session for one ONNX file."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("running an export needs onnxruntime: pip install "
                         "'maskclf[serve]'") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session, batch: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


@dataclass
class ExportedModel:
    """The networks of an export, ready to run on onnxruntime's CPU provider."""

    folder: Path
    manifest: dict
    sessions: dict[str, list]  # task -> one InferenceSession per fold
    data_cfg: DataConfig  # the run's data settings: how images are cropped and resized

    @classmethod
    def load(cls, folder: Path | str, threads: int | None = None) -> ExportedModel:
        folder = Path(folder)
        manifest = read_manifest(folder)
        sessions: dict[str, list] = {}
        for network in manifest["networks"]:
            path = folder / network["file"]
            if not path.is_file():
                raise MissingFileError(f"{path} (listed in {folder / MANIFEST}) is missing")
            sessions.setdefault(network["task"], []).append(open_session(path, threads))
        return cls(folder, manifest, sessions, DataConfig(**manifest["data"]))

    run_one = staticmethod(run_session)
    """One network on one batch (a subclass may run other backends through the same API)."""

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """N x 18 probabilities of preprocessed uint8 N x H x W x 3 images."""
        parts = {}
        for task, sessions in self.sessions.items():
            outputs = [self.run_one(session, batch) for session in sessions]
            parts[task] = np.mean(outputs, axis=0, dtype=np.float64)
        return (parts[next(iter(parts))] if len(parts) == 1 else
                labels.combine_attributes(*(parts[name] for name in labels.ATTRIBUTES)))

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """An RGB image cropped and resized as the run's networks saw evaluation images."""
        cfg = self.data_cfg
        return centre_crop(preprocess(image, cfg), cfg.image_size)

    def predict_files(self, paths: list[Path], batch_size: int = 32) -> np.ndarray:
        """N x 18 probabilities of image files, decoded in threads, in order."""
        out = []
        with ThreadPoolExecutor(max_workers=4) as pool:
            for start in range(0, len(paths), batch_size):
                chunk = paths[start:start + batch_size]
                out.append(self.probs(np.stack(list(pool.map(
                    lambda p: evaluation_view(p, self.data_cfg), chunk)))))
        return np.concatenate(out) if out else np.zeros((0, labels.NUM_CLASSES))


def predict_export(folder: Path | str, data_root: Path | str) -> PredictResult:
    """``maskclf predict`` for an export: eval/images in info.csv order, written as the
    validated ``predictions.csv`` and ``submission.csv`` in the export folder."""
    model = ExportedModel.load(folder)
    info = read_eval(data_root)
    probs = model.predict_files([Path(data_root) / p for p in info["path"]])
    predictions, submission = model.folder / "predictions.csv", model.folder / "submission.csv"
    write_csv_set({predictions: prediction_table(info["ImageID"], probs),
                   submission: checked_submission(info["ImageID"], probs.argmax(axis=1), info,
                                                  submission)})
    files = [model.folder / network["file"] for network in model.manifest["networks"]]
    return PredictResult(predictions, submission, files, len(info))
