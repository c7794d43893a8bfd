"""The Cameras part: one capture thread and one sampling task per enabled camera, changed live.

`apply(cameras)` adds, removes, restarts (a stream field changed: CAPTURE_FIELDS) or reconfigures in
place (fps, ROIs, rules: the stream keeps running). It receives the inference service and the delivery
part once, at construction; each capture pushes its status to the board.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Self

from edge_runtime.domain import Frame
from edge_runtime.redact import redact_url
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import Capture, Opener
from edge_runtime.sources.readers import open_reader
from edge_runtime.sources.sampler import CameraSampler, Inference, Publisher
from edge_runtime.status import CameraStatus, StatusBoard, camera_key

log = logging.getLogger(__name__)

# What a change to these camera fields needs: a new stream; anything else is applied in place.
CAPTURE_FIELDS = (
    "url",
    "detect_url",
    "reader",
    "hwaccel",
    "hwaccel_fallback",
    "open_timeout_s",
    "stall_timeout_s",
    "backoff_initial_s",
    "backoff_max_s",
)
STOP_TIMEOUT_S = 10.0


class Cameras:
    """Touched on the event loop only (captures report from their threads through the board)."""

    def __init__(
        self,
        cameras: tuple[CameraSettings, ...],
        inference: Inference,
        delivery: Publisher,
        board: StatusBoard,
        opener: Opener = open_reader,
    ) -> None:
        self.config = cameras
        self._inference = inference
        self._delivery = delivery
        self._board = board
        self._opener = opener
        self.samplers: dict[str, CameraSampler] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # ---- the part ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        for camera in self.config:
            if camera.enabled:
                if not camera.rules:
                    log.warning("camera %s has no rules: it is sampled but produces no events", camera.id)
                self._start(camera)
        return self

    async def __aexit__(self, *exc: object) -> None:
        stopped = await asyncio.gather(*(self._stop(c) for c in list(self.samplers)))
        if not all(stopped):
            log.warning("some capture threads did not stop in time")

    def check(self, cameras: tuple[CameraSettings, ...]) -> None:
        """Settings validation covers cameras whole (ids, ROIs, rules); nothing is opened to check."""

    async def apply(self, cameras: tuple[CameraSettings, ...]) -> list[str]:
        changes = []
        wanted = {c.id: c for c in cameras if c.enabled}
        for camera_id in [c for c in self.samplers if c not in wanted]:
            await self._stop(camera_id)
            changes.append(f"camera {camera_id} removed")
        for camera_id, camera in wanted.items():
            sampler = self.samplers.get(camera_id)
            if sampler is None:
                self._start(camera)
                changes.append(f"camera {camera_id} added")
            elif sampler.settings != camera:
                await self._update(camera)
                changes.append(f"camera {camera_id} changed")
        self.config = cameras
        return changes

    # ---- what others use --------------------------------------------------------------------------
    def latest_frame(self, camera_id: str) -> Frame | None:
        """The newest frame of a running camera, left for its sampler; KeyError for an unknown one."""
        return self.samplers[camera_id].capture.slot.peek()

    def status(self, camera_id: str) -> CameraStatus:
        """Read now (frame counts and age exact); the board gets the same at every state change and
        frame progress at most once a second."""
        return self.samplers[camera_id].capture.status()

    def statuses(self) -> dict[str, CameraStatus]:
        return {camera_id: self.status(camera_id) for camera_id in self.samplers}

    # ---- inside -----------------------------------------------------------------------------------
    def _start(self, camera: CameraSettings) -> None:
        loop = asyncio.get_running_loop()
        holder: list[Capture] = []

        def report(status: CameraStatus) -> None:  # from the capture thread (or the watchdog)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads any more
                loop.call_soon_threadsafe(self._report, holder[0], status)

        capture = Capture(camera, self._opener, report)
        holder.append(capture)
        self._board.put(camera_key(camera.id), capture.status())
        capture.start()
        sampler = CameraSampler(capture, self._inference, self._delivery)
        self.samplers[camera.id] = sampler
        self._tasks[camera.id] = asyncio.create_task(sampler.run(), name=f"sampler-{camera.id}")
        log.info("camera %s: %s at %.1f fps", camera.id, redact_url(camera.url), camera.fps)

    def _report(self, capture: Capture, status: CameraStatus) -> None:
        sampler = self.samplers.get(capture.settings.id)
        if sampler is not None and sampler.capture is capture:
            self._board.put(camera_key(capture.settings.id), status)

    async def _stop(self, camera_id: str) -> bool:
        """Stop sampling, then the capture thread; False if the thread did not stop in time."""
        sampler = self.samplers.pop(camera_id)
        task = self._tasks.pop(camera_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        stopped = await asyncio.to_thread(sampler.capture.stop, STOP_TIMEOUT_S)
        self._board.remove(camera_key(camera_id))
        log.info("camera %s: stopped", camera_id)
        return stopped

    async def _update(self, camera: CameraSettings) -> None:
        sampler = self.samplers[camera.id]
        current = sampler.capture.settings
        if any(getattr(current, f) != getattr(camera, f) for f in CAPTURE_FIELDS):
            await self._stop(camera.id)
            self._start(camera)
        else:
            sampler.capture.retune(camera)  # fps and decode policy: followed at the next read
            sampler.reconfigure(camera)
            log.info("camera %s: sampling settings updated in place", camera.id)
