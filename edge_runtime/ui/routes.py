"""The operator page: plain HTML/CSS/JS from ui/static (no Node, no CDN) and its JSON APIs.

    GET  /ui/, /ui/camera, /ui/events, /ui/test, /ui/config   pages (a login page without a key)
    GET  /ui/login                                           the login page
    GET  /ui/static/{name}                                   style.css, app.js (not sensitive)
    GET  /ui/api/login                                       {"keys": whether a key is set at all}
    POST /ui/api/login {"key": ...}                          sets the HttpOnly session cookie
    POST /ui/api/logout                                      ends the session
    GET  /ui/api/session                                     role, CSRF token, live_fps
    GET  /ui/api/live                                        server-sent events (live.py)
    GET  /ui/api/cameras/{camera}/frame.jpg?width=N          the last inspected frame (frames.py)
    GET  /ui/api/events?camera&tag&kind&since&until&limit&before
                                                             the history, newest first; 400 on bad filters
    GET  /ui/api/events/{id}                                 one event
    GET  /ui/api/facets                                      cameras and tags in the history
    GET  /ui/api/snapshots/{id}.jpg                          an event's snapshot
    POST /ui/api/predict                                     an image body -> the container's prediction JSON
    GET  /ui/api/config                                      effective and desired configuration, masked
    POST /ui/api/config/check                                a desired patch: would it apply? (admin)
    PATCH /ui/api/config                                     apply it; an invalid one changes nothing (admin)

Every API needs the viewer key or the admin key (access.py); edits the admin key and a CSRF token.
"""

from __future__ import annotations

import asyncio
import functools
import json
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from edge_runtime.api.admin import object_body
from edge_runtime.api.body import BodyLimits, image_from_body, received_body
from edge_runtime.api.errors import ApiError
from edge_runtime.api.routes import predict_in_slot
from edge_runtime.api.schemas import ResponseIds, dumps, prediction_body
from edge_runtime.app_keys import BODIES, CAMERAS, CONTROLLER, DELIVERY, INFERENCE, SETTINGS
from edge_runtime.control import DESIRED_SECTIONS, keyed_tree
from edge_runtime.events.history import BadQuery, EventHistory, EventQuery
from edge_runtime.redact import masked_tree
from edge_runtime.ui.access import COOKIE, Role, identify, role_for_key
from edge_runtime.ui.frames import width_for
from edge_runtime.ui.live import live
from edge_runtime.ui.state import UI, UiState

PAGES = {  # path -> (page, title): static/shell.html around static/pages/<page>.html
    "/ui/": ("overview", "Overview"),
    "/ui/camera": ("camera", "Camera"),
    "/ui/events": ("events", "Events"),
    "/ui/test": ("test", "Test"),
    "/ui/config": ("config", "Configuration"),
}
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# The page loads nothing from elsewhere and runs no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOGIN_FAILURE_DELAY_S = 0.5  # a guesser gets two tries a second per connection


def register_ui_routes(app: web.Application) -> None:
    settings = app[SETTINGS]
    if not settings.ui.enabled:
        return
    app[UI] = ui = UiState(settings, app[INFERENCE].offload)
    app.on_shutdown.append(ui.on_shutdown)
    app.on_response_prepare.append(_security_headers)
    add = app.router.add_route
    add("GET", "/ui", to_pages)
    for path in PAGES:
        add("GET", path, page)
    add("GET", "/ui/login", login_page)
    add("GET", "/ui/static/{name}", static)
    add("GET", "/ui/api/login", login_possible)
    add("POST", "/ui/api/login", login)
    add("POST", "/ui/api/logout", logout)
    add("GET", "/ui/api/session", session)
    add("GET", "/ui/api/live", live)
    add("GET", "/ui/api/cameras/{camera}/frame.jpg", frame)
    add("GET", "/ui/api/events", events)
    add("GET", "/ui/api/events/{event_id}", event)
    add("GET", "/ui/api/facets", facets)
    add("GET", "/ui/api/snapshots/{event_id}.jpg", snapshot)
    add("POST", "/ui/api/predict", predict)
    add("GET", "/ui/api/config", config)
    add("POST", "/ui/api/config/check", config_check)
    add("PATCH", "/ui/api/config", config_patch)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/ui"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


async def to_pages(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


def _file(name: str) -> bytes:
    return resources.files("edge_runtime.ui").joinpath("static", name).read_bytes()


@functools.cache
def _page(page: str, title: str) -> bytes:
    shell = _file("shell.html").decode()
    main = _file(f"pages/{page}.html").decode()
    return shell.replace("{title}", title).replace("{page}", page).replace("{main}", main).encode()


def _html(page: str, title: str) -> web.Response:
    return web.Response(body=_page(page, title), content_type="text/html", charset="utf-8")


def _ui(request: web.Request) -> UiState:
    return request.app[UI]


async def page(request: web.Request) -> web.Response:
    ui = _ui(request)
    try:
        access = identify(request, ui.app_settings, ui.sessions)
    except ApiError:
        access = None
    if access is None:  # back here after the login (the page checks `next` is one of its own)
        raise web.HTTPFound("/ui/login?" + urlencode({"next": request.path_qs}))
    return _html(*PAGES[request.path])


async def login_page(request: web.Request) -> web.Response:
    return _html("login", "Log in")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = STATIC_TYPES.get(name[name.rfind(".") :]) if "." in name else None
    if kind is None or "/" in name or name.startswith("."):
        raise ApiError(404, "NotFound", "no such file")
    try:
        body = _file(name)
    except (FileNotFoundError, IsADirectoryError):
        raise ApiError(404, "NotFound", "no such file") from None
    return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})


# ---- session ------------------------------------------------------------------------------------


async def login_possible(request: web.Request) -> web.Response:
    """For the login page before anyone types: whether any key is set (nothing about the keys)."""
    settings = _ui(request).app_settings
    return _json({"keys": settings.server.admin_key is not None or settings.ui.viewer_key is not None})


async def login(request: web.Request) -> web.Response:
    ui = _ui(request)
    body = await object_body(request, '{"key": "..."}')
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise ApiError(400, "BadRequest", 'body must be {"key": "<viewer or admin key>"}')
    if ui.app_settings.server.admin_key is None and ui.settings.viewer_key is None:
        raise ApiError(403, "NoKeys", "no key is set: set ui.viewer_key or server.admin_key to log in")
    role = role_for_key(ui.app_settings, key)
    if role is None:
        await asyncio.sleep(LOGIN_FAILURE_DELAY_S)
        raise ApiError(401, "Unauthorized", "wrong key")
    session = ui.sessions.create(role)
    response = _json({"role": role.name.lower()})
    response.set_cookie(
        COOKIE,
        session.token,
        max_age=int(ui.settings.session_ttl_s),
        path="/ui",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.Response:
    ui = _ui(request)
    access = ui.require_viewer(request)
    if access.session is not None:
        ui.sessions.drop(access.session.token)
    response = _json({"role": None})
    response.del_cookie(COOKIE, path="/ui")
    return response


async def session(request: web.Request) -> web.Response:
    ui = _ui(request)
    access = ui.require_viewer(request)
    settings = request.app[CONTROLLER].settings
    return _json(
        {
            "role": access.role.name.lower(),
            "how": access.how,
            "csrf": None if access.session is None else access.session.csrf,
            "can_edit": access.role >= Role.ADMIN,
            "live_fps": ui.settings.live_fps,
            "history": settings.events.history_path is not None,
        }
    )


# ---- cameras and events -------------------------------------------------------------------------


async def frame(request: web.Request) -> web.Response:
    ui = _ui(request)
    ui.require_viewer(request)
    camera = request.match_info["camera"]
    inspection = request.app[CAMERAS].inspections.get(camera)
    if inspection is None:
        raise ApiError(404, "NotFound", f"camera {camera!r} has no inspected frame (yet)")
    try:
        width = width_for(int(request.query.get("width", "1280")))
    except ValueError:
        raise ApiError(400, "BadRequest", "width must be an integer") from None
    jpeg = await ui.jpegs.get(inspection, width)
    return web.Response(
        body=jpeg.body, content_type="image/jpeg", headers={"X-Inspection-Sequence": str(jpeg.sequence)}
    )


def _history(request: web.Request) -> EventHistory:
    history = request.app[DELIVERY].history
    if history is None:
        raise ApiError(404, "HistoryOff", "the event history is off (events.history_path is null)")
    return history


async def events(request: web.Request) -> web.Response:
    _ui(request).require_viewer(request)
    try:
        query = EventQuery.from_params(request.query)
    except BadQuery as exc:
        raise ApiError(400, "BadFilter", str(exc)) from None
    page = await _history(request).query(query)
    return _json({"events": list(page.events), "next_before": page.next_before})


async def event(request: web.Request) -> web.Response:
    _ui(request).require_viewer(request)
    found = await _history(request).get(request.match_info["event_id"])
    if found is None:
        raise ApiError(404, "NotFound", "no such event in the history")
    return _json(found)


async def facets(request: web.Request) -> web.Response:
    _ui(request).require_viewer(request)
    return _json(await _history(request).facets())


async def snapshot(request: web.Request) -> web.FileResponse:
    _ui(request).require_viewer(request)
    store = request.app[DELIVERY].snapshots
    path = store.path_for(request.match_info["event_id"]) if store is not None else None
    if path is None:
        raise ApiError(404, "NotFound", "no such snapshot (expired, or snapshots are off)")
    return web.FileResponse(path, headers={"Content-Type": "image/jpeg"})


async def predict(request: web.Request) -> web.Response:
    """The test page: the same inference service, admission and limits as POST /image."""
    _ui(request).require_viewer(request)
    service = request.app[INFERENCE]
    service.predictor()  # 503 while the model loads
    server = request.app[SETTINGS].server
    async with received_body(request, BodyLimits.of(server), request.app[BODIES]) as body:
        data = image_from_body(body, request.headers.get("Content-Type", ""))
        answer = await predict_in_slot(service, data, 503)
    ids = ResponseIds(server.response_id, server.response_project, server.response_iteration)
    return web.Response(
        body=dumps(prediction_body(answer.result, ids)).encode(), content_type="application/json"
    )


# ---- configuration ------------------------------------------------------------------------------


async def config(request: web.Request) -> web.Response:
    access = _ui(request).require_viewer(request)
    controller = request.app[CONTROLLER]
    return _json(
        {
            "effective": masked_tree(keyed_tree(controller.settings)),
            "desired": masked_tree(controller.desired),
            "editable_sections": list(DESIRED_SECTIONS),
            "can_edit": access.role >= Role.ADMIN,
            "status": controller.config.to_dict(),
        }
    )


async def config_check(request: web.Request) -> web.Response:
    _ui(request).require_admin(request)
    patch = await object_body(request, "a desired-properties patch")
    error = await request.app[CONTROLLER].check(patch)
    return _json({"ok": error is None, "error": error}, status=200 if error is None else 400)


async def config_patch(request: web.Request) -> web.Response:
    _ui(request).require_admin(request)
    patch = await object_body(request, "a desired-properties patch")
    # An edit that does not apply changes nothing, not even the desired document (unlike the twin's).
    result = await request.app[CONTROLLER].patch(patch, keep_rejected=False)
    return _json(result.to_dict(), status=200 if result.applied else 400)


def _json(body: Any, status: int = 200) -> web.Response:
    text = json.dumps(body, default=str) + "\n"  # paths and the like as text
    return web.Response(status=status, body=text.encode(), content_type="application/json", charset="utf-8")
