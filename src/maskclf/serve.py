"""``maskclf serve``: a web page and a JSON API that answer a photo, on onnxruntime.

``GET /`` is one static HTML page (no build step, no external assets); ``POST /predict``
takes a multipart upload of one or more images; ``GET /health``; ``GET /model`` (the
export's manifest). Uploads are read into memory up to ``max_bytes`` (413 beyond), parsed in
memory (nothing is written to disk, unlike a spooled upload), recognised by their content
(415 for what is not an image, whatever its name), and refused above ``io.MAX_PIXELS`` (413).
"""

from __future__ import annotations

import base64
import tempfile
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from PIL import UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header

from maskclf import labels
from maskclf.data.io import ImageTooLarge, decode_rgb
from maskclf.exported import ExportedModel

MAX_UPLOAD_BYTES = 10 * 2**20
"""Largest request body (all images of one request together)."""


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"upload of {int(declared):,} bytes; the limit is "
                                 f"{max_bytes:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(413, f"upload larger than the limit of {max_bytes:,} bytes")
    return bytes(body)


def _uploaded_files(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every file part of a multipart/form-data body, in memory."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise HTTPException(400, "send the photo(s) as multipart/form-data (a form with a "
                                 "file field)")
    files: list[tuple[str, bytes]] = []
    part: dict = {}

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, data=bytearray(), field=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        name = part["field"].lower()
        part["headers"][name] = part["headers"].get(name, b"") + data[start:end]

    def on_header_end() -> None:
        part["field"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part["data"] += data[start:end]

    def on_part_end() -> None:
        disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))[1]
        if b"filename" in disposition:
            files.append((disposition[b"filename"].decode(errors="replace"), bytes(part["data"])))

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001 - any malformed body is the client's error
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    return files


def _png_data_url(image: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode()


def answer(model: ExportedModel, name: str, data: bytes) -> dict:
    """The model's answer for one uploaded image, or an HTTPException saying why not."""
    if not data:
        raise HTTPException(400, f"{name}: the file is empty")
    try:
        image = decode_rgb(data)
    except ImageTooLarge as exc:
        raise HTTPException(413, f"{name}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HTTPException(415, f"{name}: not an image maskclf can read (JPEG, PNG, ...): "
                                 f"{type(exc).__name__}") from None
    crop = model.preprocess(image)
    probs = model.probs(crop[None])[0]
    marginals = {name: values[0] for name, values in
                 labels.attribute_marginals(probs[None]).items()}
    label = int(probs.argmax())
    return {
        "file": name, "class": label, "class_name": labels.class_names()[label],
        "attributes": {attribute: {"label": names[int(marginals[attribute].argmax())],
                                   "probabilities": dict(zip(names, map(float,
                                                                        marginals[attribute]),
                                                             strict=True))}
                       for attribute, names in labels.ATTRIBUTES.items()},
        "probabilities": dict(zip(labels.class_names(), map(float, probs), strict=True)),
        "crop": _png_data_url(crop),
    }


def create_app(model: ExportedModel, max_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    app = FastAPI(title="maskclf", summary="mask status, gender and age of a photo")
    page = (resources.files("maskclf") / "resources" / "serve.html").read_text()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "networks": len(model.manifest["networks"])}

    @app.get("/model")
    def manifest() -> dict:
        return model.manifest

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        body = await _read_body(request, max_bytes)
        if not body:
            raise HTTPException(400, "empty request: attach one or more photos")
        files = _uploaded_files(body, request.headers.get("content-type", ""))
        if not files:
            raise HTTPException(400, "no file in the form: attach one or more photos")
        # onnxruntime and decoding off the event loop: other requests keep being answered
        return {"results": await run_in_threadpool(
            lambda: [answer(model, name, data) for name, data in files])}

    return app


def serve(run_or_export: Path, host: str = "127.0.0.1", port: int = 8000,
          threads: int | None = None) -> None:
    """Serve an export; a run directory is exported to a temporary folder first."""
    import uvicorn

    from maskclf.manifest import is_export

    with tempfile.TemporaryDirectory(prefix="maskclf-serve-") as tmp:
        folder = Path(run_or_export)
        if not is_export(folder):
            from maskclf.export import export_run

            export_run(folder, tmp)
            folder = Path(tmp)
        app = create_app(ExportedModel.load(folder, threads))
        uvicorn.run(app, host=host, port=port, log_level="warning")
