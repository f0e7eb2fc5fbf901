"""Masks drawn onto labelled faces from their landmarks (``maskclf synth-masks``)."""

import numpy as np
import pandas as pd
import pytest

from maskclf.config import ExternalSource
from maskclf.data import mask_drawing
from maskclf.data.external import read_sources
from maskclf.data.mask_drawing import Landmarks, draw_mask
from tests.data.test_external import make_source

# a face 200 px wide: eyes at y 60, nose tip at y 100, mouth at y 140
POINTS = Landmarks.of([60, 60, 140, 60, 100, 100, 75, 140, 125, 140])
BLUE = (40, 90, 220)


def _drawn(placement: str, shape: str = "surgical") -> np.ndarray:
    face = np.full((220, 200, 3), 128, np.uint8)
    return draw_mask(face, POINTS, placement, shape, BLUE, np.random.default_rng(0))


def _covered(image: np.ndarray, point) -> bool:
    x, y = (int(round(v)) for v in point)
    return bool(image[y, x, 2] > 170 and image[y, x, 0] < 90)  # blue, not the grey face


@pytest.mark.parametrize("shape", mask_drawing.SHAPES)
def test_a_worn_mask_covers_the_nose_and_mouth_the_landmarks_give(shape):
    image = _drawn("covering", shape)
    for point in (POINTS.nose, POINTS.mouth_left, POINTS.mouth_right,
                  (POINTS.mouth_left + POINTS.mouth_right) / 2):
        assert _covered(image, point)
    assert not _covered(image, POINTS.left_eye) and not _covered(image, POINTS.right_eye)


def test_a_mask_worn_wrong_leaves_the_nose_or_the_mouth_out():
    nose_out = _drawn("nose_out")
    assert not _covered(nose_out, POINTS.nose)
    assert _covered(nose_out, (POINTS.mouth_left + POINTS.mouth_right) / 2)
    chin = _drawn("chin")
    assert not _covered(chin, POINTS.nose)
    assert not _covered(chin, (POINTS.mouth_left + POINTS.mouth_right) / 2)
    assert _covered(chin, (100, 195))  # the chin


def test_the_mask_follows_a_tilted_head():
    tilted = Landmarks.of([60, 40, 140, 80, 90, 110, 55, 140, 105, 165])
    face = np.full((240, 220, 3), 128, np.uint8)
    image = draw_mask(face, tilted, "covering", "surgical", BLUE, np.random.default_rng(0))
    for point in (tilted.nose, tilted.mouth_left, tilted.mouth_right):
        assert _covered(image, point)


def test_synth_masks_writes_a_source_of_drawn_masks_with_the_faces_labels(tmp_path,
                                                                       monkeypatch):
    source = make_source(tmp_path / "faces", [
        {"file": "a.jpg", "gender": "female", "age": "70"},
        {"file": "b.jpg", "gender": "male", "age": ""},
        {"file": "c.jpg", "gender": "", "age": "8"}])
    no_face = {"b"}  # b's face gives no landmarks

    def landmarks(image):
        name = landmarks.names.pop(0)
        return None if name in no_face else POINTS

    landmarks.names = ["a", "b", "c"]
    monkeypatch.setattr(mask_drawing, "face_landmarks", landmarks)
    report = mask_drawing.synth_masks(source, tmp_path / "drawn", seed=1, per_face=2)
    assert report["faces"] == 3 and report["skipped_without_landmarks"] == 1
    assert report["images"] == 8  # two faces x (2 worn + 2 worn wrong)
    table = pd.read_csv(tmp_path / "drawn" / "labels.csv", keep_default_na=False, dtype=str)
    assert sorted(table["mask"].value_counts().items()) == [("incorrect", 4), ("wear", 4)]
    by_face = table.assign(face=table["file"].str[0]).groupby("face")
    assert by_face["gender"].unique().to_dict() == {"a": ["female"], "c": [""]}
    assert by_face["age"].unique().to_dict() == {"a": ["70"], "c": ["8"]}
    assert (tmp_path / "drawn" / "contact.png").stat().st_size > 1000
    rows = read_sources([ExternalSource(path=tmp_path / "drawn")])  # a valid source
    assert len(rows) == 8 and set(rows["mask"]) == {0, 1}


def test_synth_masks_refuses_an_out_folder_in_use_and_a_bad_source(tmp_path):
    from typer.testing import CliRunner

    from maskclf.cli import app

    pytest.importorskip("faceie")
    source = make_source(tmp_path / "faces", [{"file": "a.jpg", "gender": "femal"}])
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["synth-masks", str(source), "--out", str(used)])
    assert result.exit_code == 2 and "is not a new or empty folder" in result.output
    assert (used / "keep.txt").read_text() == "mine"
    result = CliRunner().invoke(app, ["synth-masks", str(source), "--out",
                                      str(tmp_path / "new")])
    assert result.exit_code == 2 and "unknown gender 'femal'" in result.output
    assert not (tmp_path / "new").exists()
