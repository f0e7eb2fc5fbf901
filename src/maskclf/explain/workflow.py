"""Activation maps of a run's networks: ``maskclf explain`` and the report's maps.

Each attribute's map comes from the networks that predict it (the 18-class or multi-head
network, or the attribute's own network of a per-attribute run), computed at the value to
explain (``explain.cam.network_maps``), brought to the crop's size and averaged over folds — every
fold for new images, each image's own fold for out-of-fold rows — then scaled to 0-1.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import atomic_write
from maskclf.data.faces import detect_face
from maskclf.data.io import readable_images
from maskclf.data.layout import image_class
from maskclf.data.transforms import evaluation_view
from maskclf.errors import UsageError
from maskclf.explain.cam import cam_layer, network_maps
from maskclf.labels import CLASS_COLUMNS
from maskclf.models.factory import load_net
from maskclf.models.heads import build_task
from maskclf.predict.run_backend import RunPredictor
from maskclf.registry import CAM_METHODS, FACE_DETECTORS
from maskclf.reports.plots import heat_overlay, map_sheet, unit_scaled
from maskclf.reports.run_report import confident_mistakes
from maskclf.runs.directory import RunDir

ATTRIBUTES = list(labels.ATTRIBUTES)
SHEET = "explain.png"
"""The contact sheet of every explained image, beside one PNG per image."""
REPORT_SAMPLE = 40
"""Out-of-fold images per group (each mask status; each attribute's mistakes) whose maps the
report averages."""
STORED_SHRINK = 4
"""report/maps.npz keeps maps at 1/4 of the crop's sides, as 0-255 (the maps themselves are
1/32-resolution grids brought to the crop's size: nothing is lost that a figure shows)."""


def _resized(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if maps.shape[1:] == tuple(size):
        return maps
    return np.stack([cv2.resize(m, (size[1], size[0])) for m in maps])


def ensemble_maps(predictor: RunPredictor, root: Path, paths: list[str],
                  values: dict[str, np.ndarray], method: str = "gradcam",
                  folds: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Each attribute's maps (N x H x W at the run's crop size) at ``values`` (one per
    image), averaged over the networks of every fold, or with ``folds`` over each image's
    own fold; and the layer they were computed at."""
    size = tuple(predictor.data_cfg.image_size)
    sums = {name: np.zeros((len(paths), *size), np.float32) for name in values}
    counts = {name: np.zeros(len(paths)) for name in values}
    layers = set()
    for network in predictor.networks:
        chosen = (np.arange(len(paths)) if folds is None
                  else np.flatnonzero(np.asarray(folds) == network.fold))
        if not len(chosen):
            continue
        model = load_net(network.file)
        data = model.spec.cfg.data
        crops = np.stack([evaluation_view(Path(root) / paths[i], data) for i in chosen])
        layers.add(cam_layer(model.net, tuple(data.image_size)).describe())
        maps = network_maps(model.net, build_task(model.spec), model.preprocessing, crops,
                            {name: v[chosen] for name, v in values.items()}, method)
        for name, found in maps.items():
            sums[name][chosen] += _resized(found, size)
            counts[name][chosen] += 1
    return ({name: unit_scaled(sums[name] / np.maximum(counts[name], 1)[:, None, None])
             for name in values}, "; ".join(sorted(layers)))


def attribute_values(classes: np.ndarray) -> dict[str, np.ndarray]:
    """Per attribute, the value each 18-class id has."""
    return dict(zip(ATTRIBUTES, labels.decode_class(np.asarray(classes, dtype=int)),
                    strict=True))


def target_classes(target: str, paths: list[Path]) -> np.ndarray | None:
    """The class whose attribute values each map explains: None for ``predicted`` (the
    prediction decides), ``true`` (from the image's place in the competition layout) or
    one class (an id 0-17 or a name such as ``wear/female/<30``)."""
    if target == "predicted":
        return None
    if target == "true":
        found = [image_class(path) for path in paths]
        unknown = [str(path) for path, cls in zip(paths, found, strict=True) if cls is None]
        if unknown:
            raise UsageError(f"--target true: {unknown[0]} is not a training image whose "
                             "folder and name give its labels (train/images/<id>_<gender>_"
                             "<race>_<age>/<mask stem>.jpg)")
        return np.array(found)
    names = labels.class_names()
    cls = int(target) if target.isdigit() else names.index(target) if target in names else -1
    if not 0 <= cls < labels.NUM_CLASSES:
        raise UsageError(f"--target {target!r}: use predicted, true, a class id 0-17 or a "
                         f"class name such as {names[6 + 3]!r}")
    return np.full(len(paths), cls)


def _file_name(path: Path, index: int) -> str:
    """A plain, unique PNG name for an explained image."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{path.parent.name}-{path.stem}").strip("._-")
    return f"{index:03d}-{stem[:80] or 'image'}.png"


def explain_images(run_path: Path | str, images: list[Path], out_dir: Path | str,
                   method: str = "gradcam", target: str = "predicted",
                   fold: int | None = None) -> dict:
    """For each image: the crop the run's networks saw and each attribute's map over it,
    with the predicted labels and probabilities, as ``OUT/<nnn>-<name>.png``, and all of
    them in ``OUT/explain.png``; an image that does not decode is skipped (``skipped``:
    why), and none decoding is refused before anything is written."""
    CAM_METHODS.check(method)
    paths, skipped = readable_images([Path(p) for p in images], given_as="IMAGES")
    wanted = target_classes(target, paths)
    predictor = RunPredictor.open(run_path)
    if fold is not None:
        predictor.files(fold)  # a fold the run does not have is refused, naming its folds
        predictor = RunPredictor(predictor.run, folds=[fold])
    crops = [evaluation_view(p, predictor.data_cfg) for p in paths]  # a bad file fails here
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probs = predictor.predict(Path(), [str(p) for p in paths], cache=False)
    marginals = labels.attribute_marginals(probs)
    wanted = probs.argmax(axis=1) if wanted is None else wanted
    targets = attribute_values(wanted)
    maps, layer = ensemble_maps(predictor, Path(), [str(p) for p in paths], targets, method)
    rows, titles, names, results = [], [], [], []
    for i, (path, crop) in enumerate(zip(paths, crops, strict=True)):
        said = {name: marginals[name][i] for name in ATTRIBUTES}
        titles.append(["crop"] + [
            f"{name}: {labels.ATTRIBUTES[name][said[name].argmax()]} {said[name].max():.2f}"
            f"\nmap of {labels.ATTRIBUTES[name][targets[name][i]]}" for name in ATTRIBUTES])
        rows.append([crop] + [heat_overlay(crop, maps[name][i]) for name in ATTRIBUTES])
        names.append(path.name[:24])
        file = map_sheet(rows[-1:], titles[-1:], names[-1:], f"{path.name} ({method})",
                         out / _file_name(path, i))
        results.append(_described(path, file, probs[i], said, int(wanted[i])))
    sheet = map_sheet(rows, titles, names, f"{RunDir(run_path).name}: {method} at {layer}",
                      out / SHEET)
    return {"run": str(run_path), "method": method, "target": target, "layer": layer,
            "sheet": str(sheet), "images": results,
            "skipped": {str(path): reason for path, reason in skipped.items()}}


def _described(path: Path, png: Path, probs: np.ndarray, said: dict[str, np.ndarray],
               target: int) -> dict:
    """One explained image for the JSON output: its class, the class its maps explain,
    each attribute's label and probabilities."""
    return {"image": str(path), "png": str(png),
            "class": labels.class_names()[int(probs.argmax())],
            "target": labels.class_names()[target],
            "attributes": {name: {"label": labels.ATTRIBUTES[name][int(said[name].argmax())],
                                  "probabilities": dict(zip(labels.ATTRIBUTES[name],
                                                            map(float, said[name]),
                                                            strict=True))}
                           for name in ATTRIBUTES}}


def _detector(name: str) -> str:
    """The run's face detector when installed, else OpenCV's Haar cascade."""
    package = FACE_DETECTORS.get(name).package
    return name if package is None or importlib.util.find_spec(package) else "haar"


def _report_rows(oof: pd.DataFrame, predicted: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """The OOF rows the report maps: its confident mistakes, up to ``REPORT_SAMPLE`` of each
    true mask status and of each attribute's mistakes."""
    rng = np.random.default_rng(seed)
    oof = oof.reset_index(drop=True)  # positions and labels agree
    truth, said = attribute_values(oof["class"]), attribute_values(predicted)
    groups = [confident_mistakes(oof, predicted).index.to_numpy()]
    groups += [np.flatnonzero(truth["mask"] == value) for value in range(3)]
    groups += [np.flatnonzero(truth[name] != said[name]) for name in ATTRIBUTES]
    chosen = [rng.choice(g, min(len(g), REPORT_SAMPLE), replace=False) if len(g) else g
              for g in groups[1:]]
    return oof.loc[np.unique(np.concatenate([groups[0], *chosen]).astype(int))]


def write_report_maps(run_path: Path | str, data_root: Path | str | None = None,
                      method: str = "gradcam") -> Path | None:
    """``report/maps.npz`` for the report's figures: Grad-CAM maps of a sample of OOF rows
    by their own fold's networks, at the predicted values (0-255, at 1/``STORED_SHRINK`` of
    the crop), with the face box found in each crop (crop pixels, -1 when none); None for a
    run without OOF rows or images."""
    run = RunDir.open(run_path)
    oof = run.read_oof()
    if oof is None:
        return None
    root = run.data_root(data_root)
    if oof.empty or not all((root / p).is_file() for p in oof["ImageID"].head(3)):
        return None
    predicted = oof[CLASS_COLUMNS].to_numpy().argmax(axis=1)
    rows = _report_rows(oof, predicted)
    said = predicted[rows.index.to_numpy()]
    predictor = RunPredictor(run)
    paths = rows["ImageID"].tolist()
    maps, layer = ensemble_maps(predictor, root, paths, attribute_values(said), method,
                                rows["fold"].to_numpy())
    detector = _detector(predictor.data_cfg.face_detector)
    faces = []
    for path in paths:
        box = detect_face(evaluation_view(root / path, predictor.data_cfg), detector)
        faces.append(box if box is not None else (-1, -1, -1, -1))
    path = run.file(RunDir.REPORT) / RunDir.REPORT_MAPS
    path.parent.mkdir(exist_ok=True)
    small = [max(1, side // STORED_SHRINK) for side in predictor.data_cfg.image_size]
    stored = np.stack([_resized(maps[name], tuple(small)) for name in ATTRIBUTES], axis=1)
    arrays = {"image": np.array(paths), "true": rows["class"].to_numpy(), "predicted": said,
              "maps": np.round(255 * np.clip(stored, 0, 1)).astype(np.uint8),
              "face": np.array(faces, dtype=np.int32), "method": method, "layer": layer,
              "detector": detector}

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write)
    return path
