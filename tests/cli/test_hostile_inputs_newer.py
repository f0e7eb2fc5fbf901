"""Hostile inputs to the newer surfaces — export folders, search spaces, ``predict
--images`` — through the real CLI, as ``test_hostile_inputs.py`` does for ``train`` and ``predict``.

Every case ends in exit 0 (where a user would expect it to work) or exit 2 with one message
naming the culprit: never a traceback, never a file outside the export run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from maskclf.cli import app
from tests.helpers.cli_result import TINY, assert_clear_error_or_works, tiny_dataset_and_run

pytest.importorskip("onnxruntime")
runner = CliRunner()
OUTSIDE = "/tmp/maskclf-hostile-outside.onnx"


@dataclass
class Workspace:
    data: Path
    run: Path
    export: Path
    tmp: Path

    @property
    def manifest(self) -> Path:
        return self.export / "manifest.json"

    def edit_manifest(self, edit: Callable[[dict], object]) -> list[str]:
        raw = json.loads(self.manifest.read_text())
        edit(raw)
        self.manifest.write_text(json.dumps(raw))
        return self.predict_export()

    def predict_export(self) -> list[str]:
        return ["predict", str(self.export), "--data", str(self.data)]

    def space(self, text: str) -> list[str]:
        (self.tmp / "space.yaml").write_text(text)
        return ["tune", "--data", str(self.data), "--space", str(self.tmp / "space.yaml"),
                "--trials", "1", "--out", str(self.tmp / "study"), *TINY]

    def images(self, *extra: str) -> list[str]:
        return ["predict", str(self.run), "--images", str(self.tmp / "photos"),
                "--out", str(self.tmp / "photos.csv"), *extra]

    def photos(self, bad: dict[str, bytes], good: int = 2) -> None:
        folder = self.tmp / "photos"
        folder.mkdir(exist_ok=True)
        for path in sorted((self.data / "eval" / "images").iterdir())[:good]:
            shutil.copy(path, folder / path.name)
        for name, payload in bad.items():
            (folder / name).write_bytes(payload)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A synthetic dataset, a one-epoch two-fold run and its export (read-only templates)."""
    root = tmp_path_factory.mktemp("hostile-surfaces")
    tiny_dataset_and_run(root, "-o", "data.folds=2")
    result = runner.invoke(app, ["export", str(root / "runs" / "r"), "--out",
                                 str(root / "export")])
    assert result.exit_code == 0, result.output
    return root / "data", root / "runs" / "r", root / "export"


@pytest.fixture
def ws(exported, tmp_path) -> Workspace:
    data, run, export = exported
    return Workspace(data, Path(shutil.copytree(run, tmp_path / "runs" / "r")),
                     Path(shutil.copytree(export, tmp_path / "export")), tmp_path)


def _jpeg_cut_short(w: Workspace) -> bytes:
    whole = next((w.data / "eval" / "images").iterdir()).read_bytes()
    return whole[: len(whole) // 2]


def _foreign_onnx(path: Path) -> Path:
    """A valid ONNX graph that is not a maskclf network (float input, identity)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), str(path))
    return path


def _first_network(w: Workspace) -> Path:
    return w.export / json.loads(w.manifest.read_text())["networks"][0]["file"]


CASES: list[tuple[str, Callable[[Workspace], tuple[list[str], int, str]]]] = [
    # export folders: predict EXPORT reads the manifest and every file it names
    ("manifest-missing-networks", lambda w: (w.edit_manifest(lambda m: m.pop("networks")),
                                             2, "networks")),
    ("manifest-missing-data", lambda w: (w.edit_manifest(lambda m: m.pop("data")), 2,
                                         "manifest.json")),
    ("manifest-fold-not-a-number", lambda w: (w.edit_manifest(
        lambda m: m["networks"][0].update(fold="x")), 2, "networks.0.fold")),
    ("manifest-network-outside-folder", lambda w: (w.edit_manifest(
        lambda m: m["networks"][0].update(file="../runs/outside.onnx")), 2, "outside.onnx")),
    ("manifest-network-absolute", lambda w: (w.edit_manifest(
        lambda m: m["networks"][0].update(file=OUTSIDE)), 2, "no folders")),
    ("manifest-no-networks", lambda w: (w.edit_manifest(lambda m: m.update(networks=[])), 2,
                                        "networks")),
    ("manifest-networks-do-not-combine", lambda w: (w.edit_manifest(
        lambda m: m["networks"][0].update(
            task="mask", outputs=["wear", "incorrect", "not_wear"],
            cam=["mask/wear", "mask/incorrect", "mask/not_wear"])), 2, "do not combine")),
    ("manifest-outputs-do-not-fit", lambda w: (w.edit_manifest(
        lambda m: m["networks"][0].update(outputs=["a", "b"])), 2, "do not fit task")),
    ("manifest-file-listed-twice", lambda w: (w.edit_manifest(
        lambda m: m["networks"].append(dict(m["networks"][0]))), 2, "listed twice")),
    ("manifest-other-format", lambda w: (w.edit_manifest(lambda m: m.update(format=3)), 2,
                                         "format 3")),
    ("manifest-cam-does-not-fit", lambda w: (w.edit_manifest(
        lambda m: m["networks"][0].update(cam=["mask/wear"])), 2, "does not fit task")),
    ("manifest-cam-dropped", lambda w: (w.edit_manifest(
        lambda m: m["networks"][0].update(cam=None)), 2, "not a maskclf network")),
    ("manifest-not-json", lambda w: (w.manifest.write_text("{not json") and
                                     w.predict_export(), 2, "not valid JSON")),
    ("manifest-a-list", lambda w: (w.manifest.write_text("[1, 2]") and w.predict_export(), 2,
                                   "JSON object")),
    ("manifest-bad-data-setting", lambda w: (w.edit_manifest(
        lambda m: m["data"].update(image_size="big")), 2, "data.image_size")),
    ("onnx-missing", lambda w: (_first_network(w).unlink() or w.predict_export(), 2,
                                "is missing")),
    ("onnx-damaged", lambda w: (_first_network(w).write_bytes(
        _first_network(w).read_bytes()[:500]) and w.predict_export(), 2, ".onnx")),
    ("onnx-not-onnx", lambda w: (_first_network(w).write_text("hello") and
                                 w.predict_export(), 2, "not an ONNX model")),
    ("onnx-foreign-graph", lambda w: (_foreign_onnx(_first_network(w)) and w.predict_export(),
                                      2, "not a maskclf network")),
    ("onnx-is-a-folder", lambda w: (_first_network(w).unlink() or
                                    _first_network(w).mkdir() or w.predict_export(), 2,
                                    "not a plain file")),
    ("export-serve-damaged", lambda w: (w.edit_manifest(lambda m: m.pop("networks")) and
                                        ["serve", str(w.export), "--port", "1"], 2,
                                        "networks")),
    ("export-out-is-a-file", lambda w: ((w.tmp / "file").write_text("x") and
                                        ["export", str(w.run), "--out", str(w.tmp / "file")],
                                        2, "is not a folder")),
    ("export-out-folder-of-other-things", lambda w: (
        (w.tmp / "mine").mkdir() or (w.tmp / "mine" / "notes.txt").write_text("keep") and
        ["export", str(w.run), "--out", str(w.tmp / "mine")], 2, "holds other files")),
    ("export-images-works", lambda w: (["predict", str(w.export), "--images",
                                        str(w.data / "eval" / "images"), "--out",
                                        str(w.tmp / "x.csv")], 0, "")),
    # search spaces: every key checked before the first trial
    ("space-reversed-range", lambda w: (w.space("optim.lr: {float: [0.1, 0.01]}\n"), 2,
                                        "reversed")),
    ("space-log-from-zero", lambda w: (w.space("optim.lr: {log_float: [0, 0.1]}\n"), 2,
                                       "positive low end")),
    ("space-step-on-log", lambda w: (w.space("optim.lr: {log_float: [1e-4, 1e-2], "
                                             "step: 0.001}\n"), 2, "no step")),
    ("space-negative-step", lambda w: (w.space("train.epochs: {int: [1, 4], step: -1}\n"), 2,
                                       "step -1")),
    ("space-step-too-large", lambda w: (w.space("optim.lr: {float: [0.01, 0.02], step: 1}\n"),
                                        2, "no larger than the range")),
    ("space-fractional-int-step", lambda w: (w.space("train.epochs: {int: [1, 9], "
                                                     "step: 1.5}\n"), 2, "whole number")),
    ("space-step-on-choice", lambda w: (w.space("optim.name: {choice: [adamw], step: 1}\n"),
                                        2, "not to choice")),
    ("space-choice-twice", lambda w: (w.space("optim.name: {choice: [adamw, adamw]}\n"), 2,
                                      "twice")),
    ("space-choice-empty", lambda w: (w.space("optim.name: {choice: []}\n"), 2,
                                      "at least one")),
    ("space-python-tag", lambda w: (w.space("optim.lr: !!python/object/apply:os.system "
                                            "['touch /tmp/maskclf-hostile-pwned']\n"), 2,
                                    "not plain YAML")),
    ("space-yaml-syntax", lambda w: (w.space("optim.lr: {float: [0.1, 0.2]\n"), 2,
                                     "not plain YAML")),
    ("space-when-unknown-key", lambda w: (w.space("optim.lr: {float: [0.01, 0.1], when: "
                                                  "{optim.name: sgd}}\n"), 2, "optim.lr")),
    ("space-when-impossible-value", lambda w: (w.space(
        "optim.name: {choice: [adamw, lamb]}\noptim.momentum: {float: [0.8, 0.99], when: "
        "{optim.name: sgd}}\n"), 2, "never takes")),
    ("space-value-config-refuses", lambda w: (w.space("data.folds: {choice: [3, 1]}\n"), 2,
                                              "data.folds")),
    ("space-high-end-refused", lambda w: (w.space("model.drop_rate: {float: [0.1, 1.5]}\n"), 2,
                                          "model.drop_rate")),
    ("space-key-not-a-string", lambda w: (w.space("1: {float: [0.1, 0.2]}\n"), 2, "key 1")),
    ("space-unknown-loss-choice", lambda w: (w.space("loss.name: {choice: [cross_entropy, "
                                                     "focl]}\n"), 2, "focl")),
    ("space-kind-unknown", lambda w: (w.space("optim.lr: {uniform: [0.1, 0.2]}\n"), 2,
                                      "unknown field 'uniform'")),
    # user files: what the path is and what was expected
    ("weights-source-is-a-folder", lambda w: (["weights", "import", str(w.tmp), "--model",
                                               "test_byobnet", "--out", str(w.tmp / "w.st")],
                                              2, "is a folder; expected a file")),
    ("weights-source-empty", lambda w: ((w.tmp / "empty.pth").write_bytes(b"") or
                                        ["weights", "import", str(w.tmp / "empty.pth"),
                                         "--model", "test_byobnet", "--out",
                                         str(w.tmp / "w.st")], 2, "empty.pth is empty")),
    ("weights-source-text", lambda w: ((w.tmp / "notes.pth").write_text("hello") and
                                       ["weights", "import", str(w.tmp / "notes.pth"),
                                        "--model", "test_byobnet", "--out",
                                        str(w.tmp / "w.st")], 2, "notes.pth is not a PyTorch")),
    ("weights-wrong-model", lambda w: (["weights", "import", str(next(
        (w.run / "fold0" / "checkpoints").glob("*.ckpt"))), "--model", "resnet18", "--out",
        str(w.tmp / "w.st")], 2, "other names than the model's")),
    ("weights-out-is-a-folder", lambda w: (["weights", "import", str(next(
        (w.run / "fold0" / "checkpoints").glob("*.ckpt"))), "--model", "test_byobnet",
        "--out", str(w.tmp)], 2, "is a folder; give the path of the file")),
    ("ensemble-input-is-a-folder", lambda w: (["ensemble", str(w.tmp), str(w.tmp), "--out",
                                               str(w.tmp / "e")], 2, "is a folder")),
    ("config-is-a-folder", lambda w: (["train", "--config", str(w.tmp), "--data", str(w.data)],
                                      2, "is a folder; expected a YAML file")),
    ("space-is-a-folder", lambda w: (["tune", "--data", str(w.data), "--space", str(w.tmp),
                                      "--trials", "1"], 2, "is a folder")),
    ("corrections-is-a-folder", lambda w: (["train", "--data", str(w.data), "--out",
                                            str(w.tmp / "o"), *TINY, "-o",
                                            f"data.corrections={w.tmp}"], 2,
                                           "corrections file")),
    ("corrections-empty", lambda w: ((w.tmp / "c.yaml").write_text("") or
                                     ["train", "--data", str(w.data), "--out", str(w.tmp / "o"),
                                      *TINY, "-o", f"data.corrections={w.tmp / 'c.yaml'}"], 2,
                                     "c.yaml is empty")),
    ("corrections-python-tag", lambda w: ((w.tmp / "c.yaml").write_text(
        "mask_swapped: !!python/object/apply:os.system ['touch /tmp/maskclf-hostile-pwned']\n")
        and ["train", "--data", str(w.data), "--out", str(w.tmp / "o"), *TINY, "-o",
             f"data.corrections={w.tmp / 'c.yaml'}"], 2, "not plain YAML")),
    # predict --images: unreadable files are named, skipped, or refused with --strict
    ("images-one-damaged-is-skipped", lambda w: (w.photos({"cut.jpg": _jpeg_cut_short(w)})
                                                 or w.images(), 0, "")),
    ("images-damaged-strict", lambda w: (w.photos({"cut.jpg": _jpeg_cut_short(w)}) or
                                         w.images("--strict"), 2, "cut.jpg")),
    ("images-text-named-jpg-strict", lambda w: (w.photos({"notes.jpg": b"hello"}) or
                                                w.images("--strict"), 2, "notes.jpg")),
    ("images-empty-png-strict", lambda w: (w.photos({"empty.png": b""}) or
                                           w.images("--strict"), 2, "empty.png")),
    ("images-none-readable", lambda w: (w.photos({"a.jpg": b"x", "b.png": b""}, good=0) or
                                        w.images(), 2, "none of the 2 images")),
    ("images-no-such-folder", lambda w: (["predict", str(w.run), "--images",
                                          str(w.tmp / "nowhere")], 2, "nowhere")),
]


@pytest.mark.slow
@pytest.mark.parametrize("setup", [case for _, case in CASES], ids=[name for name, _ in CASES])
def test_hostile_input_to_a_newer_surface_is_a_clear_error_or_works(ws, setup):
    argv, expected, fragment = setup(ws)
    assert_clear_error_or_works(runner.invoke(app, argv), expected, fragment)
    assert not Path(OUTSIDE).exists()


@pytest.mark.slow
def test_a_damaged_photo_among_good_ones_is_listed_in_the_csv(ws):
    ws.photos({"cut.jpg": _jpeg_cut_short(ws)})
    result = runner.invoke(app, ws.images())
    assert result.exit_code == 0, result.output
    # the console wraps at its width: between words, and inside a long temporary path
    assert "skipped 1 unreadable file" in " ".join(result.output.split())
    assert "cut.jpg" in result.output.replace("\n", "")
    table = pd.read_csv(ws.tmp / "photos.csv")
    skipped = table[table["skipped"].notna()]
    assert len(table) == 3 and list(skipped["path"].map(lambda p: Path(p).name)) == ["cut.jpg"]
    assert skipped["class_0"].isna().all() and table["class_0"].notna().sum() == 2


@pytest.mark.slow
def test_a_folder_of_other_things_is_left_untouched_by_export(ws):
    (ws.tmp / "mine").mkdir()
    (ws.tmp / "mine" / "notes.txt").write_text("keep")
    runner.invoke(app, ["export", str(ws.run), "--out", str(ws.tmp / "mine")])
    assert [p.name for p in (ws.tmp / "mine").iterdir()] == ["notes.txt"]


def test_a_png_whose_header_claims_a_huge_image_is_too_large_not_a_crash():
    import io
    import zlib

    from maskclf.data.io import decode_rgb
    from maskclf.errors import ImageTooLarge

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = (200_000).to_bytes(4, "big") * 2  # IHDR width and height: 4e10 pixels
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid chunk
    with pytest.raises(ImageTooLarge):
        decode_rgb(bytes(data))
