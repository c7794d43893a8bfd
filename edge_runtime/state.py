"""Typed application state shared by the composition root and the routes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from edge_runtime import metrics
from edge_runtime.api.urlfetch import UrlPolicy
from edge_runtime.engine import Predictor
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.settings import Settings

if TYPE_CHECKING:
    from edge_runtime.events.dispatcher import Dispatcher
    from edge_runtime.iotedge.hub import HubClient
    from edge_runtime.sources.sampler import CameraSampler


class ModelSlot:
    """The predictor in service. Requests take a reference once, so a swap never cuts one short."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.error: str | None = None

    def set(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.error = None
        spec = predictor.spec
        metrics.MODEL_INFO.clear()
        metrics.MODEL_INFO.labels(
            spec.model_id,
            spec.sha1,
            spec.task.value,
            spec.domain,
            predictor.device,
            predictor.plan.fallback_from or "",
        ).set(1)
        metrics.MODEL_READY.set(1)


@dataclass(frozen=True, slots=True)
class Capacity:
    workers: int
    max_inflight: int


SETTINGS = web.AppKey("settings", Settings)
MODEL = web.AppKey("model", ModelSlot)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
CAPACITY = web.AppKey("capacity", Capacity)
URL_POLICY = web.AppKey("url_policy", UrlPolicy)
INFLIGHT = web.AppKey("inflight", list)  # [count]: a mutable cell the loop alone touches


class Pipeline:
    """Camera samplers, snapshots and the event dispatcher (filled by their cleanup contexts)."""

    def __init__(self) -> None:
        self.samplers: list[CameraSampler] = []
        self.snapshots: SnapshotStore | None = None
        self.dispatcher: Dispatcher | None = None
        self.hub: HubClient | None = None

    def camera_statuses(self) -> dict[str, dict[str, object]]:
        return {s.capture.settings.id: s.capture.status().to_dict() for s in self.samplers}

    def sink_statuses(self) -> dict[str, object]:
        if self.dispatcher is None:
            return {}
        return {sink.name: dict(sink.status()) for sink in self.dispatcher.sinks}


PIPELINE = web.AppKey("pipeline", Pipeline)
