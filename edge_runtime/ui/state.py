"""The operator page's own state: its settings, login sessions, frame JPEGs and live-page count."""

from __future__ import annotations

import asyncio

from aiohttp import web

from edge_runtime.settings import Settings, UiSettings
from edge_runtime.ui.access import Access, Role, Sessions, require
from edge_runtime.ui.frames import FrameJpegs, Offload


class UiState:
    def __init__(self, settings: Settings, offload: Offload) -> None:
        self.app_settings = settings  # keys as started (the admin and viewer keys cannot change live)
        self.settings: UiSettings = settings.ui
        self.sessions = Sessions(settings.ui.session_ttl_s)
        self.jpegs = FrameJpegs(offload, settings.ui.live_fps)
        self.live_clients = 0
        self.closing = asyncio.Event()  # set on shutdown: live pages end instead of holding it up

    async def on_shutdown(self, _: web.Application) -> None:
        self.closing.set()

    def require_viewer(self, request: web.Request) -> Access:
        return require(request, self.app_settings, self.sessions, Role.VIEWER)

    def require_admin(self, request: web.Request) -> Access:
        return require(request, self.app_settings, self.sessions, Role.ADMIN)


UI = web.AppKey("ui", UiState)
