"""Composition root: create_app(settings) -> aiohttp Application with every long-lived part wired in.

    StatusBoard                      the feed every part pushes its status to (status.py)
    ModelService  -> InferenceService   the model in service; the one way into inference
    HubClient (optional) -> Delivery    outbox, snapshots, sinks
    Cameras (inference, delivery)       captures and samplers
    Stations (inference, cameras, delivery)   part triggers -> one verdict per part
    OpcUaServer (stations, board), MqttTriggers (stations): optional trigger paths
    Controller (models, delivery, cameras): desired document -> checks -> each changed slice
    TwinAgent (hub, controller, board)  module twin and direct methods

Parts are built once, entered in that order (one exit stack) and left in reverse, each bounded;
nothing calls back into this module at run time. ARCHITECTURE.md draws the flows and the threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge_runtime.api.body import BodyBudget
from edge_runtime.api.routes import register_routes
from edge_runtime.api.stations import register_station_routes
from edge_runtime.api.urlfetch import UrlPolicy
from edge_runtime.app_keys import (
    BOARD,
    BODIES,
    CAMERAS,
    CONTROLLER,
    DELIVERY,
    INFERENCE,
    OPCUA,
    SETTINGS,
    STATIONS,
    URL_POLICY,
)
from edge_runtime.backends.providers import parse_device
from edge_runtime.control import Controller
from edge_runtime.engine import Predictor, PredictorOptions
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.events.delivery import Delivery, DeliveryConfig
from edge_runtime.inference.models import ModelService
from edge_runtime.inference.service import Capacity, InferenceService
from edge_runtime.model.imaging import ImageLimits
from edge_runtime.model.loader import LoadOptions
from edge_runtime.opcua.config import OpcUaConfig
from edge_runtime.opcua.part import OpcUaPart
from edge_runtime.settings import Settings
from edge_runtime.sources.cameras import Cameras
from edge_runtime.stations.service import Stations, StationsConfig
from edge_runtime.status import StatusBoard, show_connection
from edge_runtime.ui.routes import register_ui_routes

if TYPE_CHECKING:
    from edge_runtime.iotedge.hub import HubClient

log = logging.getLogger(__name__)


def image_limits(settings: Settings) -> ImageLimits:
    server = settings.server
    return ImageLimits(
        max_pixels=server.max_image_pixels,
        max_resized_pixels=server.max_resized_pixels,
        max_jpeg_scans=server.max_jpeg_scans,
        formats=server.image_formats,
    )


def predictor_options(settings: Settings, workers: int) -> PredictorOptions:
    m = settings.model
    # Several workers share the cores: one backend thread each avoids oversubscription.
    threads = m.threads or (1 if workers > 1 else 0)
    return PredictorOptions(
        device=parse_device(m.device, m.allow_fallback),
        threads=threads,
        load=LoadOptions(
            resize=m.resize,
            verify_sha1=m.verify_sha1,
            layout=m.layout,
            score_threshold=m.score_threshold,
            iou_threshold=m.iou_threshold,
            max_detections=m.max_detections,
            fidelity=m.fidelity,
        ),
        limits=image_limits(settings),
    )


def create_app(
    settings: Settings,
    model_path: Path | None = None,
    loader: Callable[[Path, PredictorOptions], Predictor] = Predictor.load,
) -> web.Application:
    """`model_path` defaults to settings.model.path (the CLI supplies the demo model when neither is set)."""
    # Bodies are decompressed by api/body.py, bounded and with JSON errors; aiohttp's own decoder
    # answers an unknown coding with plain text before any route runs.
    app = web.Application(
        client_max_size=settings.server.max_body_bytes, handler_args={"auto_decompress": False}
    )
    capacity = Capacity.of(settings.server)
    board = StatusBoard()
    # None (no path, no url) is allowed: readiness says so until a model arrives (module twin, admin API).
    path = model_path or settings.model.path
    models = ModelService(board, lambda s: predictor_options(s, capacity.workers), loader, path, settings)
    app[SETTINGS] = settings
    app[BOARD] = board
    app[INFERENCE] = InferenceService(models, capacity)
    app[BODIES] = BodyBudget(settings.server.max_body_buffer_bytes)
    app[URL_POLICY] = UrlPolicy.from_allow_list(settings.url_fetch.allow)
    app.cleanup_ctx.append(parts_ctx)
    app.on_shutdown.append(stop_stations)
    register_routes(app)
    register_station_routes(app)
    register_ui_routes(app)
    return app


async def parts_ctx(app: web.Application) -> AsyncIterator[None]:
    """Enter every part in dependency order; on shutdown leave them in reverse (cameras first, so no
    event is published into closed sinks; the executor last)."""
    settings, board, inference = app[SETTINGS], app[BOARD], app[INFERENCE]
    async with AsyncExitStack() as parts:
        await parts.enter_async_context(inference)
        await parts.enter_async_context(inference.models)
        hub = await parts.enter_async_context(HubPart(settings, board))
        delivery = await parts.enter_async_context(Delivery(DeliveryConfig.of(settings), board, hub))
        cameras = await parts.enter_async_context(Cameras(settings.cameras, inference, delivery, board))
        # Entered after the cameras and the delivery, so left before them: pending parts get their
        # no_verdict/shutdown published while the outbox is still open.
        stations = await parts.enter_async_context(
            Stations(StationsConfig.of(settings), inference, cameras, delivery, cameras.inspections)
        )
        opcua = await parts.enter_async_context(OpcUaPart(OpcUaConfig.of(settings), stations, board))
        more: dict[str, Any] = {"stations": stations, "opcua": opcua}
        if settings.triggers.mqtt and settings.sinks.mqtt is not None:
            from edge_runtime.stations.mqtt_trigger import MqttTriggers

            await parts.enter_async_context(MqttTriggers(settings.sinks.mqtt, stations.submit))
        controller = Controller(settings, board, inference.models, delivery, cameras, more)
        app[DELIVERY], app[CAMERAS], app[CONTROLLER], app[STATIONS] = delivery, cameras, controller, stations
        app[OPCUA] = opcua
        # The model loads in the background: /health/live answers at once, /health/ready once warm.
        controller.start_model_load()
        if hub is not None and settings.hub.twin:
            from edge_runtime.iotedge.methods import DirectMethods
            from edge_runtime.iotedge.twin import TwinAgent

            methods = DirectMethods(controller, cameras, delivery, stations)
            await parts.enter_async_context(TwinAgent(hub, controller, methods, board))
        yield


async def stop_stations(app: web.Application) -> None:
    """Shutdown begins (before aiohttp waits for the handlers): pending parts are answered with
    no_verdict/shutdown while their callers are still connected and the outbox is open."""
    stations = app.get(STATIONS)
    if stations is not None:
        await stations.stop()


class HubPart:
    """The IoT Hub / edgeHub module client when enabled (it connects in the background), else None;
    its connection is shown on the board as sink `hub`."""

    def __init__(self, settings: Settings, board: StatusBoard) -> None:
        self._settings = settings
        self._board = board
        self._client: HubClient | None = None
        self._unwatch: Callable[[], None] | None = None

    async def __aenter__(self) -> HubClient | None:
        if not self._settings.hub_enabled:
            return None
        from edge_runtime.iotedge.hub import HubClient  # the SDK is imported only when used

        hub = self._client = HubClient.from_settings(self._settings.hub)
        self._unwatch = show_connection(self._board, "hub", hub)
        await hub.start()
        return hub

    async def __aexit__(self, *exc: object) -> None:
        if self._unwatch is not None:
            self._unwatch()
        if self._client is not None:
            await self._client.close()


async def wait_until_loaded(app: web.Application, timeout: float = 60.0) -> None:
    """For callers that need the model before going on (tests, benchmarks)."""
    models = app[INFERENCE].models
    try:
        async with asyncio.timeout(timeout):
            async for _ in app[BOARD].changes():  # woken by the model service's pushes
                if models.predictor is not None:
                    return
                if models.error is not None:
                    raise EdgeRuntimeError(models.error)
    except TimeoutError:
        raise TimeoutError("model did not load in time") from None
