"""``maskclf review``: the review page and its JSON API, on FastAPI like ``maskclf serve``.

``GET /`` is one static HTML page (no build step, nothing from another host);
``GET /api/state`` the suspects, their photos, labels, out-of-fold probabilities and every
decision; ``GET /photo/{folder}/{index}`` one photo of a suspect (only photos of the run's
out-of-fold rows: nothing a client sends becomes a path); ``POST /api/decision``
``{folder, attribute, choice, image?}`` takes one decision and saves it at once;
``POST /api/reviewed`` ``{folder}`` marks a person seen. A request the session cannot take
is a 4xx with a JSON ``detail`` naming what is wrong.
"""

from __future__ import annotations

import logging
import socket
import sys
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict

from maskclf.errors import UsageError
from maskclf.reports.review import DecisionError, ReviewSession
from maskclf.runs.lock import writer_lock

log = logging.getLogger(__name__)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str
    attribute: str
    choice: str
    image: str | None = None


class Seen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str


def create_review_app(session: ReviewSession) -> FastAPI:
    app = FastAPI(title="maskclf review", summary="decide the labels cleanlab suspects")
    page = (resources.files("maskclf") / "resources" / "review.html").read_text()

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        log.info("%s %s -> 422: %s", request.method, request.url.path, exc.errors()[:1])
        return JSONResponse({"detail": "the request does not fit the API: "
                                       f"{exc.errors()[0]['msg']}"}, 422)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/state")
    def state() -> dict:
        return session.state()

    @app.get("/photo/{folder}/{index}")
    def photo(folder: str, index: int) -> FileResponse:
        try:
            path = session.image_path(folder, index)
        except DecisionError as exc:
            raise HTTPException(404, str(exc)) from None
        if not path.is_file():
            raise HTTPException(404, f"{path.name} of {folder} is not in the data folder")
        return FileResponse(path)

    @app.post("/api/decision")
    def decide(decision: Decision) -> dict:
        try:
            person = session.decide(decision.folder, decision.attribute, decision.choice,
                                    decision.image)
        except DecisionError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"person": person, "progress": session.progress()}

    @app.post("/api/reviewed")
    def reviewed(seen: Seen) -> dict:
        try:
            person = session.mark_reviewed(seen.folder)
        except DecisionError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"person": person, "progress": session.progress()}

    return app


def require_free_port(host: str, port: int) -> None:
    """One line naming the port when another program listens there, before any work."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"--port {port}: {host}:{port} is in use or not available "
                             f"({exc.strerror}); pick another port") from None


def review(session: ReviewSession, host: str = "127.0.0.1", port: int = 8001) -> None:
    """Serve the review page until stopped, holding the writer lock of the session's
    ``corrections.yaml`` (a second review of the run, or training on the file meanwhile,
    is refused naming this process)."""
    import uvicorn

    with writer_lock(session.file, " ".join(sys.argv), "corrections file"):
        uvicorn.run(create_review_app(session), host=host, port=port, log_level="warning")
