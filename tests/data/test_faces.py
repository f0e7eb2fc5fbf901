import numpy as np
import pytest

from maskclf.config import DataConfig
from maskclf.data.faces import detect_face, face_box
from maskclf.data.transforms import centre_box, preprocess


def test_blank_image_falls_back_to_centre_crop():
    image = np.full((120, 90, 3), 128, np.uint8)
    image[:, :45] = 0  # left half dark: a centre crop keeps both halves equally
    assert detect_face(image) is None
    cfg = DataConfig(image_size=(40, 30), crop="face", crop_fraction=0.5)
    out = preprocess(image, cfg)
    top, left, bottom, right = centre_box(120, 90, 0.5)
    expected = preprocess(image[top:bottom, left:right], cfg.model_copy(update={"crop": "none"}))
    np.testing.assert_array_equal(out, expected)


def test_detector_finds_the_face_in_a_real_photograph():
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()  # 512 x 512, face around x 160-250, y 50-160
    box = detect_face(image)
    assert box is not None
    x, y, w, h = box
    centre = (x + w / 2, y + h / 2)
    assert 150 < centre[0] < 270 and 50 < centre[1] < 170


def test_face_box_grows_to_target_aspect_and_stays_inside():
    top, left, bottom, right = face_box((40, 40, 20, 20), 100, 100, margin=0.5, aspect=4 / 3)
    assert 0 <= top < bottom <= 100 and 0 <= left < right <= 100
    assert (bottom - top) / (right - left) == pytest.approx(4 / 3, rel=0.05)
