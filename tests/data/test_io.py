import numpy as np
import pytest
from PIL import Image

from maskclf.data.io import is_image_file, read_rgb


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "LA"])
def test_odd_modes_become_8bit_rgb(tmp_path, mode):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    source = Image.new("RGB", (20, 10), (200, 100, 50))
    image = source.convert(mode) if mode != "I;16" else Image.new("I;16", (20, 10), 40000)
    if mode == "CMYK":
        path = path.with_suffix(".jpg")
    image.save(path)
    array = read_rgb(path)
    assert array.dtype == np.uint8 and array.shape == (10, 20, 3)
    if mode == "I;16":
        assert abs(int(array[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1


def test_exif_rotation_is_applied(tmp_path):
    array = np.zeros((10, 20, 3), np.uint8)
    array[:, :10] = 255  # left half white in the stored pixels
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = read_rgb(path)
    assert upright.shape == (20, 10, 3)
    assert upright[:8].mean() > 200 and upright[12:].mean() < 50  # white now on top


def test_draft_decode_keeps_requested_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (384, 512), (10, 20, 30)).save(path)
    small = read_rgb(path, min_size=(100, 80))
    assert small.shape[0] >= 100 and small.shape[1] >= 80 and small.shape[0] < 512


@pytest.mark.parametrize(("name", "ok"), [("a.jpg", True), ("a.JPEG", True), ("a.Png", True),
                                          ("._a.jpg", False), (".DS_Store", False),
                                          ("a.gif", False)])
def test_image_file_filter(tmp_path, name, ok):
    assert is_image_file(tmp_path / name) is ok
