"""The operator page's HTTP API on the real application over real TCP, with the demo camera and the demo
detector running inside it: who gets in (keys, the login cookie, CSRF and Origin, loopback viewers), the
masked configuration and its check-then-apply edits, the event history API (filters, paging, 400s,
one event, facets, snapshots; a restart; the count bound), the live stream (board first, inspections at
ui.live_fps, events, backlogs; the watcher cap), frame JPEGs, test predictions, and the switches
(history off, ui off, no keys).

The synthetic belt runs a compressed cycle here (3 s instead of 12 s: the same frames, detector and
rules), so a few seconds of running produce events of both tags and kinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.web import Application, AppRunner, TCPSite
from PIL import Image
from waiting import eventually

from edge_runtime.app import create_app, wait_until_loaded
from edge_runtime.app_keys import CAMERAS, CONTROLLER, DELIVERY
from edge_runtime.demo.camera import DEMO_CAMERA
from edge_runtime.demo.model import DEMO_LABELS
from edge_runtime.events.ids import EVENT_ID_PATTERN
from edge_runtime.settings import Settings, build_settings
from edge_runtime.sources.readers import ConveyorReader
from edge_runtime.ui.routes import LOGIN_FAILURE_DELAY_S
from edge_runtime.ui.state import UI

pytestmark = pytest.mark.slow

ADMIN_KEY = "admin-key-4f1c9a7e2b"
VIEWER_KEY = "viewer-key-8d3e6b0a51"
CAMERA = "demo-conveyor"
DOOR_URL = "rtsp://user:pa55@cam.example/x"  # a disabled camera's URL with credentials
CAMERA_FPS = 8.0  # faster than ui.live_fps: the live stream's cap has something to cap
LIVE_FPS = 2.0
MAX_BODY = 256 * 1024
JSON = "application/json"

# Every API route but the login itself: (method, path).
API_ROUTES = [
    ("GET", "/ui/api/session"),
    ("POST", "/ui/api/logout"),
    ("GET", "/ui/api/live"),
    ("GET", f"/ui/api/cameras/{CAMERA}/frame.jpg"),
    ("GET", "/ui/api/events"),
    ("GET", f"/ui/api/events/{'0' * 26}"),
    ("GET", "/ui/api/facets"),
    ("GET", f"/ui/api/snapshots/{'0' * 26}.jpg"),
    ("POST", "/ui/api/predict"),
    ("GET", "/ui/api/config"),
    ("POST", "/ui/api/config/check"),
    ("PATCH", "/ui/api/config"),
]
PAGES = ["/ui/", "/ui/camera", "/ui/events", "/ui/test", "/ui/config"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ADMIN = bearer(ADMIN_KEY)
VIEWER = bearer(VIEWER_KEY)


# --------------------------------------------------------------------------------------------------
# Servers


@pytest.fixture(scope="module", autouse=True)
def fast_belt() -> Iterator[None]:
    """The conveyor's cycle compressed to 3 s: a stain in [0.3, 1.1) s, glare in [1.6, 2.4) s (8 frames
    each at 10 fps; k=2 of n=3 starts an episode, 3 clean frames end it; the demo rules' 2 s cooldown
    is shorter than the cycle, so every pass is an episode)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ConveyorReader, "CYCLE_S", 3.0)
        patch.setattr(ConveyorReader, "STAIN_WINDOW", (0.3, 1.1))
        patch.setattr(ConveyorReader, "GLARE_WINDOW", (1.6, 2.4))
        yield


def demo_camera(**overrides: Any) -> dict[str, Any]:
    return {**DEMO_CAMERA.model_dump(), "fps": CAMERA_FPS, **overrides}


def ui_settings(
    folder: Path,
    *,
    ui: Mapping[str, Any] | None = None,
    events: Mapping[str, Any] | None = None,
    cameras: list[dict[str, Any]] | None = None,
    keys: bool = True,
) -> Settings:
    """The demo camera (and a disabled camera whose URL holds credentials), both keys, loopback
    clients NOT let in, history and snapshots under `folder`; each section's overrides last."""
    folder.mkdir(parents=True, exist_ok=True)
    key_server = {"admin_key": ADMIN_KEY} if keys else {}
    key_ui = {"viewer_key": VIEWER_KEY} if keys else {}
    return build_settings(
        {
            "server": {"inference_workers": 2, "max_body_bytes": MAX_BODY, **key_server},
            "model": {"device": "cpu"},
            "ui": {
                "open_on_loopback": False,
                "live_fps": LIVE_FPS,
                "max_live_clients": 2,
                **key_ui,
                **(ui or {}),
            },
            "events": {
                "jsonl_path": folder / "events.jsonl",
                "snapshot_dir": folder / "snapshots",
                "outbox_path": folder / "outbox.sqlite3",
                "history_path": folder / "history.sqlite3",
                **(events or {}),
            },
            "cameras": [demo_camera(), {"id": "door", "url": DOOR_URL, "enabled": False}]
            if cameras is None
            else cameras,
        }
    )


@pytest.fixture(scope="module")
def ui_server(module_servers: Any, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shared server: demo camera at 8 fps, keys set, loopback clients need a key."""
    return module_servers(demo_dir, ui_settings(tmp_path_factory.mktemp("ui")))


@pytest.fixture(scope="module")
def open_server(module_servers: Any, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Loopback clients are viewers; no history; no camera."""
    settings = ui_settings(
        tmp_path_factory.mktemp("open"),
        ui={"open_on_loopback": True},
        events={"history_path": None},
        cameras=[],
    )
    return module_servers(demo_dir, settings)


@pytest.fixture
async def web() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps no cookies: each test sends the session cookie itself, where it means to."""
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session


# --------------------------------------------------------------------------------------------------
# Helpers


async def call(
    web: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: object = None,
    data: bytes | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One request; the JSON body parsed (None when the answer is not JSON)."""
    kwargs: dict[str, Any] = {"headers": dict(headers or {}), "allow_redirects": False}
    if body is not None:
        kwargs["json"] = body
    elif data is not None:
        kwargs["data"] = data
    async with web.request(method, url, **kwargs) as response:
        raw = await response.read()
        parsed = json.loads(raw) if response.content_type == JSON else None
        return response.status, parsed, response


def check_error(status: int, body: Any, want_status: int, code: str | None = None) -> dict[str, Any]:
    """A JSON error {"code", "message"} with this status."""
    assert status == want_status, body
    assert isinstance(body, dict) and set(body) == {"code", "message"}, body
    assert isinstance(body["message"], str) and body["message"]
    if code is not None:
        assert body["code"] == code, body
    return body


@dataclass(frozen=True, slots=True)
class Login:
    token: str
    csrf: str
    cookie: SimpleCookie

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"edge_ui={self.token}"}

    def unsafe(self, base: str, origin: str | None = "same") -> dict[str, str]:
        """Headers of a state-changing call from the page: the cookie, the CSRF token, the Origin."""
        headers = self.headers | {"X-CSRF-Token": self.csrf}
        if origin is not None:
            headers["Origin"] = base if origin == "same" else origin
        return headers


async def login(web: aiohttp.ClientSession, base: str, key: str) -> Login:
    async with web.post(f"{base}/ui/api/login", json={"key": key}) as response:
        assert response.status == 200, await response.text()
        cookie: SimpleCookie = SimpleCookie()
        for header in response.headers.getall("Set-Cookie"):
            cookie.load(header)
    token = cookie["edge_ui"].value
    status, session, _ = await call(
        web, "GET", f"{base}/ui/api/session", headers={"Cookie": f"edge_ui={token}"}
    )
    assert status == 200, session
    return Login(token, session["csrf"], cookie)


@dataclass(frozen=True, slots=True)
class Sse:
    kind: str
    data: Any
    at: float  # time.monotonic() when read


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[Sse]:
    """Server-sent events as they arrive (comments skipped)."""
    kind, data = "message", list[str]()
    while True:
        line = await response.content.readline()
        if not line:
            return
        text = line.decode("utf-8").rstrip("\r\n")
        if not text:
            if data:
                yield Sse(kind, json.loads("\n".join(data)), time.monotonic())
            kind, data = "message", []
        elif text.startswith(":"):
            continue
        elif text.startswith("event:"):
            kind = text.removeprefix("event:").strip()
        elif text.startswith("data:"):
            data.append(text.removeprefix("data:").removeprefix(" "))


async def next_sse(stream: AsyncIterator[Sse], timeout: float = 5.0) -> Sse:
    async with asyncio.timeout(timeout):
        return await anext(stream)


async def open_live(
    web: aiohttp.ClientSession, base: str, headers: Mapping[str, str]
) -> aiohttp.ClientResponse:
    return await web.get(
        f"{base}/ui/api/live", headers=dict(headers), timeout=aiohttp.ClientTimeout(total=None, sock_read=10)
    )


async def history_events(
    web: aiohttp.ClientSession, base: str, query: str = "limit=200"
) -> list[dict[str, Any]]:
    status, body, _ = await call(web, "GET", f"{base}/ui/api/events?{query}", headers=VIEWER)
    assert status == 200, body
    events: list[dict[str, Any]] = body["events"]
    return events


async def wait_for_events(
    web: aiohttp.ClientSession, base: str, at_least: int = 4, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """The history once it holds both tags, started and ended (about one belt cycle), and at least
    `at_least` events."""
    deadline = time.monotonic() + timeout
    while True:
        events = await history_events(web, base)
        kinds = {(e["tag"], e["kind"]) for e in events}
        if kinds >= {(t, k) for t in DEMO_LABELS for k in ("started", "ended")} and len(events) >= at_least:
            return events
        assert time.monotonic() < deadline, f"not every tag and kind within {timeout} s: {kinds}"
        await asyncio.sleep(0.2)


def grey_jpeg() -> bytes:
    """A small clean belt."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (170, 170, 170)).save(buffer, "JPEG")
    return buffer.getvalue()


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def config_state(server: Any) -> tuple[dict[str, Any], Settings]:
    """The controller's desired document (a deep copy) and effective settings, read on the server's loop."""

    async def read() -> tuple[dict[str, Any], Settings]:
        controller = server.app[CONTROLLER]
        return json.loads(json.dumps(controller.desired)), controller.settings

    state: tuple[dict[str, Any], Settings] = server.call(read())
    return state


# --------------------------------------------------------------------------------------------------
# Who gets in


async def test_every_api_route_needs_a_key(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    for method, path in API_ROUTES:
        for headers in ({}, bearer("wrong-key-000000000"), {"Cookie": "edge_ui=forged-session-token"}):
            status, body, response = await call(web, method, base + path, headers=headers)
            check_error(status, body, 401, "Unauthorized")
            assert "Set-Cookie" not in response.headers
    # ... and a right key opens them (the 401s above are about the key, not the route).
    status, body, _ = await call(web, "GET", f"{base}/ui/api/session", headers=VIEWER)
    assert status == 200 and body["role"] == "viewer" and body["how"] == "key" and body["csrf"] is None


def login_target(location: str) -> str:
    """The page a redirect to the login page names to come back to (its `next`)."""
    parts = urlsplit(location)
    assert parts.path == "/ui/login" and not parts.netloc, location
    (target,) = parse_qs(parts.query)["next"]
    return target


async def test_pages_redirect_to_the_login_and_static_files_need_no_key(
    ui_server: Any, web: aiohttp.ClientSession
) -> None:
    base = ui_server.url
    for page in PAGES:
        status, _, response = await call(web, "GET", base + page)
        assert status == 302 and login_target(response.headers["Location"]) == page, page
        status, _, response = await call(web, "GET", base + page, headers=bearer("wrong-key-000000000"))
        assert status == 302 and login_target(response.headers["Location"]) == page, page
        status, _, response = await call(web, "GET", base + page, headers=VIEWER)
        assert status == 200 and response.content_type == "text/html", page
    status, _, response = await call(web, "GET", f"{base}/ui")
    assert status == 302 and response.headers["Location"] == "/ui/"

    status, _, response = await call(web, "GET", f"{base}/ui/login")
    assert status == 200 and response.content_type == "text/html"
    # The page's own rules travel with every /ui answer: no foreign script, no framing.
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    for name, kind in (("style.css", "text/css"), ("app.js", "text/javascript")):
        status, _, response = await call(web, "GET", f"{base}/ui/static/{name}")
        assert status == 200 and response.content_type == kind, name
    # The pages themselves are not static files (they would dodge the key), nor is anything else.
    for name in (
        "shell.html",
        "pages%2Fconfig.html",
        "pages%2F..%2F..%2Faccess.py",
        "..%2F__init__.py",
        ".hidden.css",
        "nothing.css",
        "pages",
        "app",
    ):
        status, body, _ = await call(web, "GET", f"{base}/ui/static/{name}")
        assert status == 404, (name, body)


async def test_a_wrong_key_is_refused_slowly(ui_server: Any, web: aiohttp.ClientSession) -> None:
    start = time.monotonic()
    status, body, response = await call(
        web, "POST", f"{ui_server.url}/ui/api/login", body={"key": "guess-guess-guess"}
    )
    elapsed = time.monotonic() - start
    check_error(status, body, 401, "Unauthorized")
    assert "Set-Cookie" not in response.headers
    assert elapsed >= LOGIN_FAILURE_DELAY_S * 0.9, f"answered in {elapsed:.3f} s: guessing is cheap"
    for bad in ({"key": ""}, {"key": 5}, {"token": VIEWER_KEY}, [VIEWER_KEY]):
        status, body, _ = await call(web, "POST", f"{ui_server.url}/ui/api/login", body=bad)
        check_error(status, body, 400, "BadRequest")
    status, body, _ = await call(
        web, "POST", f"{ui_server.url}/ui/api/login", data=b"key=" + VIEWER_KEY.encode()
    )
    check_error(status, body, 400, "BadRequest")


async def test_a_key_with_a_lone_surrogate_is_a_wrong_key(ui_server: Any, web: aiohttp.ClientSession) -> None:
    status, body, _ = await call(
        web, "POST", f"{ui_server.url}/ui/api/login", data=b'{"key": "\\ud800viewer-key-8d3e6b0a51"}'
    )
    check_error(status, body, 401, "Unauthorized")


async def test_a_login_sets_a_strict_http_only_cookie_and_logout_ends_it(
    ui_server: Any, web: aiohttp.ClientSession
) -> None:
    base = ui_server.url
    status, body, _ = await call(web, "GET", f"{base}/ui/api/login")  # no key needed to ask
    assert status == 200 and body == {"keys": True}, body
    session = await login(web, base, VIEWER_KEY)
    morsel = session.cookie["edge_ui"]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/ui"
    assert int(morsel["max-age"]) == int(ui_server.app[UI].settings.session_ttl_s)
    assert not morsel["secure"], "plain HTTP here: a Secure cookie would never come back"

    status, body, _ = await call(web, "GET", f"{base}/ui/api/session", headers=session.headers)
    assert status == 200
    assert body["role"] == "viewer" and body["how"] == "session" and body["can_edit"] is False
    assert body["csrf"] == session.csrf and len(session.csrf) >= 32 and session.csrf != session.token
    assert body["live_fps"] == LIVE_FPS and body["history"] is True
    for path in ("/ui/api/events", "/ui/api/facets", "/ui/api/config"):
        status, body, _ = await call(web, "GET", base + path, headers=session.headers)
        assert status == 200, (path, body)
    status, _, _ = await call(web, "GET", f"{base}/ui/", headers=session.headers)
    assert status == 200
    admin = await login(web, base, ADMIN_KEY)
    status, body, _ = await call(web, "GET", f"{base}/ui/api/session", headers=admin.headers)
    assert body["role"] == "admin" and body["can_edit"] is True and admin.token != session.token

    # Logging out is state-changing: it needs the token too (a foreign page cannot log you out).
    status, body, _ = await call(web, "POST", f"{base}/ui/api/logout", headers=session.headers)
    check_error(status, body, 403, "Forbidden")
    status, body, response = await call(web, "POST", f"{base}/ui/api/logout", headers=session.unsafe(base))
    assert status == 200 and body == {"role": None}
    gone: SimpleCookie = SimpleCookie()
    gone.load(response.headers["Set-Cookie"])
    assert gone["edge_ui"].value == "" and gone["edge_ui"]["path"] == "/ui"
    # The server forgot the session: the old cookie, sent anyway, opens nothing.
    status, body, _ = await call(web, "GET", f"{base}/ui/api/session", headers=session.headers)
    check_error(status, body, 401, "Unauthorized")
    status, _, response = await call(web, "GET", f"{base}/ui/", headers=session.headers)
    assert status == 302 and login_target(response.headers["Location"]) == "/ui/"
    status, body, _ = await call(web, "GET", f"{base}/ui/api/session", headers=admin.headers)
    assert status == 200 and body["role"] == "admin", "one logout ends one session"


async def test_csrf_and_origin_guard_a_cookie_session(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    admin = await login(web, base, ADMIN_KEY)
    viewer = await login(web, base, VIEWER_KEY)
    for method, path in (("POST", "/ui/api/config/check"), ("PATCH", "/ui/api/config")):
        url = base + path
        refused = {
            "no token": admin.headers,
            "no token, same origin": admin.headers | {"Origin": base},
            "wrong token": admin.headers | {"X-CSRF-Token": "x" * 43},
            "another session's token": admin.headers | {"X-CSRF-Token": viewer.csrf},
            "cross-site origin": admin.unsafe(base, "https://evil.example"),
            "null origin": admin.unsafe(base, "null"),
            "another port": admin.unsafe(base, f"http://127.0.0.1:{ui_server.port + 1}"),
        }
        for why, headers in refused.items():
            status, body, _ = await call(web, method, url, headers=headers, body={})
            check_error(status, body, 403, "Forbidden")
            assert "CSRF" in body["message"] or "origin" in body["message"], (why, body)
        for headers in (admin.unsafe(base), admin.unsafe(base, origin=None)):
            status, body, _ = await call(web, method, url, headers=headers, body={})
            assert status == 200, (method, body)
        # Scripts with the key in a header carry no cookie, so no token is needed.
        status, body, _ = await call(web, method, url, headers=ADMIN, body={})
        assert status == 200, (method, body)

    # A viewer's state-changing call (a test prediction) is guarded the same way.
    image = grey_jpeg()
    status, body, _ = await call(web, "POST", f"{base}/ui/api/predict", headers=viewer.headers, data=image)
    check_error(status, body, 403, "Forbidden")
    status, body, _ = await call(
        web, "POST", f"{base}/ui/api/predict", headers=viewer.unsafe(base, "https://evil.example"), data=image
    )
    check_error(status, body, 403, "Forbidden")
    status, body, _ = await call(
        web, "POST", f"{base}/ui/api/predict", headers=viewer.unsafe(base), data=image
    )
    assert status == 200, body


# --------------------------------------------------------------------------------------------------
# Configuration


async def test_a_viewer_cannot_edit_the_configuration(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    viewer = await login(web, base, VIEWER_KEY)
    patch = {"cameras": {CAMERA: {"fps": 3}}}
    before = config_state(ui_server)
    for headers in (VIEWER, viewer.unsafe(base)):
        for method, path in (("POST", "/ui/api/config/check"), ("PATCH", "/ui/api/config")):
            status, body, _ = await call(web, method, base + path, headers=headers, body=patch)
            check_error(status, body, 403, "Forbidden")
            assert "admin" in body["message"]
    status, body, _ = await call(web, "GET", f"{base}/ui/api/config", headers=VIEWER)
    assert status == 200 and body["can_edit"] is False
    assert config_state(ui_server) == before


async def test_an_invalid_patch_is_refused_with_its_reason_and_changes_nothing(
    ui_server: Any, web: aiohttp.ClientSession
) -> None:
    base = ui_server.url
    invalid = [
        ({"cameras": {CAMERA: {"fps": 0}}}, "fps"),
        ({"cameras": {CAMERA: {"rules": {"*": {"k": 5, "n": 3}}}}}, "must not exceed n"),
        ({"cameras": {CAMERA: {"rules": {"scratch": {"k": 1}}}}}, "scratch"),  # no such label
        ({"server": {"port": 1}}, "'server' cannot be changed at run time"),
        ({"events": {"history_max_events": 7}}, "cannot change at run time"),
        ({"cameras": {"new": {"url": "rtsp://x:topsecret@h/y", "fps": -1}}}, "cameras.new.fps"),
    ]
    before_state = config_state(ui_server)
    _, before, _ = await call(web, "GET", f"{base}/ui/api/config", headers=ADMIN)
    for patch, reason in invalid:
        status, body, _ = await call(web, "POST", f"{base}/ui/api/config/check", headers=ADMIN, body=patch)
        assert status == 400 and body["ok"] is False, (patch, body)
        assert reason in body["error"], (patch, body)
        status, body, _ = await call(web, "PATCH", f"{base}/ui/api/config", headers=ADMIN, body=patch)
        assert status == 400 and body["applied"] is False, (patch, body)
        assert reason in body["error"], (patch, body)
        assert "topsecret" not in json.dumps(body)
    for bad_body in (b"[1]", b"not json", b""):
        for method, path in (("POST", "/ui/api/config/check"), ("PATCH", "/ui/api/config")):
            status, body, _ = await call(web, method, base + path, headers=ADMIN, data=bad_body)
            check_error(status, body, 400, "BadRequest")
    # Nothing changed: not the effective settings, not the desired document, not the config status.
    assert config_state(ui_server) == before_state
    _, after, _ = await call(web, "GET", f"{base}/ui/api/config", headers=ADMIN)
    assert after == before


async def test_a_valid_patch_applies(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    patch = {"cameras": {CAMERA: {"fps": 6}}}
    try:
        status, body, _ = await call(web, "POST", f"{base}/ui/api/config/check", headers=ADMIN, body=patch)
        assert status == 200 and body == {"ok": True, "error": None}
        _, unchanged, _ = await call(web, "GET", f"{base}/ui/api/config", headers=ADMIN)
        assert unchanged["effective"]["cameras"][CAMERA]["fps"] == CAMERA_FPS, "a check applies nothing"

        status, body, _ = await call(web, "PATCH", f"{base}/ui/api/config", headers=ADMIN, body=patch)
        assert status == 200 and body["applied"] is True, body
        assert body["changes"], body
        status, config, _ = await call(web, "GET", f"{base}/ui/api/config", headers=ADMIN)
        assert config["effective"]["cameras"][CAMERA]["fps"] == 6
        assert config["desired"]["cameras"][CAMERA]["fps"] == 6
        assert config["status"]["status"] == "applied", config["status"]
        assert config_state(ui_server)[1].cameras[0].fps == 6
    finally:  # null removes the key: the camera goes back to its base fps
        status, body, _ = await call(
            web, "PATCH", f"{base}/ui/api/config", headers=ADMIN, body={"cameras": {CAMERA: None}}
        )
        assert status == 200 and body["applied"] is True, body
    _, config, _ = await call(web, "GET", f"{base}/ui/api/config", headers=ADMIN)
    assert config["effective"]["cameras"][CAMERA]["fps"] == CAMERA_FPS


def lock_waiters(server: Any) -> int:
    """Requests waiting for the controller's lock."""

    async def count() -> int:
        waiters = server.app[CONTROLLER]._lock._waiters
        return 0 if waiters is None else len(waiters)

    return int(server.call(count()))


async def test_concurrent_patches_never_leave_an_invalid_desired_document(
    ui_server: Any, web: aiohttp.ClientSession
) -> None:
    base = ui_server.url
    controller = ui_server.app[CONTROLLER]
    # The demo rule is k=2 of n=3: each patch alone is valid, both together are not (k > n).
    first = {"cameras": {CAMERA: {"rules": {"*": {"k": 3}}}}}
    second = {"cameras": {CAMERA: {"rules": {"*": {"n": 2}}}}}

    async def hold() -> None:  # a slow edit in progress (a camera restarting, a sink connecting)
        await controller._lock.acquire()

    async def release() -> None:
        controller._lock.release()

    ui_server.call(hold())
    try:
        one = asyncio.ensure_future(call(web, "PATCH", f"{base}/ui/api/config", headers=ADMIN, body=first))
        await eventually(lambda: lock_waiters(ui_server) == 1, 5, "the first patch waiting")
        two = asyncio.ensure_future(call(web, "PATCH", f"{base}/ui/api/config", headers=ADMIN, body=second))
        await eventually(lambda: lock_waiters(ui_server) == 2, 5, "the second patch waiting")
    finally:
        ui_server.call(release())
    try:
        (status_one, body_one, _), (status_two, body_two, _) = await asyncio.gather(one, two)
        assert status_one == 200 and body_one["applied"] is True, body_one
        assert status_two == 400 and body_two["applied"] is False, body_two
        assert "must not exceed n" in body_two["error"]
        desired, _ = config_state(ui_server)
        rule = desired["cameras"][CAMERA]["rules"]["*"]
        assert rule == {"k": 3}, f"the refused patch was kept in the desired document: {rule}"
        assert controller.config.status.value == "applied", controller.config
        # ... and an unrelated edit still applies.
        status, body, _ = await call(
            web, "POST", f"{base}/ui/api/config/check", headers=ADMIN, body={"log_level": "INFO"}
        )
        assert status == 200, body
    finally:
        status, body, _ = await call(
            web, "PATCH", f"{base}/ui/api/config", headers=ADMIN, body={"cameras": {CAMERA: None}}
        )
        assert status == 200 and body["applied"] is True, body


async def test_the_configuration_shows_no_secret(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    # A camera added at run time (disabled) with credentials in both URLs: the desired document too.
    back = {
        "url": "rtsp://back:s3cr3t-a@cam2.example/main",
        "detect_url": "rtsp://back:s3cr3t-b@cam2/sub",
        "enabled": False,
    }
    added = {"cameras": {"back": back}}
    status, body, _ = await call(web, "PATCH", f"{base}/ui/api/config", headers=ADMIN, body=added)
    assert status == 200 and body["applied"] is True, body
    try:
        for headers in (ADMIN, VIEWER):
            status, config, _ = await call(web, "GET", f"{base}/ui/api/config", headers=headers)
            assert status == 200
            text = json.dumps(config)
            for secret in (ADMIN_KEY, VIEWER_KEY, "pa55", "user:", "s3cr3t", "back:"):
                assert secret not in text, secret
            effective = config["effective"]
            assert effective["server"]["admin_key"] == "***" and effective["ui"]["viewer_key"] == "***"
            door = effective["cameras"]["door"]
            assert door["url"] == "rtsp://***@cam.example/x" and door["enabled"] is False
            assert effective["cameras"]["back"]["detect_url"] == "rtsp://***@cam2/sub"
            assert config["desired"]["cameras"]["back"]["url"] == "rtsp://***@cam2.example/main"
            assert config["desired"]["cameras"]["back"]["detect_url"] == "rtsp://***@cam2/sub"
            editable = {"model", "cameras", "sinks", "events", "log_level", "stations", "opcua"}
            assert set(config["editable_sections"]) == editable
    finally:
        status, body, _ = await call(
            web, "PATCH", f"{base}/ui/api/config", headers=ADMIN, body={"cameras": {"back": None}}
        )
        assert status == 200, body


# --------------------------------------------------------------------------------------------------
# The event history


async def test_events_are_recorded_and_each_filter_works(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    events = await wait_for_events(web, base)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True), "newest first"
    for event in events:
        assert EVENT_ID_PATTERN.fullmatch(event["id"])
        assert event["camera"] == CAMERA and event["roi"] == "full" and event["tag"] in DEMO_LABELS

    async def ids_for(query: str) -> list[str]:
        limit = "" if "limit=" in query else "&limit=200"
        return [e["id"] for e in await history_events(web, base, query + limit)]

    # Later events may arrive between two queries: compare against the same moment by `before`.
    newest = ids[0]
    cutoff = f"before={newest}"
    older = [e for e in events if e["id"] < newest]
    assert await ids_for(f"{cutoff}&camera={CAMERA}") == [e["id"] for e in older]
    assert await ids_for(f"{cutoff}&camera=another") == []
    assert await ids_for(f"{cutoff}&camera={CAMERA.upper()}") == [], "exact match"
    for tag in DEMO_LABELS:
        want = [e["id"] for e in older if e["tag"] == tag]
        assert want and await ids_for(f"{cutoff}&tag={tag}") == want, tag
    for kind in ("started", "ended"):
        want = [e["id"] for e in older if e["kind"] == kind]
        assert want and await ids_for(f"{cutoff}&kind={kind}") == want, kind
    assert await ids_for(f"{cutoff}&tag=stain&kind=ended") == [
        e["id"] for e in older if e["tag"] == "stain" and e["kind"] == "ended"
    ]
    # since (captured_at >= since) and until (<), as epoch seconds and as ISO 8601 with an offset or Z.
    # The events show captured_at to the millisecond: split between two events' times, never at one.
    times = [epoch(e["captured_at"]) for e in older]
    split = next(i for i in range(len(older) // 2, len(older)) if times[i] < times[i - 1])
    moment = (times[split - 1] + times[split]) / 2
    later, earlier = [e["id"] for e in older[:split]], [e["id"] for e in older[split:]]
    assert later and earlier
    assert await ids_for(f"{cutoff}&since={moment:.6f}") == later
    assert await ids_for(f"{cutoff}&until={moment:.6f}") == earlier
    local = datetime.fromtimestamp(moment).astimezone().isoformat().replace("+", "%2B")
    assert await ids_for(f"{cutoff}&since={local}") == later
    utc = datetime.fromtimestamp(moment, UTC).replace(tzinfo=None).isoformat() + "Z"
    assert await ids_for(f"{cutoff}&until={utc}") == earlier
    naive = datetime.fromtimestamp(moment, UTC).replace(tzinfo=None).isoformat()  # naive: UTC
    assert await ids_for(f"{cutoff}&until={naive}") == earlier
    assert await ids_for(f"{cutoff}&since={times[-1] - 1:.6f}&until={moment:.6f}") == earlier
    assert await ids_for(f"{cutoff}&limit=1") == [older[0]["id"]]


async def test_pages_are_disjoint_and_follow_each_other(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    await wait_for_events(web, base, at_least=5)  # two full pages of two, and more
    pages: list[list[str]] = []
    cursor = ""
    for _ in range(2):
        status, body, _ = await call(web, "GET", f"{base}/ui/api/events?limit=2{cursor}", headers=VIEWER)
        assert status == 200, body
        page = [e["id"] for e in body["events"]]
        assert len(page) == 2 and body["next_before"] == page[-1]
        pages.append(page)
        cursor = f"&before={body['next_before']}"
    first, second = pages
    assert not set(first) & set(second)
    # The second page is what follows the first one's last event: no gap, no repeat.
    everything = [e["id"] for e in await history_events(web, base)]
    after_first = everything[everything.index(first[-1]) + 1 :]
    assert after_first[:2] == second
    assert first == sorted(first, reverse=True) and first[-1] > second[0]
    # The last page says so.
    status, body, _ = await call(
        web, "GET", f"{base}/ui/api/events?limit=200&before={everything[-2]}", headers=VIEWER
    )
    assert [e["id"] for e in body["events"]] == [everything[-1]] and body["next_before"] is None


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("colour=red", "colour"),
        ("kind=foo", "kind"),
        ("since=yesterday", "since"),
        ("until=tomorrow", "until"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("limit=-1", "limit"),
        ("limit=two", "limit"),
        ("before=xyz", "before"),
        ("since=2000&until=1000", "since"),
        ("since=1000&until=1000", "since"),
        ("camera=", "camera"),
        ("tag=a&tag=b", "tag"),
        (f"camera={'c' * 201}", "camera"),
    ],
)
async def test_a_bad_filter_is_400_naming_the_parameter(
    ui_server: Any, web: aiohttp.ClientSession, query: str, parameter: str
) -> None:
    status, body, _ = await call(web, "GET", f"{ui_server.url}/ui/api/events?{query}", headers=VIEWER)
    check_error(status, body, 400, "BadFilter")
    assert body["message"].startswith(f"{parameter}:"), body


async def test_one_event_facets_and_snapshots(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    events = await wait_for_events(web, base)
    started = next(e for e in events if e["kind"] == "started")
    status, body, _ = await call(web, "GET", f"{base}/ui/api/events/{started['id']}", headers=VIEWER)
    assert status == 200 and body == started
    # The detail keeps the deciding frame's prediction: the defect that started the episode is in it.
    assert started["tag"] in {p["tag"] for p in started["predictions"] if p["box"] is not None}
    for unknown in ("0" * 26, "nonsense", started["id"].lower()[:-1]):
        status, body, _ = await call(web, "GET", f"{base}/ui/api/events/{unknown}", headers=VIEWER)
        check_error(status, body, 404, "NotFound")

    status, body, _ = await call(web, "GET", f"{base}/ui/api/facets", headers=VIEWER)
    assert status == 200 and body == {"cameras": [CAMERA], "tags": sorted(DEMO_LABELS)}

    snapshot = f"{base}/ui/api/snapshots/{started['id']}.jpg"
    assert started["snapshot"] == f"/snapshots/{started['id']}.jpg"
    async with web.get(snapshot, headers=VIEWER) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/jpeg"
        image = Image.open(io.BytesIO(await response.read()))
        assert image.format == "JPEG" and image.size == (ConveyorReader.WIDTH, ConveyorReader.HEIGHT)
    status, body, _ = await call(web, "GET", snapshot)
    check_error(status, body, 401, "Unauthorized")
    for unknown in ("0" * 26, "..%2Fhistory.sqlite3%00", "..%2F..%2Fevents"):
        status, body, _ = await call(web, "GET", f"{base}/ui/api/snapshots/{unknown}.jpg", headers=VIEWER)
        check_error(status, body, 404, "NotFound")


@contextlib.asynccontextmanager
async def serving(app: Application) -> AsyncIterator[str]:
    """`app` served from this test's loop until the block ends, then cleaned up (its parts closed)."""
    runner = AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        await wait_until_loaded(app, 30)
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_the_history_survives_a_restart_and_keeps_its_bound(
    demo_dir: Path, tmp_path: Path, web: aiohttp.ClientSession
) -> None:
    def settings(enabled: bool) -> Settings:
        return ui_settings(tmp_path, events={"history_max_events": 5}, cameras=[demo_camera(enabled=enabled)])

    jsonl = tmp_path / "events.jsonl"

    def published() -> list[str]:
        lines = jsonl.read_text().splitlines() if jsonl.exists() else []
        return [json.loads(line)["id"] for line in lines if line.strip()]

    app = create_app(settings(True), demo_dir)
    async with serving(app) as base:
        deadline = time.monotonic() + 20
        while len(published()) < 7:
            assert time.monotonic() < deadline, f"only {len(published())} events within 20 s"
            listed = await history_events(web, base)
            assert len(listed) <= 5, f"{len(listed)} events kept, history_max_events is 5 (slack 0)"
            await asyncio.sleep(0.2)
        # Stop the camera (no new events), then look at what is kept.
        patch = {"cameras": {CAMERA: {"enabled": False}}}
        status, body, _ = await call(web, "PATCH", f"{base}/ui/api/config", headers=ADMIN, body=patch)
        assert status == 200 and body["applied"], body
        kept = await history_events(web, base)
        history = app[DELIVERY].history
        assert history is not None and history.count == len(kept) == 5
        await eventually(lambda: set(published()) >= {e["id"] for e in kept}, 5, "the JSONL sink caught up")
        assert [e["id"] for e in kept] == sorted(published(), reverse=True)[:5], "the newest are kept"

    # A new application on the same files: the history is as it was left.
    async with serving(create_app(settings(False), demo_dir)) as base:
        assert await history_events(web, base) == kept
        status, body, _ = await call(web, "GET", f"{base}/ui/api/events/{kept[2]['id']}", headers=VIEWER)
        assert status == 200 and body == kept[2]
        status, body, _ = await call(web, "GET", f"{base}/ui/api/facets", headers=VIEWER)
        assert body["cameras"] == [CAMERA]


# --------------------------------------------------------------------------------------------------
# Live


async def wait_for_free_live_slots(server: Any) -> None:
    """Streams of earlier tests end when the server next writes to them (within a frame or two)."""
    await eventually(lambda: server.app[UI].live_clients == 0, 5, "earlier live streams closed")


async def test_the_live_stream(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    await wait_for_free_live_slots(ui_server)
    response = await open_live(web, base, VIEWER)
    try:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-store"
        stream = sse(response)
        first = await next_sse(stream)
        assert first.kind == "board", first
        board = first.data
        assert set(board) >= {"model", "cameras", "sinks", "config"}
        assert board["model"]["labels"] == list(DEMO_LABELS)
        assert CAMERA in board["cameras"] and board["cameras"][CAMERA]["fps"] == CAMERA_FPS
        assert "door" not in board["cameras"], "a disabled camera is not running"
        assert "pa55" not in json.dumps(board)

        inspections: list[Sse] = []
        seen: dict[str, list[Sse]] = {}
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            message = await next_sse(stream)
            seen.setdefault(message.kind, []).append(message)
            if message.kind == "inspection" and message.data["camera"] == CAMERA:
                inspections.append(message)
            window_done = inspections and message.at - inspections[0].at >= 3.0
            if window_done and "event" in seen and "backlog" in seen:
                break
        assert set(seen) <= {"board", "inspection", "backlog", "event"}, set(seen)
        assert inspections, "no inspection within 12 s"
        # At most ui.live_fps inspections a second however fast the camera samples (8 fps here).
        start = inspections[0].at
        in_window = [m for m in inspections if m.at - start < 3.0]
        assert 3 <= len(in_window) <= LIVE_FPS * 3 + 2, [round(m.at - start, 2) for m in in_window]
        sequences = [m.data["sequence"] for m in inspections]
        assert sequences == sorted(set(sequences)), "each frame once, in order"
        assert sequences[-1] - sequences[0] > len(sequences), "frames in between were coalesced away"
        latest = inspections[-1].data
        assert latest["size"] == {"width": ConveyorReader.WIDTH, "height": ConveyorReader.HEIGHT}
        assert [r["name"] for r in latest["rois"]] == ["full"]
        assert {r["tag"] for r in latest["rules"]} == set(DEMO_LABELS)

        assert "event" in seen, "no defect event within 12 s"
        event = seen["event"][0].data
        assert (
            event["camera"] == CAMERA
            and event["tag"] in DEMO_LABELS
            and event["kind"] in ("started", "ended")
        )
        assert EVENT_ID_PATTERN.fullmatch(event["id"])
        status, recorded, _ = await call(web, "GET", f"{base}/ui/api/events/{event['id']}", headers=VIEWER)
        assert status == 200, recorded
        # The history keeps the deciding frame's whole prediction besides what the sinks got.
        assert {k: v for k, v in recorded.items() if k != "predictions"} == event
        assert isinstance(recorded["predictions"], list)

        assert "backlog" in seen
        backlog = seen["backlog"][0].data
        assert set(backlog) == {"now", "sinks"} and abs(backlog["now"] - time.time()) < 5, backlog
        assert set(backlog["sinks"]) == {"jsonl"}, backlog
        jsonl = backlog["sinks"]["jsonl"]
        assert set(jsonl) == {"depth", "oldest_at"} and jsonl["depth"] >= 0, backlog
        assert (jsonl["oldest_at"] is None) == (jsonl["depth"] == 0), backlog
    finally:
        response.close()


async def test_a_camera_page_gets_only_its_camera_inspections(
    ui_server: Any, web: aiohttp.ClientSession
) -> None:
    """?camera=<id>: the live stream carries that camera's inspections only (a camera page needs no
    other's: ui_bench measured the per-page feed as the watchers' main cost)."""
    base = ui_server.url
    for camera, expect_any in (("no-such-camera", False), (CAMERA, True)):
        await wait_for_free_live_slots(ui_server)
        response = await web.get(
            f"{base}/ui/api/live?camera={camera}",
            headers=VIEWER,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=10),
        )
        try:
            assert response.status == 200
            stream = sse(response)
            assert (await next_sse(stream)).kind == "board"
            cameras: list[str] = []
            deadline = time.monotonic() + 2.5  # the demo camera inspects 8 times a second
            with contextlib.suppress(TimeoutError):
                while time.monotonic() < deadline:
                    message = await next_sse(stream, timeout=max(0.01, deadline - time.monotonic()))
                    if message.kind == "inspection":
                        cameras.append(message.data["camera"])
            assert set(cameras) == ({CAMERA} if expect_any else set()), cameras
        finally:
            response.close()


async def test_live_watchers_are_capped_and_a_closed_one_frees_its_slot(
    ui_server: Any, web: aiohttp.ClientSession
) -> None:
    base = ui_server.url
    await wait_for_free_live_slots(ui_server)
    viewer = await login(web, base, VIEWER_KEY)
    open_streams: list[aiohttp.ClientResponse] = []
    try:
        for headers in (VIEWER, viewer.headers):  # a key and a cookie session: two watchers
            response = await open_live(web, base, headers)
            open_streams.append(response)
            assert response.status == 200
            assert (await next_sse(sse(response))).kind == "board"
        third = await open_live(web, base, ADMIN)
        try:
            assert third.status == 503, "a third watcher was let in (ui.max_live_clients is 2)"
            body = check_error(third.status, await third.json(), 503, "TooManyWatchers")
            assert third.headers["Retry-After"] == "5"
            assert "max_live_clients" in body["message"]
        finally:
            third.close()

        open_streams.pop(0).close()
        deadline = time.monotonic() + 5
        while True:
            response = await open_live(web, base, ADMIN)
            if response.status == 200:
                open_streams.append(response)
                break
            response.close()
            assert time.monotonic() < deadline, "a closed watcher's slot was not freed within 5 s"
            await asyncio.sleep(0.1)
        assert (await next_sse(sse(response))).kind == "board"
    finally:
        for response in open_streams:
            response.close()


# --------------------------------------------------------------------------------------------------
# Frames and test predictions


async def test_the_last_frame_as_a_jpeg(ui_server: Any, web: aiohttp.ClientSession) -> None:
    base = ui_server.url
    url = f"{base}/ui/api/cameras/{CAMERA}/frame.jpg"

    async def frame(query: str) -> tuple[int, bytes, aiohttp.ClientResponse]:
        async with web.get(url + query, headers=VIEWER) as response:
            return response.status, await response.read(), response

    deadline = time.monotonic() + 10
    while (await frame("?width=320"))[0] != 200:  # until the camera's first inspection
        assert time.monotonic() < deadline, "no frame within 10 s"
        await asyncio.sleep(0.1)
    sequences = []
    for query, width in (
        ("?width=320", 320),
        ("?width=100", 320),
        ("?width=640", 640),
        ("?width=5000", 640),
        ("", 640),
    ):
        status, body, response = await frame(query)
        assert status == 200 and response.headers["Content-Type"] == "image/jpeg", query
        image = Image.open(io.BytesIO(body))
        assert image.format == "JPEG", query
        image.load()
        assert image.size == (width, width * ConveyorReader.HEIGHT // ConveyorReader.WIDTH), (
            query,
            image.size,
        )
        sequences.append(int(response.headers["X-Inspection-Sequence"]))
    assert all(s >= 1 for s in sequences) and sequences == sorted(sequences)

    for camera in ("nope", "door"):  # unknown; configured but disabled
        status, body, _ = await call(web, "GET", f"{base}/ui/api/cameras/{camera}/frame.jpg", headers=VIEWER)
        check_error(status, body, 404, "NotFound")
    for bad in ("abc", "", "1.5", "0x20"):
        status, body, _ = await call(web, "GET", f"{url}?width={bad}", headers=VIEWER)
        check_error(status, body, 400, "BadRequest")
    status, body, _ = await call(web, "GET", url)
    check_error(status, body, 401, "Unauthorized")


async def test_a_restarted_camera_never_shows_a_frame_of_its_old_stream(
    start_server: Any, demo_dir: Path, tmp_path: Path, web: aiohttp.ClientSession
) -> None:
    settings = ui_settings(tmp_path, cameras=[demo_camera(fps=2)])
    server = start_server(demo_dir, settings)
    url = f"{server.url}/ui/api/cameras/{CAMERA}/frame.jpg?width=320"

    def sequence_now() -> int | None:
        async def read() -> int | None:
            inspection = server.app[CAMERAS].inspections.get(CAMERA)
            return None if inspection is None else int(inspection.sequence)

        sequence: int | None = server.call(read())
        return sequence

    async def wait_for_sequence_at_least(wanted: int) -> None:
        deadline = time.monotonic() + 10
        while (sequence_now() or 0) < wanted:
            assert time.monotonic() < deadline, f"no inspection {wanted} within 10 s"
            await asyncio.sleep(0.005)

    async def wait_for_any_sequence() -> int:
        deadline = time.monotonic() + 10
        while (sequence := sequence_now()) is None:
            assert time.monotonic() < deadline, "the restarted camera inspected nothing within 10 s"
            await asyncio.sleep(0.005)
        return sequence

    async def frame() -> tuple[int, bytes]:
        async with web.get(url, headers=VIEWER) as response:
            assert response.status == 200
            return int(response.headers["X-Inspection-Sequence"]), await response.read()

    # Inspection numbers never repeat, across cameras and restarts: a cached JPEG is never served for
    # a frame of another stream under the same number.
    await wait_for_sequence_at_least(2)
    old_sequence, _ = await frame()
    # A new URL restarts the camera: a new stream, a new sampler; the old one's inspection is removed.
    patch = {"cameras": {CAMERA: {"url": "synthetic://conveyor?restart=1"}}}
    status, body, _ = await call(web, "PATCH", f"{server.url}/ui/api/config", headers=ADMIN, body=patch)
    assert status == 200 and body["applied"] is True, body
    first_new = await wait_for_any_sequence()
    assert first_new > old_sequence
    sequence, _ = await frame()
    assert sequence >= first_new > old_sequence


async def test_a_test_prediction_answers_like_post_image(
    ui_server: Any, web: aiohttp.ClientSession, http: Any
) -> None:
    base = ui_server.url
    image = http.belt_jpeg()
    async with web.post(f"{base}/ui/api/predict", headers=ADMIN, data=image) as response:
        answer = await http.body_of(response)  # the container's format, to the byte
    http.check_detection(answer)
    async with web.post(f"{base}/image", data=image) as response:
        direct = await http.body_of(response)

    def strip(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "created"}

    assert strip(answer) == strip(direct), "the same model, the same answer as POST /image"
    # A multipart upload (what the test page's form sends) is the same image.
    async with web.post(f"{base}/ui/api/predict", headers=VIEWER, data=http.multipart(image)) as response:
        assert strip(await http.body_of(response)) == strip(direct)

    for bad in (b"", b"hello, not an image", image[:200], b"\x00" * 1024):
        status, body, _ = await call(web, "POST", f"{base}/ui/api/predict", headers=VIEWER, data=bad)
        check_error(status, body, 400)
    status, body, _ = await call(
        web, "POST", f"{base}/ui/api/predict", headers=VIEWER, data=b"\xff" * (MAX_BODY + 1)
    )
    check_error(status, body, 413)
    status, body, _ = await call(web, "POST", f"{base}/ui/api/predict", headers=VIEWER, data=image)
    assert status == 200, "the server serves normally after the refusals"


# --------------------------------------------------------------------------------------------------
# Switches: loopback viewers, the history off, the page off, no keys


async def test_a_loopback_client_is_a_viewer_but_never_an_admin(
    open_server: Any, web: aiohttp.ClientSession
) -> None:
    base = open_server.url
    status, body, _ = await call(web, "GET", f"{base}/ui/api/session")
    assert status == 200, body
    assert body["role"] == "viewer" and body["how"] == "loopback" and body["can_edit"] is False
    assert body["csrf"] is None and body["history"] is False
    status, _, response = await call(web, "GET", f"{base}/ui/")
    assert status == 200 and response.content_type == "text/html", "no login page on the box itself"
    status, body, _ = await call(web, "GET", f"{base}/ui/api/config")
    assert status == 200 and body["can_edit"] is False
    for method, path in (("POST", "/ui/api/config/check"), ("PATCH", "/ui/api/config")):
        status, body, _ = await call(web, method, base + path, body={})
        check_error(status, body, 403, "Forbidden")
        status, body, _ = await call(web, method, base + path, headers=ADMIN, body={})
        assert status == 200, body  # the admin key still works on the box
    # A wrong key is refused, not quietly taken as a loopback viewer.
    status, body, _ = await call(web, "GET", f"{base}/ui/api/session", headers=bearer("wrong-key-000000000"))
    check_error(status, body, 401, "Unauthorized")
    # A page elsewhere must not drive the box's own browser.
    image = grey_jpeg()
    status, body, _ = await call(
        web,
        "POST",
        f"{base}/ui/api/predict",
        headers={"Origin": "https://evil.example"},
        data=image,
    )
    check_error(status, body, 403, "Forbidden")
    status, body, _ = await call(web, "POST", f"{base}/ui/api/predict", headers={"Origin": base}, data=image)
    assert status == 200, body


async def test_loopback_access_needs_a_loopback_host_name(
    open_server: Any, web: aiohttp.ClientSession
) -> None:
    base = open_server.url
    for host in (
        f"127.0.0.1:{open_server.port}",
        f"localhost:{open_server.port}",
        f"[::1]:{open_server.port}",
    ):
        status, body, _ = await call(web, "GET", f"{base}/ui/api/session", headers={"Host": host})
        assert status == 200 and body["how"] == "loopback", (host, body)
    rebound = f"attacker.example:{open_server.port}"
    status, body, _ = await call(web, "GET", f"{base}/ui/api/config", headers={"Host": rebound})
    check_error(status, body, 401, "Unauthorized")
    status, body, _ = await call(
        web,
        "POST",
        f"{base}/ui/api/predict",
        headers={"Host": rebound, "Origin": f"http://{rebound}"},
        data=b"not an image",
    )
    check_error(status, body, 401, "Unauthorized")


async def test_with_the_history_off_the_events_api_says_so(
    open_server: Any, web: aiohttp.ClientSession
) -> None:
    base = open_server.url
    for path in ("/ui/api/events", "/ui/api/facets", f"/ui/api/events/{'0' * 26}"):
        status, body, _ = await call(web, "GET", base + path, headers=VIEWER)
        check_error(status, body, 404, "HistoryOff")
        assert "history_path" in body["message"]
    status, body, _ = await call(web, "GET", f"{base}/ui/api/events?kind=foo", headers=VIEWER)
    check_error(status, body, 400, "BadFilter")  # the filter is still checked first


async def test_with_the_page_off_there_is_no_ui(
    start_server: Any, demo_dir: Path, tmp_path: Path, web: aiohttp.ClientSession
) -> None:
    server = start_server(demo_dir, ui_settings(tmp_path, ui={"enabled": False}, cameras=[]))
    for path in ("/ui/", "/ui", "/ui/login", "/ui/static/app.js", "/ui/api/session", "/ui/api/events"):
        status, body, _ = await call(web, "GET", server.url + path, headers=ADMIN)
        check_error(status, body, 404)
    status, body, _ = await call(web, "POST", f"{server.url}/ui/api/login", body={"key": ADMIN_KEY})
    assert status in (404, 405), body
    status, _, _ = await call(web, "GET", f"{server.url}/health/live")
    assert status == 200


async def test_without_keys_nobody_can_log_in(
    start_server: Any, demo_dir: Path, tmp_path: Path, web: aiohttp.ClientSession
) -> None:
    server = start_server(demo_dir, ui_settings(tmp_path, cameras=[], keys=False))
    status, body, _ = await call(web, "GET", f"{server.url}/ui/api/login")  # the login page asks first
    assert status == 200 and body == {"keys": False}, body
    status, body, response = await call(web, "POST", f"{server.url}/ui/api/login", body={"key": ADMIN_KEY})
    check_error(status, body, 403, "NoKeys")
    assert "Set-Cookie" not in response.headers
    status, body, _ = await call(web, "GET", f"{server.url}/ui/api/session", headers=ADMIN)
    check_error(status, body, 401, "Unauthorized")
    status, body, _ = await call(web, "GET", f"{server.url}/ui/api/session")
    check_error(status, body, 401, "Unauthorized")
