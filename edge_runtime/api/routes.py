"""The exported container's routes (byte-compatible answers), the cloud prediction paths, health, metrics."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web, web_response, web_urldispatcher
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_runtime import metrics
from edge_runtime.api import errors
from edge_runtime.api.admin import register_admin_routes
from edge_runtime.api.body import BodyLimits, expect_continue, image_from_body, parse_json, received_body
from edge_runtime.api.client_errors import ClientErrorLog, quiet_aiohttp_server_log
from edge_runtime.api.errors import ApiError, answer_for
from edge_runtime.api.keys import key_matches
from edge_runtime.api.schemas import CloudIds, ResponseIds, cloud_prediction_body, dumps, prediction_body
from edge_runtime.api.urlfetch import fetch_image
from edge_runtime.app_keys import BOARD, BODIES, CAMERAS, DELIVERY, INFERENCE, SETTINGS, URL_POLICY
from edge_runtime.errors import EdgeRuntimeError, InferenceError, Overloaded
from edge_runtime.inference.service import Answer, InferenceService
from edge_runtime.model_card import ModelCard

log = logging.getLogger(__name__)
CLIENT_ERRORS = ClientErrorLog(log)

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
    """Microsoft's REST reference and SDKs write `prediction` (the .NET docs `Prediction`): any case."""
    prefix = "/{service:(?i:customvision)}/{version:v3\\.[01]}/{api:(?i:prediction)}/{projectId}"
    paths = []
    for task in ("classify", "detect"):
        base = f"{prefix}/{task}/iterations/{{publishedName}}/{kind}"
        paths += [base, f"{base}/nostore"]
    return paths


def register_routes(app: web.Application) -> None:
    quiet_aiohttp_server_log()
    _aiohttp_own_answers()
    app.middlewares.append(_observe)
    app.on_response_prepare.append(_server_header)
    router = app.router
    router.add_get("/", banner, expect_handler=expect_continue)
    for kind, container, cloud in (
        ("image", predict_image, predict_image_cloud),
        ("url", predict_url, predict_url_cloud),
    ):
        for path in _container_paths(kind):
            router.add_post(path, container, expect_handler=expect_continue)
        for path in _cloud_paths(kind):
            router.add_post(path, cloud, expect_handler=expect_continue)
    router.add_get("/health/live", health_live, expect_handler=expect_continue)
    router.add_get("/health/ready", health_ready, expect_handler=expect_continue)
    router.add_get("/metrics", metrics_endpoint, expect_handler=expect_continue)
    router.add_get("/snapshots/{event_id}.jpg", snapshot, expect_handler=expect_continue)
    register_admin_routes(app)


SERVER = "edge-runtime"


def _aiohttp_own_answers() -> None:
    """aiohttp has no hook for the answers it makes itself, before any app code runs; set its defaults."""
    # The Server header of those answers (a malformed request line, say) names aiohttp's and Python's
    # versions; this module constant is where it reads it from.
    if hasattr(web_response, "SERVER_SOFTWARE"):
        web_response.SERVER_SOFTWARE = SERVER
    # Our routes name expect_continue; its own answers for no route / wrong method use its default
    # handler, which fails (500) on an Expect value with non-UTF-8 bytes while building its error text.
    if hasattr(web_urldispatcher, "_default_expect_handler"):
        web_urldispatcher._default_expect_handler = expect_continue


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place every answer is made JSON (for errors), logged (client mistakes rate-limited) and
    counted."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        _check_expect(request)
        response = await handler(request)
    except ApiError as exc:
        response = _answer(exc)
    except EdgeRuntimeError as exc:  # the package's own errors: one table (api/errors.py) says the answer
        answer = answer_for(exc)
        if answer is None:
            raise  # no request should meet it: a fault of ours, answered below
        if isinstance(exc, InferenceError):
            CLIENT_ERRORS.fault("inference", f"inference failed: {exc}", exc)
        response = _answer(answer)
    except web.HTTPException as exc:
        if exc.status < 400:
            metrics.HTTP_REQUESTS.labels(route, request.method, str(exc.status)).inc()
            raise
        response = _from_http_exception(exc)
    except Exception as exc:  # a fault of ours: one JSON 500, counted, logged with its traceback (limited)
        CLIENT_ERRORS.fault(type(exc).__name__, f"unhandled error on {request.method} {route}", exc)
        response = errors.internal(f"internal error ({type(exc).__name__})").response()
    metrics.HTTP_REQUESTS.labels(route, request.method, str(response.status)).inc()
    return response


def _answer(error: ApiError) -> web.Response:
    if error.status < 500:
        CLIENT_ERRORS.mistake(error.code, error.status, error.message)
    return error.response()


def _check_expect(request: web.Request) -> None:
    expect = request.headers.get("Expect")
    if expect is not None and expect.lower() != "100-continue":
        shown = expect.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")[:64]
        raise ApiError(417, "ExpectationFailed", f"unsupported Expect header '{shown}'")


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code = errors.HTTP_CODES.get(exc.status, "BadRequest" if exc.status < 500 else "InternalServerError")
    error = ApiError(exc.status, code, exc.reason, {k: v for k, v in exc.headers.items() if k == "Allow"})
    if exc.status < 500:
        CLIENT_ERRORS.mistake(code, exc.status, exc.reason)
    return error.response()


def _check_key(request: web.Request) -> None:
    key = request.app[SETTINGS].server.prediction_key
    if key is None:
        return
    if not key_matches(request.headers.get("Prediction-Key", ""), key):
        raise errors.unauthorized()


async def banner(request: web.Request) -> web.Response:
    return web.Response(text=BANNER, content_type="text/html")


def _ids(request: web.Request) -> ResponseIds:
    server = request.app[SETTINGS].server
    return ResponseIds(server.response_id, server.response_project, server.response_iteration)


ImageOf = Callable[[web.Request, bytes], Awaitable[bytes]]
HELD_BYTES = web.RequestKey("held_bytes", int)  # bytes of a /url download counted in the body budget


async def _predict(request: web.Request, image_of: ImageOf, cloud: bool = False) -> web.Response:
    """Key check, the whole body (bounded), the image in it, then an inference slot (a bounded wait, then
    503 — 429 on the cloud paths, the cloud's code), inference in the executor, the answer."""
    _check_key(request)
    service = request.app[INFERENCE]
    service.predictor()  # refuse early (ModelNotReady: 503) while loading: no point reading a body
    bodies = request.app[BODIES]
    start = time.perf_counter()
    try:
        async with received_body(request, BodyLimits.of(request.app[SETTINGS].server), bodies) as body:
            data = await image_of(request, body)
            answer = await predict_in_slot(service, data, 429 if cloud else 503)
    finally:
        bodies.give(request.get(HELD_BYTES, 0))
    result = answer.result
    resource = request.match_info.route.resource
    metrics.HTTP_REQUEST_SECONDS.labels(resource.canonical if resource else "").observe(
        time.perf_counter() - start
    )
    if cloud:
        spec = answer.predictor.spec
        ids = CloudIds.derive(request.match_info["projectId"], spec.iteration_id, spec.sha1, _ids(request))
        return web.json_response(cloud_prediction_body(result, ids))
    text = dumps(prediction_body(result, _ids(request)))
    return web.Response(body=text.encode(), headers={"Content-Type": "application/json"})


async def predict_in_slot(service: InferenceService, data: bytes, busy_status: int) -> Answer:
    """An inference slot (a bounded wait, then `busy_status`), then the prediction."""
    try:
        async with service.slot():
            return await service.predict_bytes(data)
    except Overloaded as exc:  # answered per route: 503 on the container's, 429 on the cloud's
        raise errors.busy(retry_after_s=1, status=busy_status) from exc


async def _image_in_body(request: web.Request, body: bytes) -> bytes:
    return image_from_body(body, request.headers.get("Content-Type", ""))


async def _image_at_url(request: web.Request, body: bytes) -> bytes:
    settings = request.app[SETTINGS]
    try:
        payload = parse_json(body or b"null")
    except ValueError as exc:
        raise errors.bad_url(f'{exc}; send {{"url": "https://..."}}') from exc
    url = payload.get("url") or payload.get("Url") if isinstance(payload, dict) else None
    if not isinstance(url, str) or not url:
        raise errors.bad_url('the body must be JSON with a "url" string')
    fetch = settings.url_fetch
    budget = request.app[BODIES]

    def hold(size: int) -> None:  # downloaded images count like bodies, until the request is answered
        if not budget.take(size):
            raise errors.busy(retry_after_s=1, what="request bodies held in memory are at their limit")
        request[HELD_BYTES] = request.get(HELD_BYTES, 0) + size

    return await fetch_image(  # refusals raise ImageFetchError: answered through api/errors.py's table
        url,
        request.app[URL_POLICY],
        settings.server.max_body_bytes,
        fetch.connect_timeout_s,
        fetch.read_timeout_s,
        fetch.max_redirects,
        hold,
    )


async def predict_image(request: web.Request) -> web.Response:
    return await _predict(request, _image_in_body)


async def predict_url(request: web.Request) -> web.Response:
    return await _predict(request, _image_at_url)


async def predict_image_cloud(request: web.Request) -> web.Response:
    return await _predict(request, _image_in_body, cloud=True)


async def predict_url_cloud(request: web.Request) -> web.Response:
    return await _predict(request, _image_at_url, cloud=True)


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
    models = request.app[INFERENCE].models
    predictor = models.predictor
    board = request.app[BOARD].snapshot()
    # Read from the cameras now: the board's frame counts and ages may be up to a second old.
    cameras = {camera: s.to_dict() for camera, s in request.app[CAMERAS].statuses().items()}
    # Informative: a broker outage does not make inference unready.
    sinks = {name: s.to_dict() for name, s in board.sinks().items()}
    if predictor is None:
        error = models.error
        body = {
            "status": "failed" if error else "loading",
            "error": error,
            "cameras": cameras,
            "sinks": sinks,
        }
        return _json(body, status=503)
    failed, judged = predictor.health.recent_failures
    # "degraded" still answers 200: clients choose the inputs, and a few odd ones must not take the
    # runtime out of its orchestrator's rotation (where nothing would ever bring it back).
    return _json(
        {
            "status": "degraded" if predictor.health.failing else "ready",
            "inference": {
                "recent_failed": failed,
                "recent_judged": judged,
                "last_error": predictor.health.last_error,
                "warmup_shape_failures": predictor.shape_failures,
            },
            "cameras": cameras,
            "sinks": sinks,
            "model": ModelCard.of(predictor).readiness(),
        },
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    if request.app[SETTINGS].server.protect_metrics:
        _check_key(request)
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def snapshot(request: web.Request) -> web.FileResponse:
    store = request.app[DELIVERY].snapshots
    path = store.path_for(request.match_info["event_id"]) if store is not None else None
    if path is None:
        raise web.HTTPNotFound(text="no such snapshot")
    return web.FileResponse(path, headers={"Content-Type": "image/jpeg"})
