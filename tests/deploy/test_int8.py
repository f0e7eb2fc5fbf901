"""``maskclf export --int8``: quantized networks that round-trip through predict, checked
on the run's validation rows, refused when their F1 falls past the threshold."""

import json
import shutil

import numpy as np
import onnx
import pandas as pd
import pytest
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.config import load_config
from maskclf.data.synthetic import make_synthetic
from maskclf.deploy.int8 import FLOAT_CONVS
from tests.conftest import TINY_OVERRIDES
from tests.helpers.cli_result import assert_clear_error_or_works

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # trains a (tiny) model to quantize
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny network that has learnt something (so quantization has F1 to lose)."""
    from maskclf.train.execute import train_run

    root = tmp_path_factory.mktemp("int8")
    data = make_synthetic(root / "data", persons=30, eval_persons=2, seed=5)
    cfg = load_config(None, [*TINY_OVERRIDES, "model.name=test_efficientnet",
                             "train.epochs=10", "optim.lr=0.005", "data.folds=2"])
    result = train_run(cfg, data, root / "runs", "r", interactive=False)
    assert result.summary["validation"]["macro_f1"] > 0.15  # it learnt
    return result.run, data


def test_an_int8_export_round_trips_and_records_both_f1(trained, tmp_path):
    from maskclf.metrics import macro_f1
    from maskclf.predict.onnx_backend import ExportedModel

    run, data = trained
    out = tmp_path / "int8"
    result = runner.invoke(app, ["export", str(run), "--out", str(out), "--int8",
                                 "--max-f1-drop", "0.2", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    entry = manifest["int8"]
    files = sorted(p.name for p in out.glob("*.onnx"))
    assert files == ["fold0-int8.onnx", "fold1-int8.onnx"]  # the fp32 files are gone
    graph = onnx.load(out / files[0]).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    dequantized = {o for node in graph.node if node.op_type == "DequantizeLinear"
                   for o in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    int8_weights = [conv.input[1] in dequantized for conv in convs]
    assert int8_weights == [False] * FLOAT_CONVS + [True] * (len(convs) - FLOAT_CONVS)
    activations = [node for node in graph.node if node.op_type == "Sigmoid"]  # SiLU's
    assert activations and all(node.input[0] in dequantized for node in activations)
    assert entry["calibration"] == "percentile 99.999"
    oof = pd.read_csv(run / "oof.csv")
    model = ExportedModel.load(out)
    predicted = np.zeros(len(oof), dtype=int)
    for fold in (0, 1):
        rows = np.flatnonzero(oof["fold"] == fold)
        predicted[rows] = model.predict(data, oof["ImageID"].iloc[rows].tolist(),
                                        fold=fold).argmax(axis=1)
    assert macro_f1(oof["class"], predicted) == pytest.approx(entry["int8_macro_f1"])
    assert entry["fp32_macro_f1"] == pytest.approx(
        json.loads((run / "summary.json").read_text())["validation"]["macro_f1"], abs=0.02)
    assert entry["fp32_macro_f1"] - entry["int8_macro_f1"] <= 0.2 and not entry["forced"]
    drop = entry["drop_interval"]
    assert drop["low"] <= drop["value"] <= drop["high"]
    assert drop["value"] == pytest.approx(entry["fp32_macro_f1"] - entry["int8_macro_f1"])
    predicted_run = runner.invoke(app, ["predict", str(out), "--data", str(data)])
    assert predicted_run.exit_code == 0, predicted_run.output
    assert (out / "submission.csv").is_file()


def test_an_int8_export_that_loses_f1_is_kept_within_noise_refused_beyond_it(
        trained, tmp_path, monkeypatch):
    from maskclf.deploy import int8
    from maskclf.intervals import Interval

    run, data = trained
    blank = int8.calibration_crops(data, load_config(None, TINY_OVERRIDES).data, 4) * 0
    monkeypatch.setattr(int8, "calibration_crops", lambda *args: blank)  # black
    kept = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "kept"), "--int8",
                               "--max-f1-drop", "0.001", "--json"])
    assert kept.exit_code == 0, kept.output  # this tiny run's drop (0.05) is noise on 30
    entry = json.loads(kept.stdout)["int8"]  # persons: int8, the cheaper, is kept
    assert entry["fp32_macro_f1"] - entry["int8_macro_f1"] > 0.001
    assert entry["drop_interval"]["low"] <= 0 and not entry["forced"]
    def beyond_noise(truth, persons, int8_classes, fp32_classes) -> Interval:
        return Interval(0.05, 0.02, 0.08)

    monkeypatch.setattr(int8, "paired_gain", beyond_noise)
    out = tmp_path / "refused"
    result = runner.invoke(app, ["export", str(run), "--out", str(out), "--int8",
                                 "--max-f1-drop", "0.001"])
    assert_clear_error_or_works(result, 2, "int8 loses")
    assert "beyond noise" in result.output and "[+0.020, +0.080]" in result.output
    assert sorted(p.name for p in out.glob("*.onnx")) == ["fold0.onnx", "fold1.onnx"]
    assert "int8" not in json.loads((out / "manifest.json").read_text())  # fp32 kept
    assert runner.invoke(app, ["predict", str(out), "--data", str(data)]).exit_code == 0
    forced = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "forced"),
                                 "--int8", "--max-f1-drop", "0.001", "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["int8"]["forced"] is True


def test_int8_needs_validation_rows_and_a_sane_threshold(trained, tmp_path):
    run, _ = trained
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "x"), "--int8",
                                 "--max-f1-drop", "2"])
    assert_clear_error_or_works(result, 2, "--max-f1-drop")
    assert not (tmp_path / "x").exists()
    unvalidated = tmp_path / "no-oof"
    shutil.copytree(run, unvalidated)
    (unvalidated / "oof.csv").unlink()
    result = runner.invoke(app, ["export", str(unvalidated), "--out", str(tmp_path / "y"),
                                 "--int8"])
    assert_clear_error_or_works(result, 2, "validation rows")
    assert not (tmp_path / "y").exists()  # refused before any work
