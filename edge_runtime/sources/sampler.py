"""Per camera: take the newest frame at the configured fps, predict each ROI, apply rules, emit events.

Runs on the event loop; inference and snapshot encoding go through the inference service, so the
camera path and the HTTP path use the same predictor and the same threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from edge_runtime import metrics
from edge_runtime.domain import FULL_FRAME, BoundingBox, Event, EventKind, Frame, Prediction, Record, Roi
from edge_runtime.engine import Predictor
from edge_runtime.events.ids import new_event_id
from edge_runtime.events.rules import Decision, RuleEngine
from edge_runtime.events.snapshots import Drawing, SnapshotStore
from edge_runtime.inference.service import RoiPredictions
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import Capture
from edge_runtime.sources.inspections import Inspection, Inspections, RoiResult

log = logging.getLogger(__name__)
T = TypeVar("T")


class Inference(Protocol):
    """What a sampler needs of the inference service."""

    @property
    def serving(self) -> Predictor | None: ...

    async def predict_rois(
        self, frame: Frame, rois: tuple[Roi, ...], predictor: Predictor | None = None
    ) -> RoiPredictions: ...

    async def offload(self, fn: Callable[..., T], *args: object) -> T: ...

    async def first_predictor(self) -> Predictor: ...


class Publisher(Protocol):
    """Where a sampler's events and snapshots go (the Delivery part)."""

    @property
    def snapshots(self) -> SnapshotStore | None: ...

    async def publish(self, event: Record) -> None: ...


class CameraSampler:
    def __init__(
        self,
        capture: Capture,
        inference: Inference,
        outlet: Publisher,
        view: Capture | None = None,
        inspections: Inspections | None = None,
    ) -> None:
        """`view`: the camera's `url` stream when `capture` reads its detect_url (snapshots from it).
        `inspections`: where each sample's frame, predictions and rule state are shown (latest wins)."""
        self.capture = capture
        self.view = view
        self._inspections = inspections
        self._inference = inference
        self._outlet = outlet
        self._dropped_seen = 0
        self._engine: RuleEngine | None = None
        self._engine_predictor: Predictor | None = None
        self.reconfigure(capture.settings)

    def reconfigure(self, settings: CameraSettings) -> None:
        """New fps, ROIs or rules without touching the stream (rule state starts over)."""
        self.settings = settings
        metrics.CAMERA_SAMPLING_PERIOD.labels(settings.id).set(1.0 / settings.fps)
        metrics.CAMERA_SAMPLING_OVERRUNS.labels(settings.id)  # at 0 from the start: rate() sees the first
        self._rois = tuple(Roi(r.name, r.x, r.y, r.width, r.height) for r in settings.rois) or (FULL_FRAME,)
        self._rules_changed = True  # the rule engine is rebuilt (carrying episodes over) on the next frame

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += 1.0 / self.settings.fps
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = loop.time()  # inference slower than fps: sample as fast as we can, no backlog
                metrics.CAMERA_SAMPLING_OVERRUNS.labels(self.capture.settings.id).inc()
            self.capture.watchdog()
            self._count_drops()
            frame = self.capture.slot.take_newest()
            predictor = self._inference.serving
            if frame is None or predictor is None or not self.settings.sample:
                continue  # `sample: false`: the tick still watches for stalls (stations rely on it)
            try:
                await self._sample(frame, predictor)
            except Exception:  # one bad frame must never stop a camera
                log.exception("camera %s: sampling failed", self.capture.settings.id)

    def _count_drops(self) -> None:
        dropped = self.capture.slot.dropped
        if dropped > self._dropped_seen:
            metrics.CAMERA_FRAMES_DROPPED.labels(self.capture.settings.id).inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped

    async def _sample(self, frame: Frame, predictor: Predictor) -> None:
        camera = self.capture.settings.id
        metrics.FRAME_AGE_SECONDS.labels(camera).observe(max(0.0, time.time() - frame.captured_at))
        ended: list[Decision] = []
        if self._engine is None:
            self._engine = RuleEngine(self.settings.rules, predictor.spec.labels)
        elif self._rules_changed or self._engine_predictor is not predictor:
            rois = [roi.name for roi in self._rois]
            self._engine, ended = self._engine.carry_over(self.settings.rules, predictor.spec.labels, rois)
        self._engine_predictor, self._rules_changed = predictor, False
        engine = self._engine  # a reconfigure while we await inference must not pull it away
        for decision in ended:  # episodes whose tag or ROI no longer exists
            await self._outlet.publish(await self._event(decision, frame, predictor))
        results = await self._inference.predict_rois(frame, self._rois, predictor)
        for roi, predictions in results:
            for decision in engine.evaluate(roi.name, predictions, frame.captured_at):
                event = await self._event(decision, frame, predictor, predictions)
                log.info(
                    "event %s %s %s/%s %s p=%.3f",
                    event.id,
                    event.kind.value,
                    camera,
                    roi.name,
                    event.tag,
                    event.probability,
                )
                await self._outlet.publish(event)
        if self._inspections is not None:
            self._inspections.put(
                camera,
                Inspection(
                    camera=camera,
                    sequence=self._inspections.next_sequence(),
                    frame=frame,
                    rois=tuple(RoiResult(roi, predictions) for roi, predictions in results),
                    rules=engine.states(),
                    model_id=predictor.spec.model_id,
                ),
            )

    def _drawing(self, decision: Decision) -> Drawing:
        roi = next((r for r in self._rois if r.name == decision.roi), None)
        return Drawing(
            kind=decision.kind.value,
            tag=decision.tag,
            probability=decision.probability,
            # An `ended` snapshot shows the frame now: the boxes are those of the defect that left.
            boxes=() if decision.kind is EventKind.ENDED else decision.boxes,
            roi=None if roi in (None, FULL_FRAME) else BoundingBox(roi.x, roi.y, roi.width, roi.height),
            roi_name=decision.roi,
        )

    def _snapshot_frame(self, frame: Frame) -> Frame:
        """The view stream's newest frame (full resolution) when it shows about the same moment: at
        most one keyframe interval plus a sampling period from the inspected frame (the view stream
        decodes keyframes only). Else the inspected frame itself (a stalled view stream, a long GOP)."""
        view = None if self.view is None else self.view.slot.peek()
        if view is None or self.view is None:
            return frame
        stream = self.view.status().stream
        interval = (stream.keyframe_interval_s if stream is not None else None) or 0.0
        window = interval + 1.0 / self.settings.fps
        return view if frame.captured_at - window <= view.captured_at <= frame.captured_at + window else frame

    async def _event(
        self, decision: Decision, frame: Frame, predictor: Predictor, predictions: tuple[Prediction, ...] = ()
    ) -> Event:
        event_id = new_event_id()
        snapshot = None
        snapshots = self._outlet.snapshots
        if snapshots is not None:
            shown, drawing = self._snapshot_frame(frame), self._drawing(decision)
            try:  # converted (if not yet) on the pool, not on the loop
                await self._inference.offload(lambda: snapshots.save(event_id, shown.image, drawing))
                snapshot = snapshots.url_for(event_id)
            except OSError as exc:
                log.warning("snapshot for event %s failed: %s", event_id, exc)
        spec = predictor.spec
        return Event(
            id=event_id,
            kind=decision.kind,
            camera=self.capture.settings.id,
            roi=decision.roi,
            tag=decision.tag,
            probability=decision.probability,
            boxes=decision.boxes,
            captured_at=frame.captured_at,
            model_id=spec.model_id,
            model_sha1=spec.sha1,
            snapshot=snapshot,
            predictions=predictions,
        )
