"""Who may see the operator page: a viewer key (watch) and the admin key (also edit), a login that sets
an HttpOnly cookie, CSRF tokens on state-changing calls, and optionally loopback clients without a key.

    Authorization: Bearer <key>       scripts: no cookie, so no CSRF token needed
    cookie edge_ui=<session token>    browsers, after POST /ui/api/login {"key": ...}; unsafe methods
                                      also need X-CSRF-Token (from GET /ui/api/session) and, when the
                                      browser sends one, an Origin matching the Host
    loopback peer (open_on_loopback)  a viewer, never an admin

Sessions live in memory (a restart logs everyone out); at most MAX_SESSIONS, the oldest go first.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import urlsplit

from aiohttp import web

from edge_runtime.api.errors import ApiError
from edge_runtime.settings import Settings

COOKIE = "edge_ui"
CSRF_HEADER = "X-CSRF-Token"
MAX_SESSIONS = 256
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(IntEnum):
    VIEWER = 1
    ADMIN = 2


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    role: Role
    csrf: str
    expires_at: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class Access:
    """How a request is let in: `session` for a cookie login, else None (a key or loopback)."""

    role: Role
    session: Session | None
    how: str  # "session" | "key" | "loopback"


class Sessions:
    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._by_token: OrderedDict[str, Session] = OrderedDict()

    def create(self, role: Role) -> Session:
        session = Session(
            secrets.token_urlsafe(32), role, secrets.token_urlsafe(32), time.monotonic() + self._ttl
        )
        if len(self._by_token) >= MAX_SESSIONS:
            # The oldest of the same role goes first: viewers logging in again and again never push
            # an admin out.
            same = next((t for t, s in self._by_token.items() if s.role == role), None)
            self._by_token.pop(same if same is not None else next(iter(self._by_token)))
        self._by_token[session.token] = session
        return session

    def get(self, token: str) -> Session | None:
        session = self._by_token.get(token)
        if session is not None and session.expires_at <= time.monotonic():
            del self._by_token[token]
            return None
        return session

    def drop(self, token: str) -> None:
        self._by_token.pop(token, None)


def role_for_key(settings: Settings, given: str) -> Role | None:
    """The role a key gives (the admin key first), compared in constant time; None for no match."""
    raw = given.encode("utf-8", "surrogatepass")
    admin, viewer = settings.server.admin_key, settings.ui.viewer_key
    if admin is not None and hmac.compare_digest(raw, admin.get_secret_value().encode()):
        return Role.ADMIN
    if viewer is not None and hmac.compare_digest(raw, viewer.get_secret_value().encode()):
        return Role.VIEWER
    return None


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(request: web.Request) -> bool:
    """A loopback peer that also named a loopback host: a page from elsewhere whose name re-resolves to
    127.0.0.1 (DNS rebinding) names its own host, and is not let in without a key."""
    peer = request.remote  # the socket's peer: X-Forwarded-For is never trusted
    try:
        peer_is_loopback = peer is not None and ipaddress.ip_address(peer.split("%")[0]).is_loopback
        host = urlsplit("//" + request.host).hostname
    except ValueError:
        return False
    return peer_is_loopback and host in LOOPBACK_HOSTS


def identify(request: web.Request, settings: Settings, sessions: Sessions) -> Access | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        role = role_for_key(settings, header.removeprefix("Bearer ").strip())
        if role is None:
            raise ApiError(401, "Unauthorized", "wrong key in 'Authorization: Bearer <key>'")
        return Access(role, None, "key")
    token = request.cookies.get(COOKIE)
    session = sessions.get(token) if token else None
    if session is not None:
        return Access(session.role, session, "session")
    if settings.ui.open_on_loopback and is_loopback(request):
        return Access(Role.VIEWER, None, "loopback")
    return None


def check_csrf(request: web.Request, access: Access) -> None:
    """Unsafe methods on a cookie session need the session's CSRF token and a same-origin Origin."""
    if request.method in SAFE_METHODS or access.session is None:
        if request.method not in SAFE_METHODS and access.how == "loopback":
            _same_origin(request)  # a page elsewhere must not drive a loopback client's browser
        return
    _same_origin(request)
    given = request.headers.get(CSRF_HEADER, "")
    if not given or not hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), access.session.csrf.encode()
    ):
        raise ApiError(403, "Forbidden", f"missing or wrong {CSRF_HEADER} header (reload the page)")


def _same_origin(request: web.Request) -> None:
    origin = request.headers.get("Origin")
    if origin is None:
        return  # not a browser's cross-site request (those always carry Origin on POST/PATCH)
    if urlsplit(origin).netloc.lower() != request.host.lower():
        raise ApiError(403, "Forbidden", "cross-origin request refused")


def require(request: web.Request, settings: Settings, sessions: Sessions, role: Role) -> Access:
    """The caller's access for `role`, or an ApiError: 401 not logged in, 403 not allowed."""
    access = identify(request, settings, sessions)
    if access is None:
        raise ApiError(401, "Unauthorized", "log in at /ui/login (or send 'Authorization: Bearer <key>')")
    if access.role < role:
        raise ApiError(403, "Forbidden", "this needs the admin key")
    check_csrf(request, access)
    return access
