"""The Cameras part: one capture thread and one sampling task per enabled camera, changed live.

`apply(cameras)` adds, removes, restarts (a stream field changed: CAPTURE_FIELDS) or reconfigures in
place (fps, decode, ROIs, rules: the stream keeps running). It receives the inference service and the
delivery part once, at construction; each capture pushes its status to the board.

A camera with a `detect_url` has two captures: the inspected one reads detect_url (the substream) for
the sampler; a `view` capture reads `url` keyframes only, for snapshots and the latest frame. ROIs and
boxes are fractions of the frame, so they land on the same scene in both when the two streams show the
same field of view, whatever their sizes and aspect ratios (704x576 against 1920x1080).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Self

from edge_runtime.domain import Frame, Roi
from edge_runtime.redact import redact_url
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import Capture, Opener
from edge_runtime.sources.frame_slot import FrameSlot
from edge_runtime.sources.inspections import Inspections
from edge_runtime.sources.readers import open_reader
from edge_runtime.sources.sampler import CameraSampler, Inference, Publisher
from edge_runtime.status import CameraStatus, StatusBoard, ViewStatus, camera_key

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
        self.inspections = Inspections()  # what each camera's model saw last (the operator page)
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
                if not camera.rules and camera.sample:
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
        """The newest frame of a running camera (of its `url` stream when it inspects a detect_url),
        left for its sampler; KeyError for an unknown one."""
        sampler = self.samplers[camera_id]
        view = None if sampler.view is None else sampler.view.slot.peek()
        return view or sampler.capture.slot.peek()

    def frame_slot(self, camera_id: str) -> FrameSlot:
        """Where a running camera's inspected stream hands its frames over (stations wait on it);
        KeyError for an unknown one."""
        return self.samplers[camera_id].capture.slot

    def rois(self, camera_id: str) -> tuple[Roi, ...]:
        """A running camera's ROIs (empty: the whole frame); KeyError for an unknown one."""
        return tuple(Roi(r.name, r.x, r.y, r.width, r.height) for r in self.samplers[camera_id].settings.rois)

    def status(self, camera_id: str) -> CameraStatus:
        """Read now (frame counts and age exact); the board gets the same at every state change and
        frame progress at most once a second."""
        sampler = self.samplers[camera_id]
        return with_view(sampler.capture.status(), sampler.view)

    def statuses(self) -> dict[str, CameraStatus]:
        return {camera_id: self.status(camera_id) for camera_id in self.samplers}

    # ---- inside -----------------------------------------------------------------------------------
    def _start(self, camera: CameraSettings) -> None:
        loop = asyncio.get_running_loop()

        def reporter(holder: list[Capture]) -> Callable[[CameraStatus], None]:
            def report(status: CameraStatus) -> None:  # from the capture thread (or the watchdog)
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads any more
                    loop.call_soon_threadsafe(self._report, holder[0], status)

            return report

        captures: list[Capture] = []
        for view in (False, True) if camera.detect_url else (False,):
            holder: list[Capture] = []
            holder.append(Capture(camera, self._opener, reporter(holder), view=view))
            captures.append(holder[0])
        capture, view_capture = captures[0], (captures[1] if len(captures) > 1 else None)
        sampler = CameraSampler(capture, self._inference, self._delivery, view_capture, self.inspections)
        self.samplers[camera.id] = sampler
        self._board.put(camera_key(camera.id), self.status(camera.id))
        for each in captures:
            each.start()
        self._tasks[camera.id] = asyncio.create_task(sampler.run(), name=f"sampler-{camera.id}")
        detect = f", inspecting {redact_url(camera.detect_url)}" if camera.detect_url else ""
        log.info("camera %s: %s at %.1f fps%s", camera.id, redact_url(camera.url), camera.fps, detect)

    def _report(self, capture: Capture, status: CameraStatus) -> None:
        sampler = self.samplers.get(capture.settings.id)
        if sampler is None or capture not in (sampler.capture, sampler.view):
            return  # a stopped camera's last words
        inspected = status if capture is sampler.capture else sampler.capture.status()
        self._board.put(camera_key(capture.settings.id), with_view(inspected, sampler.view))

    async def _stop(self, camera_id: str) -> bool:
        """Stop sampling, then the capture thread; False if the thread did not stop in time."""
        sampler = self.samplers.pop(camera_id)
        task = self._tasks.pop(camera_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        stopped = await asyncio.to_thread(sampler.capture.stop, STOP_TIMEOUT_S)
        if sampler.view is not None:
            stopped = await asyncio.to_thread(sampler.view.stop, STOP_TIMEOUT_S) and stopped
        self._board.remove(camera_key(camera_id))
        self.inspections.remove(camera_id)
        log.info("camera %s: stopped", camera_id)
        return stopped

    async def _update(self, camera: CameraSettings) -> None:
        sampler = self.samplers[camera.id]
        current = sampler.capture.settings
        if any(getattr(current, f) != getattr(camera, f) for f in CAPTURE_FIELDS):
            await self._stop(camera.id)
            self._start(camera)
        else:
            for capture in (sampler.capture, sampler.view):
                if capture is not None:
                    capture.retune(camera)  # fps and decode policy: followed at the next read
            sampler.reconfigure(camera)
            log.info("camera %s: sampling settings updated in place", camera.id)


def with_view(status: CameraStatus, view: Capture | None) -> CameraStatus:
    """The inspected stream's status, with the snapshot stream's summary when there is one."""
    if view is None:
        return status
    shown = view.status()
    summary = ViewStatus(shown.url, shown.state, shown.last_frame_at, shown.last_error, shown.stream)
    return dataclasses.replace(status, view=summary)
