"""The predictor in service, swapped atomically on a model update."""

from __future__ import annotations

from edge_runtime import metrics
from edge_runtime.engine import Predictor


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
