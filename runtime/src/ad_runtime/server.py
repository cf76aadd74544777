"""`ad-runtime serve`: a small HTTP server (Starlette on uvicorn) around one loaded `Detector`.

Routes: `POST /predict` (an image as the raw body with an `image/*` or `application/octet-stream` type, or as the
field `image` of a `multipart/form-data` form; `?map=1` adds the map picture as base64 PNG), `GET /health`,
`GET /model`. Bad requests get 4xx with a JSON `{"error": ...}`: 413 over the upload limit (checked on the
declared length and again while reading), 415 for another content type, 400 for an empty, undecodable or
malformed upload. Decoding and the graph run in worker threads, at most `max_parallel` images at once (the others
wait), so the event loop keeps answering and memory stays bounded; the one detector is shared by all requests,
which is safe because `Detector.predict_images` keeps no state between calls and onnxruntime's
`InferenceSession.run` is thread-safe (see `ad_runtime.backends`).
"""

from __future__ import annotations

import base64
import socket
from typing import Any

try:
    import anyio
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
except ImportError as exc:  # the serving libraries are an extra
    raise ImportError("`ad-runtime serve` needs the serving extra: pip install 'ad-runtime[serve]' "
                      f"({exc})") from exc

from ad_runtime.detector import Detector
from ad_runtime.images import ImageReadError, ImageTooLargeError, read_image
from ad_runtime.overlay import overlay_png

DEFAULT_MAX_UPLOAD = 20_000_000  # bytes
DEFAULT_MAX_PARALLEL = 4  # images decoded and scored at once; each graph call already uses every core
RAW_TYPES = ("application/octet-stream",)  # besides image/*
FORM_FIELD = "image"


class UploadError(Exception):
    """A request the server refuses: its HTTP status and the message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(detector: Detector, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               max_parallel: int = DEFAULT_MAX_PARALLEL) -> Starlette:
    """The ASGI application serving `detector`; uploads above `max_upload_bytes` are refused with 413."""
    if max_upload_bytes < 1 or max_parallel < 1:
        raise ValueError(f"max_upload_bytes and max_parallel must be at least 1, got {max_upload_bytes} and "
                         f"{max_parallel}")
    workers = anyio.CapacityLimiter(max_parallel)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": detector.info.model})

    async def model(request: Request) -> JSONResponse:
        return JSONResponse(detector.describe())

    async def predict(request: Request) -> JSONResponse:
        want_map = request.query_params.get("map", "0").lower() in ("1", "true", "yes")
        if want_map and not detector.info.has_normalized_map:
            raise UploadError(400, f"this export of {detector.info.model!r} has no 0-1 anomaly map: drop ?map=1")
        data, name = await _upload(request, max_upload_bytes)
        return JSONResponse(await anyio.to_thread.run_sync(_score, detector, data, name, want_map, limiter=workers))

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, UploadError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    routes = [Route("/predict", predict, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/model", model, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={UploadError: refused, HTTPException: http_error})


async def _upload(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The uploaded file's bytes and name (None for a raw body), after the size and type checks."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind in RAW_TYPES or kind == "multipart/form-data"):
        raise UploadError(415, f"unsupported content type {kind or '(none)'!r}: send the image file as the body "
                          f"with Content-Type image/... or application/octet-stream, or as the form field "
                          f"{FORM_FIELD!r} of a multipart/form-data request")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"upload of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise UploadError(413, f"upload is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:  # nobody is left to answer; a 400 keeps it out of the error log
        raise UploadError(400, "the client disconnected during the upload") from exc
    body = b"".join(chunks)
    if kind != "multipart/form-data":
        if not body:
            raise UploadError(400, "empty upload: send the bytes of an image file")
        return body, None
    return await _form_file(request, body)


async def _form_file(request: Request, body: bytes) -> tuple[bytes, str | None]:
    """The file in the form field `image` of a multipart body already read (and size-checked)."""
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    try:
        item = form.get(FORM_FIELD)
        if item is None or isinstance(item, str):
            fields = ", ".join(form.keys()) or "none"
            raise UploadError(400, f"the form has no file in the field {FORM_FIELD!r} (fields: {fields})")
        data = await item.read()
        if not data:
            raise UploadError(400, f"the file in the field {FORM_FIELD!r} is empty")
        return data, item.filename
    finally:
        await form.close()


def _score(detector: Detector, data: bytes, name: str | None, want_map: bool) -> dict[str, Any]:
    """Decode one upload and score it (runs in a worker thread)."""
    try:
        picture = read_image(data)
    except ImageTooLargeError as exc:
        raise UploadError(413, str(exc)) from exc
    except ImageReadError as exc:
        raise UploadError(400, str(exc)) from exc
    result = detector.predict_images([picture])[0]
    body: dict[str, Any] = {"path": name, "score": result.score, "normalized_score": result.normalized_score,
                            "label": int(result.label), "threshold": result.threshold,
                            "original_size": list(result.original_size), "model": detector.info.model}
    if want_map and result.normalized_map is not None:
        png = overlay_png(picture, result.normalized_map, result.score, result.normalized_score, result.label)
        body["map_png"] = base64.b64encode(png).decode("ascii")
    return body


def make_server(detector: Detector, host: str = "127.0.0.1", port: int = 8000,
                max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_parallel: int = DEFAULT_MAX_PARALLEL,
                log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for `detector`, not yet started (tests run it in a thread on a socket of their own)."""
    config = uvicorn.Config(create_app(detector, max_upload_bytes, max_parallel), host=host, port=port,
                            log_level=log_level, access_log=False)
    return uvicorn.Server(config)


def run_server(detector: Detector, host: str = "127.0.0.1", port: int = 8000,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_parallel: int = DEFAULT_MAX_PARALLEL) -> None:
    """Serve until interrupted (Ctrl-C); a port already in use is a clear error."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or "
                          "--host") from exc
    make_server(detector, host, port, max_upload_bytes, max_parallel).run()
