"""The InferenceService part: the one way into inference, for HTTP requests, camera samplers and
anything later (triggers, the web UI's test upload).

    caller -> slot() (HTTP: a bounded count in flight, a bounded wait) -> predict_*()
           -> the predictor in service, taken once per call (a swap never cuts a call short)
           -> the inference executor (one pool: HTTP and cameras share the cores)
           -> metrics per caller (edge_runtime_predictions_total{source}, stage seconds)

Cameras are not admitted through slot(): each camera has at most one prediction in flight and
samples at its own fps, so their load is bounded by configuration. The seam for later work is here:
a micro-batcher (group calls of equal input shape for a few ms) and the choice of where preprocessing
runs belong inside predict_*; callers do not change.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

import numpy as np
from numpy.typing import NDArray

from edge_runtime import metrics
from edge_runtime.domain import FULL_FRAME, Frame, Prediction, PredictionResult, Roi
from edge_runtime.engine import Predictor
from edge_runtime.errors import ModelNotReady, Overloaded
from edge_runtime.inference.batcher import MicroBatcher
from edge_runtime.inference.models import ModelService
from edge_runtime.settings import ServerSettings

__all__ = ["Answer", "Capacity", "InferenceService", "ModelNotReady", "Overloaded", "predict_rois"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Capacity:
    workers: int  # inference threads
    max_inflight: int  # admitted HTTP requests (waiting for a worker or running)
    wait_s: float  # how long a request may wait for a slot before it is refused
    batch_window_s: float = 0.0  # micro-batching (batcher.py): 0 = off
    max_batch: int = 8

    @classmethod
    def of(cls, server: ServerSettings) -> Capacity:
        workers = server.inference_workers or os.cpu_count() or 1
        return cls(
            workers,
            server.max_inflight or 4 * workers,
            server.admission_wait_s,
            server.batch_window_ms / 1000,
            server.max_batch,
        )


@dataclass(frozen=True, slots=True)
class Answer:
    result: PredictionResult
    predictor: Predictor  # the one that answered (its spec names the model)


RoiPrediction = tuple[Roi, tuple[Prediction, ...]]
RoiPredictions = list[RoiPrediction]


class FramePredictor(Protocol):
    """What predicting camera frames needs of a predictor (engine.Predictor is one)."""

    def predict_frame(self, frame: NDArray[np.uint8]) -> PredictionResult: ...


def roi_crop(frame: Frame, roi: Roi) -> NDArray[np.uint8]:
    """The ROI's pixels (the frame is converted here, off the loop, once for all its ROIs)."""
    image = frame.image
    height, width = image.shape[:2]
    x0, y0, x1, y1 = roi.pixels(width, height)
    return image[y0:y1, x0:x1]


def in_frame(roi: Roi, result: PredictionResult) -> RoiPrediction:
    """A ROI's predictions with boxes in full-frame fractions."""
    metrics.observe_prediction("camera", result.timings)
    mapped = tuple(
        p
        if p.bounding_box is None
        else Prediction(p.tag_name, p.probability, p.tag_id, roi.to_frame(p.bounding_box))
        for p in result.predictions
    )
    return roi, mapped


def predict_roi(predictor: FramePredictor, frame: Frame, roi: Roi) -> RoiPrediction:
    """Predict one ROI crop; boxes come back in full-frame fractions."""
    return in_frame(roi, predictor.predict_frame(roi_crop(frame, roi)))


def predict_rois(predictor: FramePredictor, frame: Frame, rois: tuple[Roi, ...]) -> RoiPredictions:
    """Predict each ROI crop in turn; boxes come back in full-frame fractions."""
    return [predict_roi(predictor, frame, roi) for roi in rois or (FULL_FRAME,)]


class InferenceService:
    """Touched on the event loop only."""

    def __init__(self, models: ModelService, capacity: Capacity) -> None:
        self.models = models
        self.capacity = capacity
        self._executor = ThreadPoolExecutor(capacity.workers, thread_name_prefix="inference")
        self._slots = asyncio.Semaphore(capacity.max_inflight)
        self._batcher = (
            MicroBatcher(self._executor, capacity.batch_window_s, capacity.max_batch)
            if capacity.batch_window_s > 0
            else None
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Off the loop: predictions in flight finish (the shutdown waits for them) while it runs on.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    @property
    def serving(self) -> Predictor | None:
        return self.models.predictor

    def predictor(self) -> Predictor:
        """The predictor in service; ModelNotReady while there is none."""
        predictor = self.models.predictor
        if predictor is None:
            raise ModelNotReady(self.models.error)
        return predictor

    async def first_predictor(self) -> Predictor:
        """The predictor in service, once there is one (pushed: the model service's `ready`)."""
        await self.models.ready.wait()
        return self.predictor()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """An admitted request: waits up to capacity.wait_s in arrival order, else Overloaded."""
        try:
            async with asyncio.timeout(self.capacity.wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded(f"all {self.capacity.max_inflight} inference slots are busy") from None
        metrics.HTTP_INFLIGHT.inc()
        try:
            yield
        finally:
            self._slots.release()
            metrics.HTTP_INFLIGHT.dec()

    async def predict_bytes(self, data: bytes, caller: str = "http") -> Answer:
        """An encoded image (HTTP upload or download) -> predictions; image errors raise ImageError."""
        predictor = self.predictor()
        loop = asyncio.get_running_loop()
        if self._batcher is not None and predictor.batchable:
            prepared = await loop.run_in_executor(self._executor, predictor.prepare_bytes, data)
            result = await self._batcher.infer(predictor, prepared)
        else:
            result = await loop.run_in_executor(self._executor, predictor.predict_bytes, data)
        metrics.observe_prediction(caller, result.timings)
        return Answer(result, predictor)

    async def predict_rois(
        self, frame: Frame, rois: tuple[Roi, ...], predictor: Predictor | None = None
    ) -> RoiPredictions:
        """A camera frame -> predictions per ROI (boxes in full-frame fractions). `predictor`: the one
        the caller took (a sampler keeps its rule state per predictor); default the one in service."""
        predictor = predictor or self.predictor()
        loop = asyncio.get_running_loop()
        rois = rois or (FULL_FRAME,)
        if self._batcher is not None and predictor.batchable:
            return list(await asyncio.gather(*(self._batched_roi(predictor, frame, roi) for roi in rois)))
        # Each ROI is its own job: a camera's ROIs run side by side on the pool, in order in the result.
        jobs = [loop.run_in_executor(self._executor, predict_roi, predictor, frame, roi) for roi in rois]
        return list(await asyncio.gather(*jobs))

    async def _batched_roi(
        self, predictor: Predictor, frame: Frame, roi: Roi
    ) -> tuple[Roi, tuple[Prediction, ...]]:
        assert self._batcher is not None
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(
            self._executor, lambda: predictor.prepare_frame(roi_crop(frame, roi))
        )
        return in_frame(roi, await self._batcher.infer(predictor, prepared))

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        """CPU work that belongs with inference (snapshot encoding): the same bounded pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)
