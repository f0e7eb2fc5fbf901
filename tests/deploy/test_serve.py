"""The web API (FastAPI's TestClient) and the page in a real browser (Playwright + Chromium)."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from maskclf import labels  # noqa: E402
from maskclf.deploy.export import export_run
from maskclf.deploy.request import ExportRequest  # noqa: E402
from maskclf.deploy.serve import create_app  # noqa: E402
from maskclf.predict.onnx_backend import ExportedModel  # noqa: E402
from maskclf.train.execute import train_run  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from tests.helpers.server import chromium, served

pytestmark = pytest.mark.slow  # trains a (tiny) model to serve


@pytest.fixture(scope="module")
def export_dir(synthetic_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve")
    run = train_run(tiny_config(), synthetic_root, out, "r", interactive=False).run
    export_run(ExportRequest(run, out / "export", data=synthetic_root))
    return out / "export"


@pytest.fixture(scope="module")
def client(export_dir) -> TestClient:
    return TestClient(create_app(ExportedModel.load(export_dir), max_bytes=3 * 2**20))


def photo_bytes(fmt: str = "JPEG") -> bytes:
    image = pytest.importorskip("skimage.data").astronaut()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


def test_a_real_photo_gets_every_attribute_with_distributions(client):
    response = client.post("/predict", files={"files": ("astronaut.jpg", photo_bytes(),
                                                        "image/jpeg")})
    assert response.status_code == 200, response.text
    (answer,) = response.json()["results"]
    assert answer["file"] == "astronaut.jpg"
    for attribute, names in labels.ATTRIBUTES.items():
        probs = answer["attributes"][attribute]["probabilities"]
        assert list(probs) == list(names) and sum(probs.values()) == pytest.approx(1, abs=1e-5)
        assert answer["attributes"][attribute]["label"] == max(probs, key=probs.get)
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert answer["class_name"] == labels.class_names()[answer["class"]]
    crop = Image.open(io.BytesIO(base64.b64decode(answer["crop"].split(",", 1)[1])))
    assert crop.size == (48, 64)  # width x height of the run's image_size [64, 48]


def test_the_answer_matches_the_export_run_directly(client, export_dir):
    model = ExportedModel.load(export_dir)
    image = np.asarray(Image.open(io.BytesIO(photo_bytes("PNG"))))
    expected = model.probs(model.preprocess(image)[None])[0]
    response = client.post("/predict", files={"files": ("a.png", photo_bytes("PNG"))})
    got = np.array(list(response.json()["results"][0]["probabilities"].values()))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_cam_on_request_gives_each_attribute_a_map_over_the_crop(client, monkeypatch):
    upload = {"files": ("a.jpg", photo_bytes())}
    plain = client.post("/predict", files=upload).json()["results"][0]
    assert "cam" not in plain
    answer = client.post("/predict?cam=1", files=upload).json()["results"][0]
    assert answer["probabilities"] == pytest.approx(plain["probabilities"], abs=1e-6)
    assert set(answer["cam"]) == set(labels.ATTRIBUTES)
    crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["crop"].split(",")[1]))))
    for url in answer["cam"].values():
        overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        assert overlay.shape == crop.shape and np.abs(overlay.astype(int) - crop).mean() > 5
    monkeypatch.setattr(ExportedModel, "cam_unavailable", "its head is not linear")
    refused = client.post("/predict?cam=1", files=upload)
    assert refused.status_code == 400 and "its head is not linear" in refused.json()["detail"]


def test_a_png_named_jpg_is_read_by_its_content(client):
    response = client.post("/predict", files={"files": ("photo.jpg", photo_bytes("PNG"),
                                                        "image/jpeg")})
    assert response.status_code == 200


@pytest.mark.parametrize(("files", "status", "message"), [
    ({"files": ("notes.jpg", b"this is text, not a photo", "image/jpeg")}, 415, "notes.jpg"),
    ({"files": ("empty.jpg", b"", "image/jpeg")}, 400, "empty"),
    ({"name": (None, "no file at all")}, 400, "no file"),
])
def test_bad_uploads_are_refused_with_a_reason(client, files, status, message):
    response = client.post("/predict", files=files)
    assert response.status_code == status and message in response.json()["detail"]


def test_an_empty_body_and_an_oversized_upload_are_refused(client):
    assert client.post("/predict").status_code == 400
    big = os.urandom(4 * 2**20)
    response = client.post("/predict", files={"files": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413


def test_a_decompression_bomb_is_refused_before_decoding(client):
    buffer = io.BytesIO()
    Image.new("1", (12000, 8000)).save(buffer, "PNG")  # 96 MP in a few kB
    response = client.post("/predict", files={"files": ("bomb.png", buffer.getvalue())})
    assert response.status_code == 413 and "pixels" in response.json()["detail"]


def test_health_model_and_page(client, export_dir):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/model").json() == ExportedModel.load(export_dir).manifest
    page = client.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external assets


def test_nothing_is_written_to_disk_while_answering(client, monkeypatch):
    """A spooling parser (Starlette's UploadFile) moves uploads over 1 MB to a temporary
    file; here any temporary file fails the request."""
    import tempfile

    def no_files(*args, **kwargs):
        raise AssertionError("the server wrote an upload to a temporary file")

    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp", "SpooledTemporaryFile"):
        monkeypatch.setattr(tempfile, name, no_files)
    padded = photo_bytes("PNG") + bytes(1_500_000)  # PIL stops at IEND; 2 MB on the wire
    response = client.post("/predict", files={"files": ("big.png", padded)})
    assert response.status_code == 200, response.text


def test_a_photo_dropped_on_the_page_shows_mask_gender_and_age(export_dir, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    with served(export_dir) as server:
        photo = base64.b64encode(photo_bytes()).decode()
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"{server.url}/")
            page.evaluate("""(b64) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const data = new DataTransfer();
                data.items.add(new File([bytes], "astronaut.jpg", {type: "image/jpeg"}));
                document.getElementById("drop").dispatchEvent(
                    new DragEvent("drop", {dataTransfer: data, bubbles: true}));
            }""", photo)
            page.wait_for_selector(".result", timeout=30_000)
            shown = {attribute: page.inner_text(f".result .{attribute} .label")
                     for attribute in labels.ATTRIBUTES}
            crop = page.get_attribute(".result img.crop", "src")
            page.click(".result .maps .map-gender")  # the switch shows the gender map
            overlay = page.get_attribute(".result img.crop", "src")
            pressed = page.get_attribute(".result .maps .map-gender", "aria-pressed")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
    for attribute, names in labels.ATTRIBUTES.items():
        assert shown[attribute] in names
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert crop.startswith("data:image/png") and overlay.startswith("data:image/png")
    assert overlay != crop and pressed == "true"
