"""Local administration, the twin's twin: the same desired-properties patches and model reload.

Enabled only when server.admin_key is set; every call needs `Authorization: Bearer <admin_key>`.

    GET  /admin/status          the status getStatus returns (model, cameras, sinks, last config result)
    GET  /admin/desired         the desired document in force (secrets masked)
    PATCH /admin/desired        a desired-properties patch (twin semantics); 200 applied | 400 rejected
    PUT  /admin/model           {"url": "https://...", "sha256": "..."} or {"path": "/models/x.zip"}:
                                download/load/warm up, then swap; 200 once serving | 422 with the error
                                (the previous model keeps serving and stays the configured one);
                                each request answers with its own update's outcome ("update": id)
    POST /admin/model/reload    load the configured model again; 200 | 500 with the error

Bodies are JSON objects; anything else (not UTF-8, not JSON, nested deeper than MAX_DEPTH, a number
past Python's digit limit) is a 400 {"code": "BadRequest", "message": ...}, never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from edge_runtime.api.body import BodyLimits, expect_continue, parse_json, received_body
from edge_runtime.api.errors import ApiError
from edge_runtime.api.keys import bearer_matches
from edge_runtime.app_keys import BODIES, CONTROLLER, SETTINGS
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.redact import masked_tree, scrub

MAX_DEPTH = 32  # a desired document is about 6 levels deep; deeper ones would strain recursion later


def register_admin_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("GET", "/admin/status", admin_status, expect_handler=expect_continue)
    add("GET", "/admin/desired", admin_get_desired, expect_handler=expect_continue)
    add("PATCH", "/admin/desired", admin_patch_desired, expect_handler=expect_continue)
    add("PUT", "/admin/model", admin_put_model, expect_handler=expect_continue)
    add("POST", "/admin/model/reload", admin_reload_model, expect_handler=expect_continue)


def _authorise(request: web.Request) -> None:
    key = request.app[SETTINGS].server.admin_key
    if key is None:
        raise ApiError(403, "AdminDisabled", "the admin API is off: set server.admin_key to enable it")
    if not bearer_matches(request, key):
        raise ApiError(401, "Unauthorized", "missing or wrong 'Authorization: Bearer <admin key>' header")


async def object_body(request: web.Request, what: str) -> dict[str, Any]:
    # Read like every body: bounded in size and time, decoded (gzip/deflate), within the shared budget.
    async with received_body(
        request, BodyLimits.of(request.app[SETTINGS].server), request.app[BODIES]
    ) as raw:
        return _json_object(raw, what)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        body = parse_json(raw)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", str(exc)[:200]) from exc
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", f"body must be a JSON object: {what}")
    if _depth_exceeds(body, MAX_DEPTH):
        raise ApiError(400, "BadRequest", f"body is nested more than {MAX_DEPTH} levels deep")
    return body


def _depth_exceeds(tree: object, limit: int) -> bool:
    """Whether `tree` nests objects/arrays deeper than `limit` (iterative: no recursion to exhaust)."""
    stack: list[tuple[object, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=(json.dumps(body, default=str) + "\n").encode(), content_type="application/json"
    )


async def admin_status(request: web.Request) -> web.Response:
    _authorise(request)
    return _json(request.app[CONTROLLER].status())


async def admin_get_desired(request: web.Request) -> web.Response:
    _authorise(request)
    return _json(masked_tree(request.app[CONTROLLER].desired))


async def admin_patch_desired(request: web.Request) -> web.Response:
    _authorise(request)
    patch = await object_body(request, "a desired-properties patch")
    result = await request.app[CONTROLLER].patch(patch)
    return _json(result.to_dict(), status=200 if result.applied else 400)


async def admin_put_model(request: web.Request) -> web.Response:
    _authorise(request)
    body = await object_body(request, '{"url": ..., "sha256": ...} or {"path": ...}')
    if not ({"url", "path"} & body.keys()):
        raise ApiError(400, "BadRequest", 'body must be {"url": ..., "sha256": ...} or {"path": ...}')
    # The other source is cleared, so the request names exactly one model.
    model = {"url": None, "sha256": None, "path": None} | body
    controller = request.app[CONTROLLER]
    result = await controller.patch({"model": model})
    if not result.applied:
        return _json(result.to_dict(), status=400)
    # This request's own update; the same model as configured: the update that loads (loaded) it.
    update = result.model_update if result.model_update is not None else controller.configured_update
    state = await controller.wait_for_model(update)
    status = controller.model_status(state)
    return _json({"model": status}, status=200 if state.status == "ready" else 422)


async def admin_reload_model(request: web.Request) -> web.Response:
    _authorise(request)
    controller = request.app[CONTROLLER]
    try:
        await controller.reload_model()
    except EdgeRuntimeError as exc:
        return _json({"error": scrub(str(exc)), "model": controller.status()["model"]}, status=500)
    return _json({"model": controller.status()["model"]})
