"""The Stations part: every trigger (HTTP, MQTT, direct method, OPC UA) -> one verdict per part.

    submit(trigger) -> the part's future (a repeat of a remembered part id gets the same one)
        -> evidence.py: frames captured after the trigger, `frames` per camera, `min_interval_ms`
           apart (FrameSlot.wait_newer: pushed by the capture thread, never polled; never an older
           frame), each predicted as it arrives by the model in service at the trigger (one model per
           part), shared by parts waiting on the same frame
        -> vote (vote.py) -> pass | fail; anything short of every frame -> no_verdict with a reason
        -> the future is settled (the caller answers at once), then the verdict's snapshots are
           written and it is published (durable outbox, sinks, history) in the background

Never a silent pass: a pass needs every frame of every camera inspected by one model before the
deadline. The deadline runs from the trigger's arrival. On shutdown, pending parts get
no_verdict/shutdown, published like any verdict before the delivery closes (this part leaves first).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Self

from edge_runtime import metrics
from edge_runtime.domain import BoundingBox, Frame
from edge_runtime.events.ids import new_event_id
from edge_runtime.events.snapshots import Drawing
from edge_runtime.latest import Latest
from edge_runtime.settings import Settings, StationSettings, TriggerSettings
from edge_runtime.sources.inspections import Inspections
from edge_runtime.sources.sampler import Inference, Publisher
from edge_runtime.stations.evidence import Cameras, Evidence, Progress
from edge_runtime.stations.status import StationStatus
from edge_runtime.stations.triggers import NotAccepting, UnknownStation
from edge_runtime.stations.verdict import (
    Defect,
    FrameEvidence,
    NoVerdictReason,
    Trigger,
    Verdict,
    VerdictKind,
)
from edge_runtime.stations.vote import defects_found

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 10.0  # for publishing the pending parts' shutdown verdicts
SNAPSHOTS_SHARED = 64  # recent (frame, drawing) pairs whose snapshot parts share


@dataclass(frozen=True, slots=True)
class StationsConfig:
    stations: tuple[StationSettings, ...]
    triggers: TriggerSettings

    @classmethod
    def of(cls, settings: Settings) -> StationsConfig:
        return cls(tuple(s for s in settings.stations if s.enabled), settings.triggers)


class Stations:
    """Touched on the event loop only."""

    def __init__(
        self,
        config: StationsConfig,
        inference: Inference,
        cameras: Cameras,
        delivery: Publisher,
        inspections: Inspections | None = None,
    ) -> None:
        self.config = config
        self._evidence = Evidence(inference, cameras, inspections)
        self.statuses: Latest[str, StationStatus] = Latest()
        self._inference = inference
        self._delivery = delivery
        self._stations = {s.id: s for s in config.stations}
        self._recent: OrderedDict[tuple[str, str], asyncio.Future[Verdict]] = OrderedDict()
        self._pending: dict[str, set[asyncio.Task[None]]] = {}
        self._after: set[asyncio.Task[None]] = set()  # snapshots + publishing, after the answer
        self._snapshot_ids: OrderedDict[tuple[object, ...], str] = OrderedDict()
        self._closing = False

    # ---- the part ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        for station in self._stations.values():
            self._show(station.id)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._after:
            _, late = await asyncio.wait(set(self._after), timeout=STOP_TIMEOUT_S)
            if late:
                log.warning("stations: %d verdict(s) not published before the stop", len(late))

    async def stop(self) -> None:
        """No new parts; pending ones get no_verdict/shutdown now. The app calls this when shutdown
        begins, so HTTP callers still waiting get that answer before their connections close."""
        self._closing = True
        tasks = [t for group in self._pending.values() for t in group]
        for task in tasks:
            task.cancel()  # each settles its part with no_verdict/shutdown
        if tasks:
            log.info("stations: %d pending part(s) get no_verdict/shutdown", len(tasks))
        await asyncio.gather(*tasks, return_exceptions=True)

    def check(self, config: StationsConfig) -> None:
        """Settings validation covers stations whole (cameras exist and decode every frame)."""

    async def apply(self, config: StationsConfig) -> list[str]:
        """Pending parts finish under the settings they started with."""
        old, new = self._stations, {s.id: s for s in config.stations}
        changes = [f"station {s} removed" for s in old if s not in new]
        changes += [f"station {s} added" for s in new if s not in old]
        changes += [f"station {s} changed" for s in new if s in old and old[s] != new[s]]
        self._stations, self.config = new, config
        for station_id in [s for s in old if s not in new]:
            self.statuses.remove(station_id)
        for station_id in new:
            self._show(station_id)
        self._forget_old()
        return changes

    # ---- what triggers use ------------------------------------------------------------------------
    def submit(self, trigger: Trigger) -> asyncio.Future[Verdict]:
        """The part's verdict to come; a repeat of a remembered part id gets the first one's (answer
        with `await asyncio.shield(...)`: a caller that goes away must not cancel the inspection)."""
        station = self._stations.get(trigger.station)
        if station is None:
            raise UnknownStation(trigger.station, sorted(self._stations))
        key = (station.id, trigger.part_id)
        known = self._recent.get(key)
        if known is not None:
            self._recent.move_to_end(key)
            metrics.STATION_TRIGGERS.labels(station.id, trigger.source, "repeat").inc()
            return known
        if self._closing:
            raise NotAccepting("the runtime is stopping")
        metrics.STATION_TRIGGERS.labels(station.id, trigger.source, "new").inc()
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._recent[key] = future
        self._forget_old()
        pending = self._pending.setdefault(station.id, set())
        if len(pending) >= station.max_pending:
            detail = f"{len(pending)} parts already in inspection (max_pending)"
            busy = self._no_verdict(station, trigger, NoVerdictReason.BUSY, detail, Progress(()))
            self._settle(future, busy, {})
            return future
        task = asyncio.create_task(self._run(station, trigger, future), name=f"part-{station.id}")
        pending.add(task)
        task.add_done_callback(pending.discard)
        task.add_done_callback(lambda _: self._show(station.id))
        self._show(station.id)
        return future

    async def inspect(self, trigger: Trigger) -> Verdict:
        return await asyncio.shield(self.submit(trigger))

    def recent(self, station: str, part_id: str) -> asyncio.Future[Verdict] | None:
        """A remembered part's verdict (done) or the one to come; None when not (or no longer) known."""
        return self._recent.get((station, part_id))

    @property
    def ids(self) -> list[str]:
        return sorted(self._stations)

    def _forget_old(self) -> None:
        """Keep the newest `remember_parts` part ids; a pending part is never forgotten (a repeat of it
        must join it, not start a second inspection): those are bounded by max_pending."""
        excess = len(self._recent) - self.config.triggers.remember_parts
        if excess <= 0:
            return
        for key in list(self._recent)[: excess + sum(len(p) for p in self._pending.values())]:
            if excess <= 0:
                break
            if self._recent[key].done():
                del self._recent[key]
                excess -= 1

    # ---- one part -----------------------------------------------------------------------------------
    async def _run(self, station: StationSettings, trigger: Trigger, future: asyncio.Future[Verdict]) -> None:
        progress = Progress(station.cameras)
        remaining = trigger.received_at + station.deadline_ms / 1000 - time.time()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                verdict = await self._inspect(station, trigger, progress)
        except TimeoutError:
            reason, detail = self._evidence.why_late(station, progress)
            verdict = self._no_verdict(station, trigger, reason, detail, progress)
        except asyncio.CancelledError:
            verdict = self._no_verdict(
                station, trigger, NoVerdictReason.SHUTDOWN, "the runtime stopped", progress
            )
        except Exception as exc:
            log.exception("station %s: part %s: inspection failed", station.id, trigger.part_id)
            detail = f"{type(exc).__name__}: {exc}"[:300]
            verdict = self._no_verdict(station, trigger, NoVerdictReason.INFERENCE_ERROR, detail, progress)
        self._settle(future, verdict, progress.pictures)

    async def _inspect(self, station: StationSettings, trigger: Trigger, progress: Progress) -> Verdict:
        # No model yet (the runtime just started, triggers kept by the broker arrive at once): wait for
        # one within the deadline (no_verdict/model_not_ready past it).
        predictor = self._inference.serving or await self._inference.first_predictor()
        progress.model = predictor
        stopped = await self._evidence.gather(station, trigger, predictor, progress)
        if stopped is not None:
            detail = f"camera {stopped} is not running"
            return self._no_verdict(station, trigger, NoVerdictReason.CAMERA_STALLED, detail, progress)
        frames = tuple(f for camera in station.cameras for f in progress.frames[camera])
        defects = defects_found(station.defects, frames)
        verdict = VerdictKind.FAIL if defects else VerdictKind.PASS
        detail = ", ".join(f"{d.tag} {d.probability:.2f} ({d.votes}/{d.needed})" for d in defects)
        return self._verdict(station, trigger, verdict, None, detail or "no defect", defects, progress)

    # ---- verdicts -----------------------------------------------------------------------------------
    def _no_verdict(
        self,
        station: StationSettings,
        trigger: Trigger,
        reason: NoVerdictReason,
        detail: str,
        progress: Progress,
    ) -> Verdict:
        return self._verdict(station, trigger, VerdictKind.NO_VERDICT, reason, detail, (), progress)

    def _verdict(
        self,
        station: StationSettings,
        trigger: Trigger,
        kind: VerdictKind,
        reason: NoVerdictReason | None,
        detail: str,
        defects: tuple[Defect, ...],
        progress: Progress,
    ) -> Verdict:
        frames = tuple(f for camera in station.cameras for f in progress.frames.get(camera, ()))
        spec = None if progress.model is None else progress.model.spec
        return Verdict(
            id=new_event_id(),
            station=station.id,
            part_id=trigger.part_id,
            verdict=kind,
            reason=reason,
            detail=detail,
            defects=defects,
            frames=frames,
            triggered_at=trigger.received_at,
            decided_at=time.time(),
            source=trigger.source,
            model_id=None if spec is None else spec.model_id,
            model_sha1=None if spec is None else spec.sha1,
            plc_time=trigger.plc_time,
            metadata=trigger.metadata,
        )

    def _settle(self, future: asyncio.Future[Verdict], verdict: Verdict, pictures: dict[str, Frame]) -> None:
        """Answer the part now; snapshots and the durable publish follow in the background."""
        station = verdict.station
        metrics.STATION_VERDICT_SECONDS.labels(station).observe(max(0.0, verdict.latency_s))
        metrics.STATION_VERDICTS.labels(station, verdict.verdict.value).inc()
        if verdict.reason is not None:
            metrics.STATION_NO_VERDICTS.labels(station, verdict.reason.value).inc()
        log.info(
            "station %s: part %s: %s%s (%.0f ms)",
            station,
            verdict.part_id,
            verdict.verdict.value,
            f" ({verdict.reason.value}: {verdict.detail})" if verdict.reason else f" ({verdict.detail})",
            verdict.latency_s * 1000,
        )
        frames = [(f, pictures[f.camera]) for f in _last_per_camera(verdict.frames) if f.camera in pictures]
        to_save: list[tuple[str, Frame, Drawing]] = []
        if self._delivery.snapshots is not None and frames:
            # The URLs are known now; the files follow (a part's answer does not wait for JPEGs). Parts
            # that share a frame and a drawing share its snapshot: a burst encodes one JPEG, not one each.
            ids = []
            for evidence, frame in frames:
                drawing = _drawing(verdict, evidence)
                key = (evidence.camera, evidence.sequence, evidence.captured_at, drawing)
                snapshot_id = self._snapshot_ids.get(key)
                if snapshot_id is None:
                    snapshot_id = self._snapshot_ids[key] = new_event_id()
                    to_save.append((snapshot_id, frame, drawing))
                    while len(self._snapshot_ids) > SNAPSHOTS_SHARED:
                        self._snapshot_ids.popitem(last=False)
                ids.append(snapshot_id)
            verdict = replace(verdict, snapshots=tuple(self._delivery.snapshots.url_for(i) for i in ids))
        self._count(verdict)
        if not future.done():
            future.set_result(verdict)
        task = asyncio.create_task(self._keep(verdict, to_save), name=f"verdict-{station}")
        self._after.add(task)
        task.add_done_callback(self._after.discard)

    async def _keep(self, verdict: Verdict, to_save: list[tuple[str, Frame, Drawing]]) -> None:
        store = self._delivery.snapshots
        for snapshot_id, frame, drawing in to_save if store is not None else ():
            try:  # the frame converts (if not yet) on the pool, not on the loop
                await self._inference.offload(
                    lambda i=snapshot_id, f=frame, d=drawing, s=store: s.save(i, f.image, d)
                )
            except OSError as exc:
                log.warning("snapshot for verdict %s failed: %s", verdict.id, exc)
        try:
            await self._delivery.publish(verdict)
        except Exception:
            log.exception(
                "verdict %s (station %s, part %s) not published", verdict.id, verdict.station, verdict.part_id
            )

    def _count(self, verdict: Verdict) -> None:
        status = self.statuses.get(verdict.station)
        if status is None:
            return
        self.statuses.put(
            verdict.station,
            replace(
                status,
                parts=status.parts + 1,
                passes=status.passes + (verdict.verdict is VerdictKind.PASS),
                fails=status.fails + (verdict.verdict is VerdictKind.FAIL),
                no_verdicts=status.no_verdicts + (verdict.verdict is VerdictKind.NO_VERDICT),
                last=verdict,
            ),
        )

    def _show(self, station_id: str) -> None:
        station = self._stations.get(station_id)
        if station is None:
            return
        pending = len(self._pending.get(station_id, ()))
        metrics.STATION_PENDING.labels(station_id).set(pending)
        status = self.statuses.get(station_id) or StationStatus(station_id, station.cameras)
        self.statuses.put(station_id, replace(status, cameras=station.cameras, pending=pending))


def _drawing(verdict: Verdict, evidence: FrameEvidence) -> Drawing:
    tags = {d.tag for d in verdict.defects}
    boxes: list[BoundingBox] = [
        p.bounding_box
        for roi in evidence.rois
        for p in roi.predictions
        if p.tag_name in tags and p.bounding_box is not None
    ]
    top = max(verdict.defects, key=lambda d: d.probability, default=None)
    return Drawing(
        kind=verdict.verdict.value,
        tag="" if top is None else top.tag,  # not the part id: parts that share a frame share its JPEG
        probability=0.0 if top is None else top.probability,
        boxes=tuple(boxes),
        roi=None,
        roi_name="",
    )


def _last_per_camera(frames: tuple[FrameEvidence, ...]) -> list[FrameEvidence]:
    last = {f.camera: f for f in frames}  # frames are in order per camera
    return list(last.values())
