"""The exported container's routes (byte-compatible answers), the cloud prediction paths, health, metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_to_bytes

from aiohttp import BodyPartReader, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_runtime import metrics
from edge_runtime.api import errors
from edge_runtime.api.admin import register_admin_routes
from edge_runtime.api.errors import ApiError
from edge_runtime.api.schemas import ResponseIds, dumps, prediction_body
from edge_runtime.api.urlfetch import TooLarge, UrlRefused, fetch_image
from edge_runtime.domain import PredictionResult
from edge_runtime.engine import Predictor
from edge_runtime.errors import ImageDecodeError, ImageTooLargeError, InferenceError
from edge_runtime.state import CAPACITY, EXECUTOR, INFLIGHT, MODEL, PIPELINE, SETTINGS, URL_POLICY

log = logging.getLogger(__name__)

BANNER = "CustomVision.ai model host harness"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _container_paths(kind: str) -> list[str]:
    """The seven shapes the container matches for `kind` ("image" or "url")."""
    paths = [f"/{kind}", f"/{{project}}/{kind}", f"/{{project}}/{kind}/nostore"]
    for task in ("classify", "detect"):
        base = f"/{{project}}/{task}/iterations/{{name}}/{kind}"
        paths += [base, f"{base}/nostore"]
    return paths


def _cloud_paths(kind: str) -> list[str]:
    paths = []
    for version in ("v3.0", "v3.1"):
        for task in ("classify", "detect"):
            base = (
                f"/customvision/{version}/Prediction/{{projectId}}/{task}/iterations/{{publishedName}}/{kind}"
            )
            paths += [base, f"{base}/nostore"]
    return paths


def register_routes(app: web.Application) -> None:
    app.middlewares.append(_observe)
    router = app.router
    router.add_get("/", banner)
    for path in _container_paths("image") + _cloud_paths("image"):
        router.add_post(path, predict_image)
    for path in _container_paths("url") + _cloud_paths("url"):
        router.add_post(path, predict_url)
    router.add_get("/health/live", health_live)
    router.add_get("/health/ready", health_ready)
    router.add_get("/metrics", metrics_endpoint)
    router.add_get("/snapshots/{event_id}.jpg", snapshot)
    register_admin_routes(app)


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        metrics.HTTP_REQUESTS.labels(route, request.method, str(exc.status)).inc()
        raise
    metrics.HTTP_REQUESTS.labels(route, request.method, str(response.status)).inc()
    return response


def _check_key(request: web.Request) -> None:
    key = request.app[SETTINGS].server.prediction_key
    if key is None:
        return
    given = request.headers.get("Prediction-Key", "")
    # aiohttp keeps non-ASCII header bytes as surrogates: encode them back, never crash on them.
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.get_secret_value().encode()):
        raise errors.unauthorized()


async def banner(request: web.Request) -> web.Response:
    return web.Response(text=BANNER, content_type="text/html")


def _ids(request: web.Request) -> ResponseIds:
    server = request.app[SETTINGS].server
    return ResponseIds(server.response_id, server.response_project, server.response_iteration)


def _predictor(request: web.Request) -> Predictor:
    slot = request.app[MODEL]
    if slot.predictor is None:
        raise errors.not_ready(f"model failed to load: {slot.error}" if slot.error else "model is loading")
    return slot.predictor


async def _admitted(request: web.Request, read: Callable[[web.Request], Awaitable[bytes]]) -> web.Response:
    """Key check, admission (503 when saturated), body, inference in the executor, the container's JSON."""
    _check_key(request)
    predictor = _predictor(request)  # one reference for the whole request: a model swap can't cut it short
    inflight = request.app[INFLIGHT]
    if inflight[0] >= request.app[CAPACITY].max_inflight:
        raise errors.busy(retry_after_s=1)
    inflight[0] += 1
    metrics.HTTP_INFLIGHT.inc()
    start = time.perf_counter()
    try:
        data = await read(request)
        result = await _run(request, predictor, data)
    finally:
        inflight[0] -= 1
        metrics.HTTP_INFLIGHT.dec()
    metrics.observe_prediction("http", result.timings)
    resource = request.match_info.route.resource
    metrics.HTTP_REQUEST_SECONDS.labels(resource.canonical if resource else "").observe(
        time.perf_counter() - start
    )
    body = dumps(prediction_body(result, _ids(request)))
    return web.Response(body=body.encode(), headers={"Content-Type": "application/json"})


async def _run(request: web.Request, predictor: Predictor, data: bytes) -> PredictionResult:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(request.app[EXECUTOR], predictor.predict_bytes, data)
    except ImageTooLargeError as exc:
        raise errors.image_dimensions(str(exc)) from exc
    except ImageDecodeError as exc:
        raise errors.bad_image(str(exc)) from exc
    except InferenceError as exc:
        log.error("inference failed: %s", exc)
        raise ApiError(500, "InternalServerError", str(exc)) from exc


async def _read_image_body(request: web.Request) -> bytes:
    """The container's order: multipart file `imageData`, form field `imageData`, else the raw body."""
    limit = request.app[SETTINGS].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise errors.image_too_big(f"the body is {request.content_length} bytes, more than {limit}")
    try:
        if request.content_type.startswith("multipart/"):
            return await _read_multipart_image(request, limit)
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise errors.image_too_big(f"the body is more than {limit} bytes") from exc
    if request.content_type == "application/x-www-form-urlencoded" and body.startswith(b"imageData="):
        return unquote_to_bytes(body[len(b"imageData=") :].split(b"&")[0].replace(b"+", b" "))
    if not body:
        raise errors.no_image("no image in the request: send it as the body or as multipart field imageData")
    return body


async def _read_multipart_image(request: web.Request, limit: int) -> bytes:
    """The raw bytes of the `imageData` part, file or plain field, whatever its content type."""
    total = 0
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue
        if part.name != "imageData":
            await part.release()
            continue
        chunks = []
        while chunk := await part.read_chunk(65536):
            total += len(chunk)
            if total > limit:
                raise errors.image_too_big(f"the image is more than {limit} bytes")
            chunks.append(chunk)
        if chunks:
            return b"".join(chunks)
    raise errors.no_image("the multipart form has no imageData field")


async def _read_url_body(request: web.Request) -> bytes:
    settings = request.app[SETTINGS]
    try:
        raw = await request.read()
        payload = json.loads(raw or b"null")
    except web.HTTPRequestEntityTooLarge as exc:
        raise errors.image_too_big("the request body is too large") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.bad_url('the body must be JSON: {"url": "https://..."}') from exc
    url = payload.get("url") or payload.get("Url") if isinstance(payload, dict) else None
    if not isinstance(url, str) or not url:
        raise errors.bad_url('the body must be JSON with a "url" string')
    fetch = settings.url_fetch
    try:
        return await fetch_image(
            url,
            request.app[URL_POLICY],
            settings.server.max_body_bytes,
            fetch.connect_timeout_s,
            fetch.read_timeout_s,
            fetch.max_redirects,
        )
    except TooLarge as exc:
        raise errors.image_too_big(str(exc)) from exc
    except UrlRefused as exc:
        raise errors.bad_url(str(exc)) from exc


async def predict_image(request: web.Request) -> web.Response:
    return await _admitted(request, _read_image_body)


async def predict_url(request: web.Request) -> web.Response:
    return await _admitted(request, _read_url_body)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=(json.dumps(body) + "\n").encode(), headers={"Content-Type": "application/json"}
    )


async def health_live(request: web.Request) -> web.Response:
    if request.app[SETTINGS].server.protect_health:
        _check_key(request)
    return _json({"status": "alive"})


async def health_ready(request: web.Request) -> web.Response:
    if request.app[SETTINGS].server.protect_health:
        _check_key(request)
    slot = request.app[MODEL]
    predictor = slot.predictor
    pipeline = request.app[PIPELINE]
    cameras = pipeline.camera_statuses()
    sinks = pipeline.sink_statuses()  # informative: a broker outage does not make inference unready
    if predictor is None:
        status = "failed" if slot.error else "loading"
        return _json({"status": status, "error": slot.error, "cameras": cameras, "sinks": sinks}, status=503)
    spec = predictor.spec
    return _json(
        {
            "status": "ready",
            "cameras": cameras,
            "sinks": sinks,
            "model": {
                "id": spec.model_id,
                "sha1": spec.sha1,
                "path": str(spec.root),
                "task": spec.task.value,
                "domain": spec.domain,
                "flavour": spec.flavour,
                "postprocess": spec.postprocess.value,
                "labels": list(spec.labels),
                "device": predictor.device,
                "device_reason": predictor.plan.reason,
                "fallback_from": predictor.plan.fallback_from,
                "warmup_ms": round(predictor.warmup_seconds * 1000, 2),
            },
        }
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    if request.app[SETTINGS].server.protect_metrics:
        _check_key(request)
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def snapshot(request: web.Request) -> web.FileResponse:
    store = request.app[PIPELINE].snapshots
    path = store.path_for(request.match_info["event_id"]) if store is not None else None
    if path is None:
        raise web.HTTPNotFound(text="no such snapshot")
    return web.FileResponse(path, headers={"Content-Type": "image/jpeg"})
