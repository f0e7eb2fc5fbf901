import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from maskclf.config import DataConfig
from maskclf.data.cache import settings_key
from maskclf.data.dataset import ImageDataset
from maskclf.data.face_report import face_report
from maskclf.data.faces import FACE_DETECTORS, detect_face, face_box, require_detector
from maskclf.data.transforms import centre_box, preprocess
from maskclf.errors import UsageError

DETECTORS = sorted(FACE_DETECTORS)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return pytest.importorskip("skimage.data").astronaut()  # 512 x 512


def masked(image: np.ndarray) -> np.ndarray:
    """The astronaut with a pale surgical-mask shape over nose, mouth and chin."""
    out = image.copy()
    cv2.fillPoly(out, [np.array([[180, 118], [265, 118], [255, 185], [190, 185]], np.int32)],
                 (200, 220, 235))
    return out


def centre_of(box) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2, y + h / 2


@pytest.mark.parametrize("detector", DETECTORS)
def test_blank_image_falls_back_to_centre_crop(detector):
    image = np.full((120, 90, 3), 128, np.uint8)
    image[:, :45] = 0  # left half dark: a centre crop keeps both halves equally
    assert detect_face(image, detector) is None
    cfg = DataConfig(image_size=(40, 30), crop="face", crop_fraction=0.5, face_detector=detector)
    out = preprocess(image, cfg)
    top, left, bottom, right = centre_box(120, 90, 0.5)
    expected = preprocess(image[top:bottom, left:right], cfg.model_copy(update={"crop": "none"}))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("detector", DETECTORS)
def test_detector_finds_the_face_in_a_real_photograph(detector, astronaut):
    box = detect_face(astronaut, detector)  # face around x 180-265, y 60-170
    assert box is not None
    cx, cy = centre_of(box)
    assert 180 < cx < 265 and 60 < cy < 170


def test_mtcnn_finds_a_masked_face_that_haar_misses(astronaut):
    image = masked(astronaut)
    box = detect_face(image, "mtcnn")
    assert box is not None
    cx, cy = centre_of(box)
    assert 180 < cx < 265 and 60 < cy < 170
    haar = detect_face(image, "haar")  # the reason for mtcnn: Haar loses or misplaces it
    assert haar is None or not (180 < centre_of(haar)[0] < 265 and 60 < centre_of(haar)[1] < 170)


def test_face_box_grows_to_target_aspect_and_stays_inside():
    top, left, bottom, right = face_box((40, 40, 20, 20), 100, 100, margin=0.5, aspect=4 / 3)
    assert 0 <= top < bottom <= 100 and 0 <= left < right <= 100
    assert (bottom - top) / (right - left) == pytest.approx(4 / 3, rel=0.05)


def test_a_missing_detector_package_says_how_to_install_it(monkeypatch, synthetic_root):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "faceie" else real_find_spec(name, *a))
    with pytest.raises(UsageError, match=r"maskclf\[faces\].*face_detector: haar"):
        require_detector("mtcnn")
    require_detector("haar")  # always installed
    cfg = DataConfig(crop="face", face_detector="mtcnn")
    with pytest.raises(UsageError, match="faceie"):  # before any image is decoded
        ImageDataset(synthetic_root, ["missing.jpg"], None, cfg, None)


def test_the_detector_is_part_of_the_cache_key_only_for_face_crops():
    face = DataConfig(crop="face", face_detector="mtcnn")
    assert settings_key(face) != settings_key(face.model_copy(update={"face_detector": "haar"}))
    centre = DataConfig(crop="center", face_detector="mtcnn")
    assert settings_key(centre) == settings_key(
        centre.model_copy(update={"face_detector": "haar"}))


def test_face_report_counts_each_outside_sources_images_without_a_face(synthetic_root,
                                                                      tmp_path):
    from tests.data.test_external import make_source

    grey = make_source(tmp_path / "grey", [{"file": f"{i}.png", "age": "30"} for i in range(5)])
    faces = make_source(tmp_path / "faces", [{"file": f"{i}.jpg", "age": "30"} for i in range(5)],
                        images_from=synthetic_root)
    cfg = DataConfig(image_size=(32, 24), face_detector="mtcnn")
    report = face_report(synthetic_root, tmp_path / "out", cfg, limit=4, grid=2,
                         external=[grey, faces])
    assert report["images"] == 4  # the competition's figures are its own
    by_source = {Path(s["source"]).name: s for s in report["external"]}
    assert by_source["grey"] == {"source": str(grey), "images": 4, "detected": 0,
                                 "without_face": 4}
    boxes = pd.read_csv(tmp_path / "out" / "boxes.csv")
    assert len(boxes) == 12
    found = boxes[boxes["path"].str.contains("/faces/")]["found"]
    assert by_source["faces"]["detected"] == found.sum() and len(found) == 4


def test_face_report_rates_per_mask_status_match_the_boxes(synthetic_root, tmp_path):
    cfg = DataConfig(image_size=(32, 24), face_detector="mtcnn")
    report = face_report(synthetic_root, tmp_path, cfg, limit=14, grid=3)
    boxes = pd.read_csv(tmp_path / "boxes.csv")
    assert len(boxes) == report["images"] == 14
    assert report["detected"] == boxes["found"].sum()
    statuses = boxes["path"].str.extract(r"/(\w+?)\d*\.\w+$")[0].map(
        {"mask": "wear", "incorrect_mask": "incorrect", "normal": "not_wear"})
    expected = boxes["found"].groupby(statuses).mean().to_dict()
    assert report["detection_rate_by_mask"] == pytest.approx(expected)
    grid = cv2.imread(str(tmp_path / "faces.png"))
    assert grid.shape == (3 * 32, 3 * 24, 3)
