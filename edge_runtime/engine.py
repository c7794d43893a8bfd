"""The Predictor: decode -> preprocess -> backend.run -> postprocess, with per-stage timings.

The HTTP routes and the camera sampler both call this; there is one inference path. It is
synchronous and thread-safe: callers run it in their executor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from edge_runtime.backends.base import Backend
from edge_runtime.backends.providers import (
    Availability,
    BackendKind,
    DeviceRequest,
    ExecutionPlan,
    ModelNeeds,
    detect_availability,
    select_provider,
)
from edge_runtime.domain import PredictionResult, StageTimings
from edge_runtime.errors import InferenceError, ModelLoadError
from edge_runtime.model.imaging import ImageLimits, decode_image, image_from_bgr
from edge_runtime.model.loader import LoadOptions, load_spec
from edge_runtime.model.postprocess import postprocess
from edge_runtime.model.preprocess import preprocess
from edge_runtime.model.spec import ModelSpec, Postprocess

log = logging.getLogger(__name__)

WARMUP_SIZE = (640, 480)


@dataclass(frozen=True, slots=True)
class PredictorOptions:
    device: DeviceRequest = field(default_factory=lambda: DeviceRequest("auto"))
    threads: int = 0  # backend intra-op threads; 0 = the backend's default
    load: LoadOptions = field(default_factory=LoadOptions)
    limits: ImageLimits = field(default_factory=ImageLimits)


def create_backend(spec: ModelSpec, plan: ExecutionPlan, threads: int) -> Backend:
    if plan.backend is BackendKind.OPENVINO:
        from edge_runtime.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(spec.model_path, plan, threads)
    from edge_runtime.backends.onnx import OnnxBackend

    return OnnxBackend(spec.model_path, plan, threads)


class Predictor:
    def __init__(self, spec: ModelSpec, plan: ExecutionPlan, backend: Backend, limits: ImageLimits) -> None:
        self.spec = spec
        self.plan = plan
        self.backend = backend
        self.limits = limits
        self.warmup_seconds = 0.0

    @classmethod
    def load(
        cls, path: Path, options: PredictorOptions | None = None, availability: Availability | None = None
    ) -> Predictor:
        """Load an export, pick the device, build the backend and warm it up (ready to serve)."""
        options = options or PredictorOptions()
        spec = load_spec(Path(path), options.load)
        needs = ModelNeeds(spec.format, openvino_compatible=spec.postprocess is not Postprocess.ZIPMAP)
        plan = select_provider(options.device, availability or detect_availability(), needs)
        if plan.fallback_from:
            log.warning("device %s unavailable, using %s: %s", plan.fallback_from, plan.device, plan.reason)
        backend = create_backend(spec, plan, options.threads)
        predictor = cls(spec, plan, backend, options.limits)
        predictor.warm_up()
        log.info(
            "model %s (%s, %s, %d labels) on %s (%s); warm-up %.1f ms",
            spec.model_path,
            spec.task.value,
            spec.postprocess.value,
            len(spec.labels),
            backend.device,
            plan.reason,
            predictor.warmup_seconds * 1000,
        )
        return predictor

    @property
    def device(self) -> str:
        return self.backend.device

    def warm_up(self) -> float:
        """First run allocates kernels; it also checks dynamic output sizes against the labels."""
        image = Image.new("RGB", WARMUP_SIZE, (128, 128, 128))
        start = time.perf_counter()
        try:
            self.predict_image(image)
        except InferenceError as exc:
            raise ModelLoadError(self.spec.model_path, f"warm-up run failed: {exc}") from exc
        self.warmup_seconds = time.perf_counter() - start
        return self.warmup_seconds

    def predict_bytes(self, data: bytes) -> PredictionResult:
        start = time.perf_counter()
        image = decode_image(data, self.limits)
        return self.predict_image(image, decode_seconds=time.perf_counter() - start)

    def predict_frame(self, frame: NDArray[np.uint8]) -> PredictionResult:
        start = time.perf_counter()
        image = image_from_bgr(frame)
        return self.predict_image(image, decode_seconds=time.perf_counter() - start)

    def predict_image(self, image: Image.Image, decode_seconds: float = 0.0) -> PredictionResult:
        t0 = time.perf_counter()
        tensor = preprocess(image, self.spec.preprocess)
        t1 = time.perf_counter()
        outputs: Any = self.backend.run(tensor)
        t2 = time.perf_counter()
        predictions = postprocess(outputs, self.spec)
        t3 = time.perf_counter()
        return PredictionResult(
            task=self.spec.task,
            predictions=predictions,
            image_size=image.size,
            timings=StageTimings(decode_seconds, t1 - t0, t2 - t1, t3 - t2),
        )

    def close(self) -> None:
        self.backend.close()
