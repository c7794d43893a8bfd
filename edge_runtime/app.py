"""Composition root: create_app(settings) -> aiohttp Application with every long-lived part wired in."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from edge_runtime import metrics
from edge_runtime.api.admission import Admission
from edge_runtime.api.routes import register_routes
from edge_runtime.api.urlfetch import UrlPolicy
from edge_runtime.backends.providers import parse_device
from edge_runtime.control import Controller
from edge_runtime.engine import Predictor, PredictorOptions
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits
from edge_runtime.events.outbox import Outbox
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.model.imaging import ImageLimits
from edge_runtime.model.loader import LoadOptions
from edge_runtime.model_slot import ModelSlot
from edge_runtime.pipeline import Pipeline
from edge_runtime.settings import Settings
from edge_runtime.sinks.build import build_sinks
from edge_runtime.state import (
    ADMISSION,
    CAPACITY,
    CONTROLLER,
    EXECUTOR,
    MODEL,
    PIPELINE,
    SETTINGS,
    URL_POLICY,
    Capacity,
)

log = logging.getLogger(__name__)


def capacity_for(settings: Settings) -> Capacity:
    workers = settings.server.inference_workers or os.cpu_count() or 1
    return Capacity(workers, settings.server.max_inflight or 4 * workers)


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
        load=LoadOptions(resize=m.resize, verify_sha1=m.verify_sha1),
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
    capacity = capacity_for(settings)
    app[SETTINGS] = settings
    app[MODEL] = ModelSlot()
    app[CAPACITY] = capacity
    app[URL_POLICY] = UrlPolicy.from_allow_list(settings.url_fetch.allow)
    app[ADMISSION] = Admission(
        capacity.max_inflight, settings.server.max_body_buffer_bytes, settings.server.admission_wait_s
    )
    app[PIPELINE] = Pipeline()
    # None (no path, no url) is allowed: readiness says so until a model arrives (module twin, admin API).
    path = model_path or settings.model.path

    async def executor_ctx(app: web.Application) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(capacity.workers, thread_name_prefix="inference")
        app[EXECUTOR] = executor
        yield
        executor.shutdown(wait=True, cancel_futures=True)

    async def control_ctx(app: web.Application) -> AsyncIterator[None]:
        # The model loads in the background: /health/live answers at once, /health/ready once warm.
        controller = Controller(
            settings,
            app[PIPELINE],
            app[MODEL],
            app[EXECUTOR],
            lambda s: predictor_options(s, capacity.workers),
            start_dispatcher,
            loader,
            path,
        )
        app[CONTROLLER] = controller
        metrics.MODEL_READY.set(0)
        controller.start_model_load()
        yield
        await controller.close()
        metrics.MODEL_READY.set(0)

    app.cleanup_ctx.append(executor_ctx)
    app.cleanup_ctx.append(control_ctx)
    app.cleanup_ctx.append(hub_ctx)
    app.cleanup_ctx.append(events_ctx)
    app.cleanup_ctx.append(cameras_ctx)
    app.cleanup_ctx.append(twin_ctx)
    register_routes(app)
    return app


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """The IoT Hub / edgeHub module client, when enabled; connects in the background."""
    settings = app[SETTINGS]
    if not settings.hub_enabled:
        yield
        return
    from edge_runtime.iotedge.hub import HubClient  # the SDK is imported only when used

    hub = HubClient.from_settings(settings.hub)
    app[PIPELINE].hub = hub
    await hub.start()
    yield
    await hub.close()


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """Snapshot store, outbox, sinks and the dispatcher. On shutdown waiting events get a moment to go
    out; whatever is left stays in the outbox and goes out after the next start."""
    settings = app[SETTINGS]
    pipeline = app[PIPELINE]
    log.info("%s", where_events_go(settings))
    pipeline.outbox = Outbox(settings.events.outbox_path)
    await pipeline.outbox.open()
    try:
        pipeline.dispatcher = await start_dispatcher(settings, pipeline)
    except BaseException:
        await pipeline.outbox.close()
        raise
    yield
    await pipeline.dispatcher.close()
    await pipeline.outbox.close()


def where_events_go(settings: Settings) -> str:
    """For the startup log: a newcomer's first question is where the events and snapshots appear."""
    events = settings.events
    sinks = [f"JSONL {events.jsonl_path.resolve()}"] if events.jsonl_path else []
    sinks += [name for name, on in (("MQTT", settings.sinks.mqtt), ("IoT Hub", settings.sinks.iothub)) if on]
    snapshots = (
        f"{events.snapshot_dir.resolve()} (served at /snapshots/<event id>.jpg)"
        if events.snapshot_dir
        else "nowhere (events.snapshot_dir is off)"
    )
    return (
        f"events go to {', '.join(sinks) or 'no sink'}; snapshots to {snapshots}; "
        f"undelivered events wait in {events.outbox_path.resolve()}"
    )


async def start_dispatcher(settings: Settings, pipeline: Pipeline) -> Dispatcher:
    """Snapshot store and sinks for `settings`, over the pipeline's open outbox."""
    events = settings.events
    assert pipeline.outbox is not None
    pipeline.snapshots = (
        None
        if events.snapshot_dir is None
        else SnapshotStore(
            events.snapshot_dir,
            events.snapshot_max_count,
            events.snapshot_max_bytes,
            settings.server.public_url,
        )
    )
    sinks = build_sinks(settings, pipeline.camera_statuses, pipeline.snapshots, pipeline.hub)
    dispatcher = Dispatcher(
        pipeline.outbox, sinks, OutboxLimits(events.outbox_max_events, events.outbox_max_age_s)
    )
    try:
        await dispatcher.start()
    except BaseException:
        await dispatcher.close(drain_timeout=0)
        raise
    return dispatcher


async def cameras_ctx(app: web.Application) -> AsyncIterator[None]:
    """One capture thread and one sampling task per enabled camera; stopped first on shutdown."""
    pipeline = app[PIPELINE]
    for camera in app[SETTINGS].cameras:
        if camera.enabled:
            if not camera.rules:
                log.warning("camera %s has no rules: it is sampled but produces no events", camera.id)
            pipeline.start_camera(camera, app[MODEL], app[EXECUTOR])
    yield
    await pipeline.stop_cameras()


async def twin_ctx(app: web.Application) -> AsyncIterator[None]:
    """Module twin and direct methods, once the cameras and sinks exist."""
    pipeline = app[PIPELINE]
    if pipeline.hub is None or not app[SETTINGS].hub.twin:
        yield
        return
    from edge_runtime.iotedge.methods import Methods
    from edge_runtime.iotedge.twin import TwinAgent

    agent = TwinAgent(pipeline.hub, app[CONTROLLER], Methods(app[CONTROLLER], pipeline))
    await agent.start()
    yield
    await agent.close()


async def wait_until_loaded(app: web.Application, timeout: float = 60.0) -> None:
    """For callers that need the model before going on (tests, benchmarks)."""
    slot = app[MODEL]
    deadline = asyncio.get_running_loop().time() + timeout
    while slot.predictor is None and slot.error is None:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("model did not load in time")
        await asyncio.sleep(0.01)
    if slot.error:
        raise EdgeRuntimeError(slot.error)
