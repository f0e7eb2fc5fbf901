"""``maskclf export --int8``: an export's networks quantized by onnxruntime, and kept only
when the run's own validation rows say they still work.

Static quantization (QDQ, per-channel int8 weights, uint8 activations) after onnxruntime's
pre-processing (BatchNorm folded into the convolutions), calibrated on the run's training
images as the networks see them. Each fold's validation rows (the OOF
rows of ``oof.csv``) are predicted by that fold's fp32 and int8 networks; the export
records both macro F1, their agreement and the paired interval of the drop over persons,
and refuses the int8 networks (the fp32 export stays) when F1 falls by more than
``max_f1_drop`` and beyond noise (the interval above zero), unless forced: int8 is the
cheaper choice, kept while the evidence against it is noise.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import atomic_write
from maskclf.data.layout import read_train
from maskclf.data.transforms import evaluation_view
from maskclf.deploy.manifest import ExportDir, Manifest
from maskclf.deploy.request import MAX_F1_DROP
from maskclf.errors import UsageError
from maskclf.intervals import paired_gain
from maskclf.metrics import known_macro_f1
from maskclf.predict.onnx_backend import ExportedModel
from maskclf.results.submission import oof_persons
from maskclf.runs.directory import RunDir

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 128
QUANTIZED_OPS = ["Conv", "Clip", "Relu", "Add", "Mul", "Sub", "Div", "Sigmoid",
                 "GlobalAveragePool"]
"""The convolutions and the element-wise ops between them, so that tensors stay int8 from one
convolution to the next and a ReLU/ReLU6 becomes its convolution's output range (quantizing
only the convolutions left a float round trip after each, twice as slow, and agreed with fp32
on 75 % of a distilled EfficientNet-Lite0's validation rows against 94 %). Not the classifier:
the activation-map head reads its weight along the other axis, and onnxruntime's per-channel
quantization of that shared weight fails (IndexError on EfficientNet-Lite0's 18 x 1280)."""
CALIBRATION_PERCENTILE = 99.999
"""Each activation's range covers this share of its calibration values: the rare extreme
ones no longer stretch a tensor's 256 steps (agreement with fp32 0.938 -> 0.949 against
min-max ranges, on the same distilled student)."""
FLOAT_CONVS = 2
"""The first convolutions (the stem and the first block's) stay float: they see the raw image
at the highest resolution, and their per-channel int8 weights alone moved a fine-tuned
EfficientNet-Lite0's probabilities more than any other layer's; keeping them float cut the
mean largest probability change from 0.023 to 0.018 (faces-real, distilled student)."""


def calibration_crops(data_root: Path, data_cfg, count: int, seed: int = 0) -> np.ndarray:
    """``count`` of the run's training images, drawn at random, as the networks take them."""
    paths = read_train(data_root, check_images=False)["path"].to_numpy()
    chosen = np.random.default_rng(seed).permutation(len(paths))[:count]
    return np.stack([evaluation_view(data_root / paths[i], data_cfg) for i in chosen])


def _quantized(source: Path, target: Path, crops: np.ndarray, prepared: Path) -> None:
    """``source`` quantized into ``target`` (written atomically), calibrated on ``crops``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Crops(CalibrationDataReader):
        def __init__(self) -> None:
            # one image a batch: the percentile calibrator stacks batches, which must match
            self.batches = iter(crops[i:i + 1] for i in range(len(crops)))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # the quantizer warns on the root logger for every BN weight
    try:  # the percentile calibrator prints its progress, which would break --json
        with contextlib.redirect_stdout(io.StringIO()):
            # symbolic shape inference fails on the dynamo graphs; ONNX's own suffices
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            convs = [node.name for node in onnx.load(prepared).graph.node
                     if node.op_type == "Conv"]
            atomic_write(target, lambda tmp: quantize_static(
                str(prepared), str(tmp), Crops(), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS,
                nodes_to_exclude=convs[:FLOAT_CONVS],
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": CALIBRATION_PERCENTILE}))
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)


def quantize_export(folder: ExportDir, run: RunDir, oof: pd.DataFrame, data_root: Path,
                    max_f1_drop: float = MAX_F1_DROP, force: bool = False,
                    calibration_images: int = CALIBRATION_IMAGES) -> dict:
    """Replace the fp32 networks of the export in ``folder`` by int8 ones when they keep
    the run's validation macro F1 on ``oof`` (or ``force``); returns the new manifest,
    whose ``int8`` entry holds both F1, their agreement and the calibration."""
    fp32 = ExportedModel.load(folder.path)
    oof = oof[oof["fold"].isin(fp32.folds)].reset_index(drop=True)
    crops = calibration_crops(data_root, fp32.data_cfg, calibration_images)
    manifest = dict(fp32.manifest)
    int8_networks = []
    for network in manifest["networks"]:
        name = ExportDir.int8_name(network["file"])
        _quantized(folder.file(network["file"]), folder.file(name), crops,
                   folder.scratch(name, "prepared"))
        int8_networks.append({**network, "file": name})
    proposed = {**manifest, "networks": int8_networks}
    int8 = ExportedModel.of_manifest(folder.path, proposed, Manifest.model_validate(proposed))
    truth = labels.truth_codes(oof)
    before, after = (model.predict_oof(data_root, oof["ImageID"], oof["fold"]).argmax(axis=1)
                     for model in (fp32, int8))
    entry = {"calibration_images": len(crops), "validation_images": len(oof),
             "fp32_macro_f1": known_macro_f1(truth, before),
             "int8_macro_f1": known_macro_f1(truth, after),
             "agreement": float((before == after).mean()), "max_f1_drop": max_f1_drop,
             "forced": False, "weights": "int8 per channel", "activations": "uint8",
             "calibration": f"percentile {CALIBRATION_PERCENTILE:g}",
             "float_convolutions": FLOAT_CONVS}
    lost = paired_gain(truth, oof_persons(oof), after, before)  # fp32 minus int8
    entry["drop_interval"] = lost.as_dict()
    drop = entry["fp32_macro_f1"] - entry["int8_macro_f1"]
    if drop > max_f1_drop and lost.verdict == "better":
        if not force:
            folder.remove([network["file"] for network in int8_networks])
            raise UsageError(
                f"int8 loses {drop:.4f} macro F1 on {run.path}'s {len(oof)} validation images "
                f"(fp32 {entry['fp32_macro_f1']:.4f}, int8 {entry['int8_macro_f1']:.4f}; more "
                f"than --max-f1-drop {max_f1_drop:g} and beyond noise: 95% interval over "
                f"persons {lost.text(signed=True)}): the fp32 export in {folder.path} is kept; "
                "--force keeps int8 anyway")
        entry["forced"] = True
        log.warning("int8 loses %.4f macro F1 (more than %g), kept because of --force", drop,
                    max_f1_drop)
    written = {**manifest, "networks": int8_networks, "int8": entry}
    folder.write_manifest(written)
    folder.remove([network["file"] for network in manifest["networks"]])
    return written

