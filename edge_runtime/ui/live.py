"""GET /ui/api/live: server-sent events for the operator page, pushed from the parts, never polled.

    event: board        the status board (model, cameras, sinks, config) after every change
    event: inspection   a camera's last inspection (predictions per ROI, rule state): at most
                        ui.live_fps per camera (?camera=<id>: that camera's only); the page then
                        fetches that frame's JPEG
    event: backlog      each sink's outbox depth and oldest undelivered age (measured every second)
    event: event        each defect event and verdict as it is published (not durable: see /ui/api/events)
    event: stations     each station's counters and last verdict (at most once a second)

Every source coalesces (a slow page sees the newest state, never a backlog) except events, which a page
more than Delivery.WATCH_QUEUE behind loses the oldest of. A page that stops reading is dropped after
WRITE_TIMEOUT_S; at most ui.max_live_clients at once (503 above), so watchers cannot starve the box.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

from aiohttp import web

from edge_runtime.api.errors import ApiError
from edge_runtime.app_keys import BOARD, CAMERAS, CONTROLLER, DELIVERY, INFERENCE, STATIONS
from edge_runtime.events.outbox import Backlog
from edge_runtime.redact import scrub_tree
from edge_runtime.status import Board
from edge_runtime.ui.state import UI

WRITE_TIMEOUT_S = 10.0
HEARTBEAT_S = 15.0
BACKLOG_PERIOD_S = 1.0


def board_json(request: web.Request, board: Board) -> dict[str, Any]:
    controller = request.app[CONTROLLER]
    model: dict[str, Any] = controller.model_status()
    predictor = request.app[INFERENCE].serving
    if predictor is not None:
        model |= {"task": predictor.spec.task.value, "labels": list(predictor.spec.labels)}
    configured = {c.id: c for c in controller.settings.cameras}
    cameras = {}
    for cid, status in board.cameras().items():
        settings = configured.get(cid)
        cameras[cid] = status.to_dict() | {
            "last_frame_at": status.last_frame_at,  # the page ages it between pushes
            "fps": None if settings is None else settings.fps,
            "rois": [] if settings is None else [r.name for r in settings.rois],
        }
    return cast(
        dict[str, Any],
        scrub_tree(
            {
                "model": model,
                "cameras": cameras,
                "sinks": {name: s.to_dict() for name, s in board.sinks().items()},
                "config": board.config().to_dict(),
                "now": time.time(),  # the page corrects its clock by this
            }
        ),
    )


def backlog_json(backlogs: dict[str, Backlog]) -> dict[str, Any]:
    """Sent when a depth or the oldest row changes: the page ages `oldest_at` itself in between."""
    return {
        "now": time.time(),
        "sinks": {
            name: {
                "depth": b.depth,
                "oldest_at": b.oldest_created,
            }
            for name, b in backlogs.items()
        },
    }


class Closing(Exception):
    """The server shuts down: every live page ends (the browser reconnects to the next one)."""


class LiveStream:
    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self._request = request
        self._response = response
        self._lock = asyncio.Lock()

    async def send(self, kind: str, data: object) -> None:
        text = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"
        async with self._lock, asyncio.timeout(WRITE_TIMEOUT_S):
            await self._response.write(text.encode())

    async def board(self) -> None:
        async for board in self._request.app[BOARD].changes():
            await self.send("board", board_json(self._request, board))

    async def inspections(self, fps: float, only: str | None) -> None:
        """`only`: one camera's (a camera page needs no other camera's inspections)."""
        sent: dict[str, int] = {}
        async for latest in self._request.app[CAMERAS].inspections.changes():
            for camera, inspection in latest.items():
                if only not in (None, camera):
                    continue
                if sent.get(camera) != inspection.sequence:
                    sent[camera] = inspection.sequence
                    await self.send("inspection", inspection.to_dict())
            await asyncio.sleep(1.0 / fps)  # the cap: later changes coalesce meanwhile

    async def backlogs(self) -> None:
        async for backlogs in self._request.app[DELIVERY].backlogs.changes():
            await self.send("backlog", backlog_json(backlogs))
            await asyncio.sleep(BACKLOG_PERIOD_S)

    async def stations(self) -> None:
        stations = self._request.app.get(STATIONS)
        if stations is None:
            return
        shown = False
        async for statuses in stations.statuses.changes():
            if statuses or shown:  # a runtime without stations sends nothing (until it has one)
                await self.send("stations", {k: v.to_dict() for k, v in sorted(statuses.items())})
                shown = bool(statuses)
            await asyncio.sleep(BACKLOG_PERIOD_S)  # a busy line: counters coalesce meanwhile

    async def events(self) -> None:
        async with self._request.app[DELIVERY].watch() as feed:
            async for event in feed:
                await self.send("event", event.to_dict())

    async def until(self, closing: asyncio.Event) -> None:
        await closing.wait()
        raise Closing

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            async with self._lock, asyncio.timeout(WRITE_TIMEOUT_S):
                await self._response.write(b": ping\n\n")


async def live(request: web.Request) -> web.StreamResponse:
    ui = request.app[UI]
    ui.require_viewer(request)
    if ui.live_clients >= ui.settings.max_live_clients:
        raise ApiError(
            503,
            "TooManyWatchers",
            f"{ui.settings.max_live_clients} live pages are open (ui.max_live_clients); close one",
            {"Retry-After": "5"},
        )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    ui.live_clients += 1
    try:
        await response.prepare(request)
        stream = LiveStream(request, response)
        async with asyncio.TaskGroup() as group:
            group.create_task(stream.board())
            group.create_task(stream.inspections(ui.settings.live_fps, request.query.get("camera")))
            group.create_task(stream.backlogs())
            group.create_task(stream.events())
            group.create_task(stream.stations())
            group.create_task(stream.heartbeat())
            group.create_task(stream.until(ui.closing))
    except* (ConnectionError, TimeoutError, Closing):
        pass  # the page went away or stopped reading, or the server shuts down
    finally:
        ui.live_clients -= 1
    return response
