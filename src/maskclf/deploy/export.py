"""``maskclf export``: a run's networks as ONNX files and a manifest, checked against torch.

Each ONNX graph is the prediction step itself (``InferenceModule.predict_step``): uint8
N x H x W x 3 in, normalisation, the run's TTA views, probabilities out; a dynamic batch
axis, weights embedded. ``predict.onnx_backend.ExportedModel`` runs them on onnxruntime; the
finished export is checked against the run through the prediction engine (the same images,
decoded and combined by each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from maskclf import labels
from maskclf.atomic import atomic_write
from maskclf.config import config_to_dict
from maskclf.data.layout import read_eval, read_train
from maskclf.data.transforms import evaluation_view
from maskclf.deploy.int8 import quantize_export
from maskclf.deploy.manifest import MANIFEST_FORMAT, ExportDir, Manifest
from maskclf.deploy.request import ExportRequest
from maskclf.errors import UsageError
from maskclf.explain.cam import CamHead, cam_layer, exact_cam
from maskclf.models.factory import LoadedNet, load_net
from maskclf.models.heads import build_task
from maskclf.models.spec import ModelSpec, resolve_specs
from maskclf.predict.module import InferenceModule
from maskclf.predict.onnx_backend import ExportedModel, open_session
from maskclf.predict.run_backend import RunPredictor
from maskclf.runs.directory import RunDir

TOLERANCE = 1e-4
"""Largest difference of a probability between onnxruntime and torch an export may show."""


class PredictionGraph(torch.nn.Module):
    """What ``maskclf predict`` computes for one network, as one traceable module; with
    ``cam``, also the class activation map of every attribute value (``cam.CamHead``, on
    the plain view) as a second output."""

    def __init__(self, model: LoadedNet, tta: list[str], cam: bool = False):
        super().__init__()
        task = build_task(model.spec)
        self.inner = InferenceModule(model.net, task, model.preprocessing, tta=tta)
        self.cam = CamHead(model.net, task) if cam else None
        self.eval()

    @property
    def output_names(self) -> list[str]:
        return ["probabilities", *(["cam"] if self.cam is not None else [])]

    def forward(self, images: torch.Tensor):
        probs = self.inner.predict_step((images,), 0).float()
        if self.cam is None:
            return probs
        return probs, self.cam(self.inner.normalize(images))


def _cam_entry(found: dict[str, bool]) -> dict:
    """The manifest's ``cam``: where the maps come from, or why the export has none (every
    network must have them: the served maps average the folds)."""
    if all(found.values()):
        return {"layer": "; ".join(found), "method": "Grad-CAM of the log-odds of attribute = "
                "value at the pooled layer, computed in the graph (exact for a linear head)",
                "scale": "0-1 per map"}
    return {"unavailable": "; ".join(why for why, fits in found.items() if not fits)}


def _sample_paths(data_root: Path, count: int) -> list[str]:
    """A few of the run's own images (eval, else training), relative to ``data_root``."""
    try:
        paths = read_eval(data_root, check_images=False)["path"].tolist()
    except Exception:  # noqa: BLE001 - no usable eval set: the training images will do
        paths = read_train(data_root, check_images=False)["path"].tolist()
    return paths[:count]


def export_run(request: ExportRequest) -> dict:
    """Export every network the run predicts with, verify each on ``check_images`` of the
    run's images and the whole export against the whole run, then write ``manifest.json``
    (once); returns the manifest. ``int8`` then replaces the networks by quantized ones
    when they keep the validation F1 within ``max_f1_drop`` (or ``force``; see
    ``maskclf.deploy.int8``)."""
    checked = request.checked()
    run, views, chosen, data_root = checked.run, checked.views, checked.folds, checked.data_root
    cfg = run.read_config()
    specs = resolve_specs(cfg)
    folder = ExportDir(request.out)
    folder.path.mkdir(parents=True, exist_ok=True)
    sample_paths = _sample_paths(data_root, request.check_images)
    sample = np.stack([evaluation_view(data_root / p, cfg.data) for p in sample_paths])
    networks = [_export_network(run, spec, fold, views, sample, folder, request.opset)
                for spec in specs for fold in chosen or run.trained_folds(spec)]
    cams = {entry.pop("cam_layer"): entry["cam"] is not None for entry in networks}
    manifest = {
        "format": MANIFEST_FORMAT, "source_run": str(run.path.resolve()),
        "head": cfg.model.head, "model": cfg.model.name, "tta": views,
        "input": {"layout": "N x H x W x 3 uint8 RGB", "size": list(cfg.data.image_size),
                  "resize": "area when shrinking 2x or more, else bilinear",
                  "crop": cfg.data.crop},
        "data": config_to_dict(cfg)["data"],
        "classes": labels.class_names(),
        "attributes": {name: list(values) for name, values in labels.ATTRIBUTES.items()},
        "combine": ("mean over folds" if len(specs) == 1 else
                    "mean over folds per attribute, then the product "
                    "p(class) = p(mask) p(gender) p(age)"),
        "networks": networks,
        "cam": _cam_entry(cams),
        "verified": {"images": len(sample),
                     "max_abs_difference": max(n["max_abs_difference"] for n in networks),
                     "tolerance": TOLERANCE},
    }
    manifest["verified"]["ensemble_max_abs_difference"] = _verify_ensemble(
        run, folder, manifest, chosen, data_root, sample_paths)
    folder.write_manifest(manifest)
    if request.int8:
        manifest = quantize_export(folder, run, checked.oof, data_root, request.max_f1_drop,
                                   request.force)
    return manifest


def _export_network(run: RunDir, spec: ModelSpec, fold: int, views: list[str],
                    sample: np.ndarray, folder: ExportDir, opset: int | None) -> dict:
    """One network as an ONNX file, checked against torch on ``sample``; its manifest
    entry (with ``cam_layer``: the layer its maps come from, or why it has none)."""
    name = ExportDir.network_name(spec.subdir, fold)
    model = load_net(run.fold(spec, fold).checkpoint())
    size = tuple(spec.cfg.data.image_size)
    why_not = exact_cam(model.net, size)
    graph = PredictionGraph(model, views, cam=why_not is None)
    export_graph(graph, sample, folder.file(name), opset)
    return {"file": name, "task": spec.task, "fold": fold, "outputs": _output_names(spec.task),
            "mean": graph.inner.mean.flatten().div(255).tolist(),
            "std": graph.inner.std.flatten().div(255).tolist(),
            "max_abs_difference": graph_difference(graph, sample, folder.file(name)),
            "cam": None if graph.cam is None else graph.cam.names(),
            "cam_layer": why_not or cam_layer(model.net, size).describe()}


def _verify_ensemble(run: RunDir, folder: ExportDir, manifest: dict, folds: list[int] | None,
                     data_root: Path, paths: list[str]) -> float:
    """The whole export (its manifest not written yet) against the whole run through the
    prediction engine — files decoded, networks combined — on the same images; the
    export's files are removed above ``TOLERANCE``."""
    expected = RunPredictor(run, manifest["tta"], folds).predict(data_root, paths, cache=False)
    exported = ExportedModel.of_manifest(folder.path, manifest, Manifest.model_validate(manifest))
    difference = float(np.abs(exported.predict(data_root, paths) - expected).max())
    if not difference <= TOLERANCE:
        folder.remove([network["file"] for network in manifest["networks"]])
        raise UsageError(f"the export in {folder.path} predicts the run's images differently "
                         f"from the run by {difference:.2e} (more than {TOLERANCE:g}); not "
                         "exported")
    return difference


def _output_names(task: str) -> list[str]:
    return list(labels.class_names()) if task in ("single", "multihead") else list(
        labels.ATTRIBUTES[task])


def export_graph(graph: PredictionGraph, sample: np.ndarray, path: Path, opset: int | None
                 ) -> None:
    """``graph`` as an ONNX file at ``path`` (written atomically): dynamo export, a dynamic
    batch axis, the weights inside the file."""
    example = torch.from_numpy(sample[:2])
    batch = torch.export.Dim("batch", min=1)

    def write(tmp: Path) -> None:
        with torch.no_grad():
            program = torch.onnx.export(graph, (example,), dynamo=True, input_names=["images"],
                                        output_names=graph.output_names, opset_version=opset,
                                        dynamic_shapes={"images": {0: batch}}, verbose=False)
        program.save(str(tmp), external_data=False)

    atomic_write(path, write)


def graph_difference(graph: PredictionGraph, sample: np.ndarray, path: Path) -> float:
    """Largest difference of a probability (or an activation map's value) between
    onnxruntime and torch on ``sample``."""
    with torch.no_grad():
        expected = graph(torch.from_numpy(sample))
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    session = open_session(path, cam=graph.cam is not None)
    got = session.run(None, {session.get_inputs()[0].name: sample})
    difference = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    if not difference <= TOLERANCE:
        path.unlink(missing_ok=True)
        raise UsageError(f"the ONNX export of {path.name} differs from torch by {difference:.2e} "
                         f"(more than {TOLERANCE:g}) on the run's images; not exported")
    return difference

