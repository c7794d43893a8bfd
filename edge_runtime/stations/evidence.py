"""A station's evidence for one part: frames captured after the trigger, each predicted once however
many parts wait on it, and, when the deadline passes first, why the part got no verdict."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Protocol

from edge_runtime.domain import FULL_FRAME, Frame, Roi
from edge_runtime.engine import Predictor
from edge_runtime.inference.service import RoiPredictions
from edge_runtime.settings import StationSettings
from edge_runtime.sources.frame_slot import FrameSlot
from edge_runtime.sources.inspections import Inspection, Inspections, RoiResult
from edge_runtime.sources.sampler import Inference
from edge_runtime.stations.verdict import FrameEvidence, NoVerdictReason, RoiEvidence, Trigger

MEMO_SIZE = 64  # frames whose predictions parts may share (a burst waits on the same few frames)


class Cameras(Protocol):
    """What a station needs of the Cameras part."""

    def frame_slot(self, camera_id: str) -> FrameSlot: ...  # KeyError: not running

    def rois(self, camera_id: str) -> tuple[Roi, ...]: ...


class Progress:
    """How far one part got, to say why it got no verdict."""

    def __init__(self, cameras: tuple[str, ...]) -> None:
        self.frames: dict[str, list[FrameEvidence]] = {c: [] for c in cameras}
        self.arrived: dict[str, int] = {c: 0 for c in cameras}  # frames taken (predicted or not)
        self.slot_frames_at_start: dict[str, int] = {}
        self.model: Predictor | None = None
        self.pictures: dict[str, Frame] = {}  # each camera's last inspected frame (the snapshot)


class Evidence:
    """Gathers frames and predictions for the parts of every station (one per Stations part)."""

    def __init__(self, inference: Inference, cameras: Cameras, inspections: Inspections | None) -> None:
        self._inference = inference
        self._cameras = cameras
        self._inspections = inspections
        self._memo: OrderedDict[tuple[object, ...], asyncio.Future[RoiPredictions]] = OrderedDict()

    async def gather(
        self, station: StationSettings, trigger: Trigger, predictor: Predictor, progress: Progress
    ) -> str | None:
        """Every camera's frames into `progress`; the name of a camera that is not running, if one."""
        slots = {}
        for camera in station.cameras:
            try:
                slots[camera] = self._cameras.frame_slot(camera)
            except KeyError:
                return camera
            progress.slot_frames_at_start[camera] = slots[camera].frames
        await asyncio.gather(
            *(self._camera(station, camera, slots[camera], trigger, predictor, progress) for camera in slots)
        )
        return None

    async def _camera(
        self,
        station: StationSettings,
        camera: str,
        slot: FrameSlot,
        trigger: Trigger,
        predictor: Predictor,
        progress: Progress,
    ) -> None:
        rois = self._rois(station, camera)
        interval = station.min_interval_ms / 1000
        after, margin = trigger.after, station.clock_margin_ms / 1000
        jobs = []
        for _ in range(station.frames):
            waiting = slot.wait_newer(after, margin)
            try:
                frame = await waiting
            finally:
                waiting.cancel()  # a timeout leaves no waiter behind
            progress.arrived[camera] += 1
            # The next frame: at least min_interval_ms later (a strictly newer one when 0).
            after, margin = frame.captured_at + interval - (1e-6 if interval else 0.0), 0.0  # one clock now
            jobs.append(asyncio.ensure_future(self._predicted(camera, frame, rois, predictor)))
        results = await asyncio.gather(*jobs)
        for seen, predictions in results:
            progress.pictures[camera] = seen
            progress.frames[camera].append(
                FrameEvidence(
                    camera,
                    seen.captured_at,
                    seen.sequence,
                    tuple(RoiEvidence(roi.name, p) for roi, p in predictions),
                )
            )

    async def _predicted(
        self, camera: str, frame: Frame, rois: tuple[Roi, ...], predictor: Predictor
    ) -> tuple[Frame, RoiPredictions]:
        """Parts waiting on the same frame share its prediction (a burst of triggers costs one)."""
        key = (camera, frame.sequence, frame.captured_at, predictor.spec.model_id, predictor.spec.sha1, rois)
        shared = self._memo.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._inference.predict_rois(frame, rois, predictor))
            self._memo[key] = shared
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
            if self._inspections is not None:
                shared.add_done_callback(lambda done: self._show_inspection(camera, frame, done, predictor))
        return frame, await asyncio.shield(shared)

    def _show_inspection(
        self, camera: str, frame: Frame, done: asyncio.Future[RoiPredictions], predictor: Predictor
    ) -> None:
        """The operator page shows what a station's camera saw (a camera with `sample: false` has no
        other inspection to show)."""
        if self._inspections is None or done.cancelled() or done.exception() is not None:
            return
        self._inspections.put(
            camera,
            Inspection(
                camera=camera,
                sequence=self._inspections.next_sequence(),
                frame=frame,
                rois=tuple(RoiResult(roi, p) for roi, p in done.result()),
                rules=(),
                model_id=predictor.spec.model_id,
            ),
        )

    def _rois(self, station: StationSettings, camera: str) -> tuple[Roi, ...]:
        if station.rois:
            return tuple(Roi(r.name, r.x, r.y, r.width, r.height) for r in station.rois)
        return self._cameras.rois(camera) or (FULL_FRAME,)

    def why_late(self, station: StationSettings, progress: Progress) -> tuple[NoVerdictReason, str]:
        if progress.model is None:
            return NoVerdictReason.MODEL_NOT_READY, f"no model in service within {station.deadline_ms:g} ms"
        for camera in station.cameras:
            if progress.arrived[camera] >= station.frames:
                continue
            got = f"{progress.arrived[camera]} of {station.frames} frames"
            try:
                slot = self._cameras.frame_slot(camera)
            except KeyError:
                return NoVerdictReason.CAMERA_STALLED, f"camera {camera} stopped ({got})"
            if slot.frames > progress.slot_frames_at_start.get(camera, slot.frames):
                return (
                    NoVerdictReason.CAMERA_STALE,
                    f"camera {camera} sent frames, but not captured after the trigger in time ({got})",
                )
            return (
                NoVerdictReason.CAMERA_STALLED,
                f"camera {camera} sent no frame in {station.deadline_ms:g} ms ({got})",
            )
        return NoVerdictReason.DEADLINE, f"inference did not finish within {station.deadline_ms:g} ms"
