"""ONNX export: onnxruntime predicts what torch predicts, for every head layout."""

import json

import numpy as np
import pandas as pd
import pytest

from maskclf.deploy.export import export_run
from maskclf.deploy.manifest import read_manifest
from maskclf.deploy.request import ExportRequest
from maskclf.errors import UsageError
from maskclf.predict.onnx_backend import ExportedModel
from maskclf.predict.workflows import predict_run
from maskclf.results.ensemble import diff
from maskclf.train.execute import train_run
from tests.conftest import tiny_config

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # trains real (tiny) models end to end


@pytest.mark.parametrize(("head", "folds"), [("single", 0), ("multihead", 0),
                                             ("per_attribute", 2)])
def test_export_predicts_what_the_run_predicts(head, folds, synthetic_root, tmp_path):
    cfg = tiny_config(f"model.head={head}", f"data.folds={folds}", "predict.tta=[hflip]")
    run = train_run(cfg, synthetic_root, tmp_path, "run", interactive=False).run
    manifest = export_run(ExportRequest(run, tmp_path / "export", data=synthetic_root))
    networks = 3 * 2 if head == "per_attribute" else 1
    assert len(manifest["networks"]) == networks
    assert manifest["verified"]["max_abs_difference"] <= 1e-4
    assert read_manifest(tmp_path / "export") == json.loads(json.dumps(manifest))

    torch_result = predict_run(run, synthetic_root)
    onnx_result = predict_run(tmp_path / "export", synthetic_root)
    expected = pd.read_csv(torch_result.predictions).filter(like="class_").to_numpy()
    got = pd.read_csv(onnx_result.predictions).filter(like="class_").to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert diff(torch_result.submission, onnx_result.submission)["changed"] == 0


def test_best_fold_export_and_unfinished_runs(synthetic_root, tmp_path):
    run = train_run(tiny_config("data.folds=2"), synthetic_root, tmp_path, "r",
                    interactive=False).run
    manifest = export_run(ExportRequest(run, tmp_path / "best", folds="best",
                                        data=synthetic_root))
    scores = {f["fold"]: f["macro_f1"] for f in
              json.loads((run / "summary.json").read_text())["folds"]}
    assert [n["fold"] for n in manifest["networks"]] == [max(scores, key=scores.get)]
    assert ExportedModel.load(tmp_path / "best").predict_files([]).shape == (0, 18)
    (run / "summary.json").unlink()
    with pytest.raises(UsageError, match="has not finished"):
        export_run(ExportRequest(run, tmp_path / "again", data=synthetic_root))


def test_an_export_predicts_images_as_its_run_does(synthetic_root, tmp_path):
    from maskclf.predict.workflows import predict_images

    run = train_run(tiny_config("data.folds=2"), synthetic_root, tmp_path, "r",
                    interactive=False).run
    export_run(ExportRequest(run, tmp_path / "export", data=synthetic_root))
    folder = synthetic_root / "eval" / "images"
    by_run = pd.read_csv(predict_images(run, [str(folder)], tmp_path / "run.csv")["predictions"])
    written = predict_images(tmp_path / "export", [str(folder)], tmp_path / "export.csv")
    by_export = pd.read_csv(written["predictions"])
    assert len(written["checkpoints"]) == 2 and written["checkpoints"][0].endswith(".onnx")
    np.testing.assert_allclose(by_export.filter(like="class_").to_numpy(),
                               by_run.filter(like="class_").to_numpy(), atol=1e-4)
    assert (by_export["label"] == by_run["label"]).all()
