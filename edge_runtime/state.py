"""Typed application state shared by the composition root and the routes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from edge_runtime import metrics
from edge_runtime.api.urlfetch import UrlPolicy
from edge_runtime.engine import Predictor
from edge_runtime.settings import Settings


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
