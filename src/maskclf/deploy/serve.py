"""``maskclf serve``: a web page and a JSON API that answer a photo, on onnxruntime.

``GET /`` is one static HTML page (no build step, no external assets); ``POST /predict``
takes a multipart upload of one or more images (``?cam=1``: with each attribute's
activation map over the crop); ``GET /health``; ``GET /model`` (the
export's manifest). Uploads are read into memory up to ``max_bytes`` (413 beyond), parsed in
memory (nothing is written to disk, unlike a spooled upload), recognised by their content
(415 for what is not an image, whatever its name), and refused above ``io.MAX_PIXELS`` (413).

A client's mistake is always a 4xx with a JSON ``detail`` and one log line, never a 5xx or a
traceback: any decoder error is 415, a malformed body 400, a body that stops arriving for
``read_timeout_s`` 408 (the worker is freed). At most ``max_concurrent`` requests are read
and answered at once; the others wait their turn, so a burst queues instead of holding
``max_concurrent`` x ``max_bytes`` of uploads. File names from clients are reduced to a plain
name (no folders, no control characters, at most 100 characters) before they are echoed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import tempfile
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from maskclf import labels
from maskclf.data.io import ImageTooLarge, decode_rgb
from maskclf.predict.onnx_backend import ExportedModel
from maskclf.reports.plots import heat_overlay

MAX_UPLOAD_BYTES = 10 * 2**20
"""Largest request body (all images of one request together)."""
MAX_CONCURRENT = 4
"""Requests read and answered at once; more wait in line (memory stays under
MAX_CONCURRENT x MAX_UPLOAD_BYTES of uploads)."""
READ_TIMEOUT_S = 10.0
"""A body that sends nothing for this long is answered 408 and dropped."""
log = logging.getLogger(__name__)


def safe_name(name: str) -> str:
    """A client's file name as it may be shown: the last path part, printable, short."""
    plain = re.split(r"[/\\]", name)[-1]
    plain = "".join(char for char in plain if char.isprintable())[:100].strip()
    return plain or "upload"


async def _read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The request body: 413 as soon as it passes ``max_bytes``, 408 when no chunk arrives
    for ``timeout_s``, 400 when the client goes away."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"upload of {int(declared):,} bytes; the limit is "
                                 f"{max_bytes:,}")
    body, chunks = bytearray(), request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout_s)
        except StopAsyncIteration:
            return bytes(body)
        except TimeoutError:
            raise HTTPException(408, f"the request body stopped arriving: nothing for "
                                     f"{timeout_s:g} s after {len(body):,} bytes") from None
        except ClientDisconnect:
            raise HTTPException(400, "the client went away before the body was sent"
                                ) from None
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(413, f"upload larger than the limit of {max_bytes:,} bytes")


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
            files.append((safe_name(disposition[b"filename"].decode(errors="replace")),
                          bytes(part["data"])))

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


def answer(model: ExportedModel, name: str, data: bytes, cam: bool = False) -> dict:
    """The model's answer for one uploaded image, or an HTTPException saying why not; with
    ``cam``, each attribute's activation map over the crop as a PNG data URL."""
    if not data:
        raise HTTPException(400, f"{name}: the file is empty")
    try:
        image = decode_rgb(data)
    except ImageTooLarge as exc:
        raise HTTPException(413, f"{name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the decoder says: the upload's fault
        raise HTTPException(415, f"{name}: not an image maskclf can read (JPEG, PNG, ...): "
                                 f"{type(exc).__name__}") from None
    try:
        crop = model.preprocess(image)
    except Exception as exc:  # noqa: BLE001 - an image too odd to crop (a 1-pixel strip...)
        raise HTTPException(422, f"{name}: the image cannot be cropped and resized for the "
                                 f"model ({image.shape[1]} x {image.shape[0]} pixels): "
                                 f"{type(exc).__name__}") from None
    if cam:
        batch_probs, maps = model.probs_and_maps(crop[None])
        probs = batch_probs[0]
    else:
        probs, maps = model.probs(crop[None])[0], None
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
        **({"cam": {attribute: _png_data_url(heat_overlay(crop, found[0]))
                    for attribute, found in maps.items()}} if maps is not None else {}),
    }


def create_app(model: ExportedModel, max_bytes: int = MAX_UPLOAD_BYTES,
               max_concurrent: int = MAX_CONCURRENT,
               read_timeout_s: float = READ_TIMEOUT_S) -> FastAPI:
    app = FastAPI(title="maskclf", summary="mask status, gender and age of a photo")
    page = (resources.files("maskclf") / "resources" / "serve.html").read_text()
    turns = asyncio.Semaphore(max_concurrent)

    @app.exception_handler(HTTPException)
    async def client_mistake(request: Request, exc: HTTPException) -> JSONResponse:
        log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status_code,
                 exc.detail)
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        log.info("%s %s -> 422: %s", request.method, request.url.path, exc.errors()[:1])
        return JSONResponse({"detail": "the request does not fit the API"}, 422)

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
    async def predict(request: Request, cam: bool = False) -> dict:
        """``?cam=1`` adds each attribute's activation map (``cam``: PNG data URLs)."""
        if cam and model.cam_unavailable:
            raise HTTPException(400, f"?cam=1: this export has no activation maps: "
                                     f"{model.cam_unavailable}")
        async with turns:  # a burst waits here instead of reading every body at once
            body = await _read_body(request, max_bytes, read_timeout_s)
            if not body:
                raise HTTPException(400, "empty request: attach one or more photos")
            files = _uploaded_files(body, request.headers.get("content-type", ""))
            if not files:
                raise HTTPException(400, "no file in the form: attach one or more photos")
            # onnxruntime and decoding off the event loop: other requests keep being answered
            return {"results": await run_in_threadpool(
                lambda: [answer(model, name, data, cam) for name, data in files])}

    return app


def serve(run_or_export: Path, host: str = "127.0.0.1", port: int = 8000,
          threads: int | None = None, max_concurrent: int = MAX_CONCURRENT,
          read_timeout_s: float = READ_TIMEOUT_S) -> None:
    """Serve an export; a run directory is exported to a temporary folder first."""
    import uvicorn

    from maskclf.deploy.manifest import is_export

    with tempfile.TemporaryDirectory(prefix="maskclf-serve-") as tmp:
        folder = Path(run_or_export)
        if not is_export(folder):
            from maskclf.deploy.export import export_run
            from maskclf.deploy.request import ExportRequest

            export_run(ExportRequest(folder, Path(tmp)))
            folder = Path(tmp)
        app = create_app(ExportedModel.load(folder, threads), max_concurrent=max_concurrent,
                         read_timeout_s=read_timeout_s)
        uvicorn.run(app, host=host, port=port, log_level="warning")
