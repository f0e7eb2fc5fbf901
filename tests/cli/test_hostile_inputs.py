"""Hostile inputs, as a careless or malicious user would give them.

Every case ends in exit 0 (where a user would expect it to work) or exit 2 with one message
naming the offending file or key: never a traceback, never a hang.
"""

from __future__ import annotations

import io
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from maskclf.cli import app
from tests.helpers.cli_result import TINY, assert_clear_error_or_works, tiny_dataset_and_run

runner = CliRunner()


@dataclass
class Workspace:
    data: Path
    run: Path
    tmp: Path

    def first_person(self) -> Path:
        return sorted((self.data / "train" / "images").iterdir())[0]

    def first_image(self) -> Path:
        return self.first_person() / "mask1.jpg"

    def eval_info(self) -> pd.DataFrame:
        return pd.read_csv(self.data / "eval" / "info.csv", dtype=str)

    def checkpoint(self) -> Path:
        return next((self.run / "fold0" / "checkpoints").glob("*.ckpt"))

    def predictions(self, name: str, ids=None, shift: float = 0.0) -> Path:
        ids = list(self.eval_info()["ImageID"]) if ids is None else ids
        probs = np.random.default_rng(len(name)).dirichlet(np.ones(18), size=len(ids)) + shift
        table = pd.DataFrame(probs, columns=[f"class_{i}" for i in range(18)])
        table.insert(0, "ImageID", ids)
        table.to_csv(self.tmp / name, index=False)
        return self.tmp / name

    def submission(self, name: str, answers=None, encoding: str = "utf-8") -> Path:
        ids = list(self.eval_info()["ImageID"])
        answers = [i % 18 for i in range(len(ids))] if answers is None else answers
        pd.DataFrame({"ImageID": ids, "ans": answers}).to_csv(self.tmp / name, index=False,
                                                              encoding=encoding)
        return self.tmp / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic dataset and a one-epoch run trained on it (read-only templates)."""
    return tiny_dataset_and_run(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def ws(trained, tmp_path) -> Workspace:
    data, run = trained
    return Workspace(Path(shutil.copytree(data, tmp_path / "data")),
                     Path(shutil.copytree(run, tmp_path / "runs" / "r")), tmp_path)


def _write_bytes(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def _train(w: Workspace, *extra: str) -> list[str]:
    return ["train", "--data", str(w.data), "--out", str(w.tmp / "out"), *TINY, *extra]


def _predict(w: Workspace) -> list[str]:
    return ["predict", str(w.run), "--data", str(w.data)]


def _edit_info(w: Workspace, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> list[str]:
    edit(w.eval_info()).to_csv(w.data / "eval" / "info.csv", index=False)
    return _predict(w)


def _edit_train(w: Workspace, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> list[str]:
    table = pd.read_csv(w.data / "train" / "train.csv", dtype=str)
    edit(table).to_csv(w.data / "train" / "train.csv", index=False)
    return ["check-data", str(w.data)]


def _keep_persons(w: Workspace, count: int) -> bool:
    """Cut the dataset down to its first ``count`` persons (folders and train.csv)."""
    folders = sorted((w.data / "train" / "images").iterdir())
    for folder in folders[count:]:
        shutil.rmtree(folder)
    table = pd.read_csv(w.data / "train" / "train.csv", dtype=str)
    table[table["path"].isin([f.name for f in folders[:count]])].to_csv(
        w.data / "train" / "train.csv", index=False)
    return True


def _symlink_image(w: Workspace) -> bool:
    """An image replaced by a link to the same bytes elsewhere (datasets on other disks)."""
    w.first_image().rename(w.tmp / "real.jpg")
    w.first_image().symlink_to(w.tmp / "real.jpg")
    return True


def _same_gender_and_age(w: Workspace) -> bool:
    """Every person a 24-year-old woman: only the three mask classes of one group remain."""
    images = w.data / "train" / "images"
    table = pd.read_csv(w.data / "train" / "train.csv", dtype=str)
    for i, folder in enumerate(sorted(images.iterdir())):
        name = f"{folder.name.split('_')[0]}-{i}_female_Asian_24"
        folder.rename(images / name)
        table.loc[table["path"] == folder.name, ["path", "gender", "age"]] = [name, "female",
                                                                             "24"]
    table.to_csv(w.data / "train" / "train.csv", index=False)
    return True


def _resumable(w: Workspace) -> Path:
    """The trained run made to look interrupted (its summary removed)."""
    (w.run / "summary.json").unlink()
    return w.run


def _folder_to_file(folder: Path) -> list[str]:
    shutil.rmtree(folder)
    folder.write_bytes(b"x")
    return ["check-data", str(folder.parents[2])]


def _extra(w: Workspace, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> list[str]:
    """A pseudo-label table made by maskclf, then edited, given to training."""
    result = runner.invoke(app, ["pseudo-label", str(w.predictions("p.csv")),
                                 "--data", str(w.data), "--threshold", "0.01", "--out",
                                 str(w.tmp / "pseudo")])
    assert result.exit_code == 0, result.output
    extra = w.tmp / "pseudo" / "extra.csv"
    edit(pd.read_csv(extra, dtype=str, keep_default_na=False)).to_csv(extra, index=False)
    return _train(w, "-o", f"data.extra=[{w.tmp / 'pseudo'}]")


def _jpeg_bytes(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 80, 60)).save(buffer, "JPEG")
    return buffer.getvalue()


class _Exploit:
    """Unpickling this runs code: a checkpoint must never be loaded that way."""

    def __reduce__(self):
        return (Path.touch, (Path("/tmp/maskclf-hostile-pwned"),))


def _config(w: Workspace, text: str) -> Path:
    return _write_bytes(w.tmp / "bad.yaml", text.encode())


# (id, setup -> (argv, expected exit code, fragment the message must contain))
CASES: list[tuple[str, Callable[[Workspace], tuple[list[str], int, str]]]] = [
    # images
    ("corrupt-image", lambda w: (_write_bytes(w.first_image(), b"\x00garbage" * 50) and
                                 ["check-data", str(w.data)], 2, "mask1.jpg")),
    ("truncated-jpeg", lambda w: (_write_bytes(w.first_image(), _jpeg_bytes()[:200]) and
                                  ["check-data", str(w.data)], 2, "mask1.jpg")),
    ("zero-byte-image", lambda w: (_write_bytes(w.first_image(), b"") is not None and
                                   ["check-data", str(w.data)], 2, "mask1.jpg")),
    ("one-image-removed-works", lambda w: (w.first_image().unlink() or
                                           ["check-data", str(w.data)], 0, "")),
    ("cmyk-image-works", lambda w: (Image.new("CMYK", (64, 48)).save(w.first_image()) or
                                    _train(w), 0, "")),
    ("16-bit-png-works", lambda w: (Image.fromarray(np.full((48, 64), 40000, np.uint16))
                                    .save(w.first_person() / "mask5.png") or _train(w), 0, "")),
    ("decompression-bomb", lambda w: (Image.new("1", (30000, 30000)).save(
        w.first_person() / "mask5.png") or _train(w), 2, "mask5.png")),
    ("png-just-past-the-pixel-limit", lambda w: (Image.new("1", (12000, 8000)).save(
        w.first_person() / "mask5.png") or _train(w), 2, "mask5.png: cannot be decoded")),
    ("symlink-loop", lambda w: (w.first_image().unlink() or
                                w.first_image().symlink_to(w.first_image()) or
                                ["check-data", str(w.data)], 2, "mask1.jpg: symbolic link")),
    ("symlinked-image-works", lambda w: (_symlink_image(w) and _train(w), 0, "")),
    ("person-folder-is-a-file", lambda w: (_folder_to_file(w.first_person()),
                                           2, w.first_person().name)),
    # training tables
    ("duplicate-person", lambda w: (_edit_train(w, lambda t: pd.concat([t, t.head(1)])),
                                    2, "train.csv")),
    ("missing-column", lambda w: (_edit_train(w, lambda t: t.drop(columns="age")), 2, "age")),
    ("header-only-train", lambda w: (_edit_train(w, lambda t: t.head(0)), 2, "train.csv")),
    ("zero-byte-train", lambda w: (_write_bytes(w.data / "train" / "train.csv", b"") and
                                   ["check-data", str(w.data)], 2, "train.csv")),
    ("age-not-a-number", lambda w: (_edit_train(w, lambda t: t.assign(age="old")), 2, "age")),
    ("path-escapes-train", lambda w: (_edit_train(w, lambda t: t.assign(
        path=["../../etc"] + list(t["path"][1:]))), 2, "train.csv")),
    ("semicolon-train", lambda w: (pd.read_csv(w.data / "train" / "train.csv", dtype=str)
                                   .to_csv(w.data / "train" / "train.csv", sep=";",
                                           index=False) or
                                   ["check-data", str(w.data)], 2, "train.csv")),
    ("utf16-train", lambda w: (pd.read_csv(w.data / "train" / "train.csv", dtype=str)
                               .to_csv(w.data / "train" / "train.csv", encoding="utf-16",
                                       index=False) or
                               ["check-data", str(w.data)], 2, "train.csv")),
    ("one-person-train", lambda w: (_keep_persons(w, 1) and _train(w), 2, "person")),
    ("two-persons-train-works", lambda w: (_keep_persons(w, 2) and _train(w), 0, "")),
    ("two-persons-kfold-works", lambda w: (_keep_persons(w, 2) and
                                           _train(w, "-o", "data.folds=2"), 0, "")),
    ("one-gender-age-group-works", lambda w: (_same_gender_and_age(w) and
                                              _train(w, "-o", "loss.class_weights=inverse"),
                                              0, "")),
    # run files
    ("folds-file-header-only", lambda w: (_resumable(w).joinpath("folds.csv").write_text(
        "person,fold\n") and ["train", "--resume", str(w.run)], 2, "folds.csv")),
    ("folds-file-damaged", lambda w: (_resumable(w).joinpath("folds.csv").write_bytes(
        b"\xff\xfe\x00junk") and ["train", "--resume", str(w.run)], 2, "folds.csv")),
    ("one-row-predictions-ensemble-works", lambda w: (
        ["ensemble", str(w.predictions("a.csv", ids=["x.jpg"])),
         str(w.predictions("b.csv", ids=["x.jpg"])), "--out", str(w.tmp / "e")], 0, "")),
    # eval tables
    ("header-only-info", lambda w: (_edit_info(w, lambda t: t.head(0)), 2, "info.csv")),
    ("one-row-info-works", lambda w: (_edit_info(w, lambda t: t.head(1)), 0, "")),
    ("info-dot-dot", lambda w: (_edit_info(w, lambda t: t.assign(
        ImageID=["../../train/train.csv"] + list(t["ImageID"][1:]))), 2, "info.csv")),
    ("info-absolute", lambda w: (_edit_info(w, lambda t: t.assign(
        ImageID=["/etc/passwd"] + list(t["ImageID"][1:]))), 2, "info.csv")),
    ("info-duplicate-id", lambda w: (_edit_info(w, lambda t: pd.concat([t, t.head(1)])),
                                     2, "info.csv")),
    ("info-missing-image", lambda w: (_edit_info(w, lambda t: t.assign(
        ImageID=["nope.jpg"] + list(t["ImageID"][1:]))), 2, "nope.jpg")),
    ("info-cp949", lambda w: (_write_bytes(w.data / "eval" / "info.csv", (
        "ImageID,ans,메모\n" + "".join(f"{i},0,사진\n" for i in w.eval_info()["ImageID"])
    ).encode("cp949")) and _predict(w), 2, "info.csv")),
    ("data-folder-missing", lambda w: (["predict", str(w.run), "--data",
                                        str(w.tmp / "dat")], 2, "dat does not exist")),
    ("data-is-the-train-folder", lambda w: (["check-data", str(w.data / "train")], 2,
                                            f"--data {w.data}")),
    ("data-is-an-images-folder", lambda w: (["check-data", str(w.data / "train" / "images")],
                                            2, f"--data {w.data}")),
    ("shipped-recipe-by-name-works", lambda w: (_train(w, "--config", "configs/demo.yaml"),
                                                0, "")),
    ("unknown-recipe-lists-shipped-ones", lambda w: (_train(w, "--config",
                                                            "configs/nope.yaml"),
                                                     2, "cpu, demo")),
    ("extra-works", lambda w: (_extra(w, lambda t: t), 0, "")),
    ("extra-bad-class", lambda w: (_extra(w, lambda t: t.assign(**{"class": "19"})),
                                   2, "extra.csv")),
    ("extra-relative-path", lambda w: (_extra(w, lambda t: t.assign(path="../../x.jpg")),
                                       2, "extra.csv")),
    ("extra-missing-column", lambda w: (_extra(w, lambda t: t.drop(columns="gender")),
                                        2, "extra.csv")),
    # configs and overrides
    ("yaml-syntax", lambda w: (_train(w, "--config", str(_config(w, "data: [1, 2"))),
                               2, "bad.yaml")),
    ("yaml-not-a-mapping", lambda w: (_train(w, "--config", str(_config(w, "- 1\n- 2\n"))),
                                      2, "bad.yaml")),
    ("yaml-python-tag", lambda w: (_train(w, "--config", str(_config(
        w, "seed: !!python/object/apply:os.system ['true']\n"))), 2, "bad.yaml")),
    ("unknown-key", lambda w: (_train(w, "-o", "train.epoch=3"), 2, "train.epoch")),
    ("wrong-type", lambda w: (_train(w, "-o", "train.epochs=ten"), 2, "train.epochs")),
    ("override-without-equals", lambda w: (_train(w, "-o", "train.epochs"), 2, "train.epochs")),
    ("negative-size", lambda w: (_train(w, "-o", "data.image_size=[-4,8]"), 2,
                                 "data.image_size")),
    ("folds-beyond-persons", lambda w: (_train(w, "-o", "data.folds=50"), 2, "folds")),
    ("config-file-missing", lambda w: (_train(w, "--config", str(w.tmp / "nope.yaml")),
                                       2, "nope.yaml")),
    # checkpoints
    ("checkpoint-random-bytes", lambda w: (_write_bytes(w.checkpoint(), b"\x80\x04junk" * 99)
                                           and _predict(w), 2, ".ckpt")),
    ("checkpoint-truncated", lambda w: (_write_bytes(w.checkpoint(),
                                                     w.checkpoint().read_bytes()[:5000])
                                        and _predict(w), 2, ".ckpt")),
    ("checkpoint-runs-code", lambda w: (torch.save({"x": _Exploit()}, w.checkpoint())
                                        or _predict(w), 2, "run as code")),
    ("raw-pickle-runs-code", lambda w: (_write_bytes(w.checkpoint(),
                                                     pickle.dumps({"x": _Exploit()}))
                                        and _predict(w), 2, ".ckpt")),
    ("checkpoint-foreign", lambda w: (torch.save({"weight": torch.zeros(3)}, w.checkpoint())
                                      or _predict(w), 2, ".ckpt")),
    ("run-folder-missing", lambda w: (["predict", str(w.tmp / "norun"), "--data",
                                       str(w.data)], 2, "norun")),
    ("resume-missing", lambda w: (["train", "--resume", str(w.tmp / "norun")], 2, "norun")),
    ("weights-import-garbage", lambda w: (["weights", "import", str(_write_bytes(
        w.tmp / "w.pth", b"garbage")), "--model", "test_byobnet", "--out",
        str(w.tmp / "w.safetensors")], 2, "w.pth")),
    # prediction files
    ("ensemble-missing-columns", lambda w: (["ensemble", str(w.predictions("a.csv")),
                                             str(w.submission("s.csv")), "--out",
                                             str(w.tmp / "e")], 2, "s.csv")),
    ("ensemble-different-ids", lambda w: (["ensemble", str(w.predictions("a.csv")),
                                           str(w.predictions("b.csv", ids=["x"] * 14)),
                                           "--out", str(w.tmp / "e")], 2, "b.csv")),
    ("ensemble-nan", lambda w: (["ensemble", str(w.predictions("a.csv")),
                                 str(w.predictions("b.csv", shift=np.nan)),
                                 "--out", str(w.tmp / "e")], 2, "b.csv")),
    ("ensemble-works", lambda w: (["ensemble", str(w.predictions("a.csv")),
                                   str(w.predictions("bb.csv")), "--out",
                                   str(w.tmp / "e")], 0, "")),
    ("diff-lengths", lambda w: (_write_bytes(w.tmp / "short.csv", b"ImageID,ans\nx.jpg,1\n")
                                and ["diff", str(w.submission("s.csv")),
                                     str(w.tmp / "short.csv")], 2, "short.csv")),
    ("validate-utf16", lambda w: (["validate", str(w.submission("s16.csv", encoding="utf-16")),
                                   "--info", str(w.data / "eval" / "info.csv")],
                                  2, "s16.csv")),
    ("score-header-only", lambda w: (_write_bytes(w.tmp / "empty.csv", b"ImageID,ans\n") and
                                     ["score", str(w.tmp / "empty.csv"), "--labels",
                                      str(w.data / "eval" / "labels.csv")], 2, "empty.csv")),
    ("score-cp949-labels", lambda w: (_write_bytes(w.tmp / "labels.csv", (
        "ImageID,class,메모\n" + "".join(f"{i},0,사진\n" for i in w.eval_info()["ImageID"])
    ).encode("cp949")) and ["score", str(w.submission("s.csv")), "--labels",
                            str(w.tmp / "labels.csv")], 2, "labels.csv")),
]


@pytest.mark.slow
@pytest.mark.parametrize("setup", [case for _, case in CASES], ids=[name for name, _ in CASES])
def test_hostile_input_is_a_clear_error_or_works(ws, setup):
    argv, expected, fragment = setup(ws)
    assert_clear_error_or_works(runner.invoke(app, argv), expected, fragment)
