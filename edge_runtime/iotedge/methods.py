"""Direct methods: small, documented, answering JSON with an HTTP-like status.

getStatus                     -> 200 {version, model, cameras, sinks, config}
reloadModel                   -> 200 {model} | 500 {error, model} (loads the configured model again:
                                 after a failed model update, the one still serving)
captureSnapshot {"camera": id} -> 200 {id, path, captured_at} | 404 unknown camera | 409 no frame
inspect {"station": id, "partId": "4711", "plcTime"?, "metadata"?}
                              -> 200 the part's verdict (pass, fail or no_verdict) | 400 no part id
                                 | 404 unknown station | 503 stopping
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from edge_runtime.control import Controller
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.events.delivery import Delivery
from edge_runtime.events.ids import new_event_id
from edge_runtime.redact import scrub
from edge_runtime.sources.cameras import Cameras
from edge_runtime.stations.service import Stations
from edge_runtime.stations.triggers import BadTrigger, NotAccepting, UnknownStation, parse_trigger

MethodResult = tuple[int, dict[str, Any]]


class DirectMethods:
    def __init__(
        self, controller: Controller, cameras: Cameras, delivery: Delivery, stations: Stations | None = None
    ) -> None:
        self._stations = stations
        self._controller = controller
        self._cameras = cameras
        self._delivery = delivery
        self._table: dict[str, Callable[[Any], Awaitable[MethodResult]]] = {
            "getStatus": self.get_status,
            "reloadModel": self.reload_model,
            "captureSnapshot": self.capture_snapshot,
            "inspect": self.inspect,
        }

    async def call(self, name: str, payload: Any) -> MethodResult:
        method = self._table.get(name)
        if method is None:
            return 404, {"error": f"unknown method {name!r}", "methods": sorted(self._table)}
        return await method(payload)

    async def get_status(self, payload: Any) -> MethodResult:
        return 200, self._controller.status()

    async def inspect(self, payload: Any) -> MethodResult:
        received_at = time.time()
        station = payload.get("station") if isinstance(payload, dict) else None
        if self._stations is None or not isinstance(station, str):
            return 400, {"error": 'payload must be {"station": "<station id>", "partId": "<part id>"}'}
        try:
            trigger = parse_trigger(station, payload, "method", received_at)
            verdict = await self._stations.inspect(trigger)
        except BadTrigger as exc:
            return 400, {"error": str(exc)}
        except UnknownStation as exc:
            return 404, {"error": str(exc), "stations": exc.known}
        except NotAccepting as exc:
            return 503, {"error": str(exc)}
        return 200, verdict.to_dict()

    async def reload_model(self, payload: Any) -> MethodResult:
        try:
            await self._controller.reload_model()
        except EdgeRuntimeError as exc:
            return 500, {"error": scrub(str(exc)), "model": self._controller.status()["model"]}
        return 200, {"model": self._controller.status()["model"]}

    async def capture_snapshot(self, payload: Any) -> MethodResult:
        camera = payload.get("camera") if isinstance(payload, dict) else None
        if not isinstance(camera, str):
            return 400, {"error": 'payload must be {"camera": "<camera id>"}'}
        try:
            frame = self._cameras.latest_frame(camera)
        except KeyError:
            return 404, {"error": f"unknown camera {camera!r}", "cameras": sorted(self._cameras.samplers)}
        store = self._delivery.snapshots
        if store is None:
            return 409, {"error": "snapshots are off (events.snapshot_dir is null)"}
        if frame is None:
            return 409, {
                "error": f"camera {camera!r} has no frame yet",
                "state": self._cameras.status(camera).state.value,
            }
        snapshot_id = new_event_id()
        await asyncio.to_thread(lambda: store.save(snapshot_id, frame.image))  # converted off the loop
        return 200, {
            "id": snapshot_id,
            "path": store.url_for(snapshot_id),
            "captured_at": datetime.fromtimestamp(frame.captured_at, UTC).isoformat(timespec="milliseconds"),
        }
