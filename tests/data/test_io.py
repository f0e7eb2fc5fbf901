import numpy as np
import pytest
from PIL import Image

from maskclf.data.io import is_image_file, read_rgb, reduction_factor


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


def test_fast_jpeg_path_matches_pil(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (12, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(smooth).save(path, quality=92)
    fast = read_rgb(path)
    with Image.open(path) as image:
        reference = np.asarray(image.convert("RGB"))
    assert fast.shape == reference.shape == (96, 128, 3)
    assert np.abs(fast.astype(int) - reference).mean() < 1.0


@pytest.mark.parametrize(("size", "min_size", "factor"), [
    ((512, 384), (256, 192), 2), ((512, 384), (100, 80), 4), ((512, 384), (512, 384), 1),
    ((384, 512), (256, 192), 2),  # stored sideways (EXIF-rotated): same factor
    ((100, 100), (300, 300), 1), ((4000, 3000), (10, 10), 8), ((512, 384), None, 1)])
def test_reduction_factor_keeps_the_requested_detail(size, min_size, factor):
    assert reduction_factor(size, min_size) == factor


def test_reduced_decode_of_a_rotated_jpeg_is_upright_and_big_enough(tmp_path):
    array = np.zeros((200, 400, 3), np.uint8)
    array[:, :200] = 255
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = read_rgb(path, min_size=(150, 80))
    assert upright.shape == (200, 100, 3)  # decoded at 1/2, then turned upright
    assert upright[:90].mean() > 200 and upright[110:].mean() < 50
