"""Cameras -> samplers -> dispatcher, as one object whose parts can be replaced while it runs.

The composition root fills it at start; the controller (module twin, admin API) adds, changes and
removes cameras and swaps the dispatcher when sinks change. Samplers publish through the pipeline,
so they always reach the dispatcher in service.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from edge_runtime.domain import Event
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.model_slot import ModelSlot
from edge_runtime.redact import redact_url
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import Capture
from edge_runtime.sources.sampler import CameraSampler

if TYPE_CHECKING:
    from edge_runtime.events.dispatcher import Dispatcher
    from edge_runtime.events.outbox import Outbox
    from edge_runtime.iotedge.hub import HubClient

log = logging.getLogger(__name__)

# What a change to these camera fields needs: a new stream; anything else is applied in place.
CAPTURE_FIELDS = ("url", "open_timeout_s", "stall_timeout_s", "backoff_initial_s", "backoff_max_s")


class Pipeline:
    def __init__(self) -> None:
        self.samplers: dict[str, CameraSampler] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.snapshots: SnapshotStore | None = None
        self.dispatcher: Dispatcher | None = None
        self.outbox: Outbox | None = None
        self.hub: HubClient | None = None

    # ---- events ----
    async def publish(self, event: Event) -> None:
        if self.dispatcher is None:
            raise RuntimeError("no dispatcher: events_ctx has not run")
        await self.dispatcher.publish(event)

    # ---- cameras ----
    def start_camera(self, camera: CameraSettings, model: ModelSlot, executor: Executor) -> None:
        capture = Capture(camera)
        capture.start()
        sampler = CameraSampler(capture, model, executor, self)
        self.samplers[camera.id] = sampler
        self._tasks[camera.id] = asyncio.create_task(sampler.run(), name=f"sampler-{camera.id}")
        log.info("camera %s: %s at %.1f fps", camera.id, redact_url(camera.url), camera.fps)

    async def stop_camera(self, camera_id: str) -> bool:
        """Stop sampling, then the capture thread; False if the thread did not stop in time."""
        sampler = self.samplers.pop(camera_id)
        task = self._tasks.pop(camera_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        stopped = await asyncio.to_thread(sampler.capture.stop)
        log.info("camera %s: stopped", camera_id)
        return stopped

    async def update_camera(self, camera: CameraSettings, model: ModelSlot, executor: Executor) -> None:
        current = self.samplers[camera.id].capture.settings
        if any(getattr(current, f) != getattr(camera, f) for f in CAPTURE_FIELDS):
            await self.stop_camera(camera.id)
            self.start_camera(camera, model, executor)
        else:
            self.samplers[camera.id].reconfigure(camera)
            log.info("camera %s: sampling settings updated in place", camera.id)

    async def stop_cameras(self) -> None:
        stopped = await asyncio.gather(*(self.stop_camera(c) for c in list(self.samplers)))
        if not all(stopped):
            log.warning("some capture threads did not stop in time")

    # ---- status ----
    def camera_statuses(self) -> dict[str, dict[str, object]]:
        return {cid: s.capture.status().to_dict() for cid, s in self.samplers.items()}

    def sink_statuses(self) -> dict[str, object]:
        statuses: dict[str, object] = {}
        if self.dispatcher is not None:
            statuses = {sink.name: dict(sink.status()) for sink in self.dispatcher.sinks}
        if self.hub is not None:  # the module client (twin, methods), with or without the iothub sink
            statuses["hub"] = {"connected": self.hub.connected, "last_error": self.hub.last_error}
        return statuses
