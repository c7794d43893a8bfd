"""The Predictor: decode -> preprocess -> backend.run -> postprocess, with per-stage timings.

The HTTP routes and the camera sampler both call this; there is one inference path. It is
synchronous and thread-safe: callers run it in their executor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from edge_runtime import metrics
from edge_runtime.backends.base import BACKENDS, Backend
from edge_runtime.backends.providers import (
    Availability,
    DeviceKind,
    DeviceRequest,
    ExecutionPlan,
    ModelNeeds,
    detect_availability,
    select_provider,
)
from edge_runtime.domain import PredictionResult, StageTimings
from edge_runtime.errors import InferenceError, ModelLoadError
from edge_runtime.model.export import export_folder
from edge_runtime.model.imaging import ImageLimits, decode_image, image_from_bgr, shrink_frame, shrink_image
from edge_runtime.model.letterbox import InputGeometry
from edge_runtime.model.loader import LoadOptions, load_spec
from edge_runtime.model.postprocess import postprocess
from edge_runtime.model.preprocess import check_resize, fast_size, prepare, resize_sizes
from edge_runtime.model.spec import Fidelity, ModelSpec, Postprocess

log = logging.getLogger(__name__)

# Warm-up images: camera and phone shapes, both orientations, square and a long strip. A recipe whose
# tensor shape follows the image (pixel-count-align32) is run once per distinct shape these give, so a
# model that only runs at one size is refused at load instead of failing on the first real picture.
WARMUP_SIZES = ((640, 480), (480, 640), (1920, 1080), (1080, 1920), (512, 512), (2048, 512))
HEALTH_WINDOW = 20  # recent inferences judged for readiness


class InferenceHealth:
    """Outcomes of the recent inferences: a model that fails on real inputs shows in readiness."""

    def __init__(self, window: int = HEALTH_WINDOW, counted: bool = True) -> None:
        self._counted = counted  # warm-up probes are not inferences anyone asked for
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def record(self, ok: bool, error: str | None = None) -> None:
        if not ok and self._counted:
            metrics.INFERENCE_FAILURES.inc()
        with self._lock:
            self._outcomes.append(ok)
            if error is not None:
                self.last_error = error

    @property
    def recent_failures(self) -> tuple[int, int]:
        """(failed, judged) over the window."""
        with self._lock:
            return self._outcomes.count(False), len(self._outcomes)

    @property
    def failing(self) -> bool:
        """Half or more of the recent inferences failed (at least 3 judged)."""
        failed, judged = self.recent_failures
        return judged >= 3 and failed * 2 >= judged


@dataclass(frozen=True, slots=True)
class Prepared:
    """One input, decoded and preprocessed (on any thread), waiting for inference."""

    tensor: NDArray[np.floating[Any]]
    geometry: InputGeometry | None
    image_size: tuple[int, int]  # the picture's (w, h) after EXIF orientation
    decode_seconds: float
    preprocess_seconds: float


def batchable(spec: ModelSpec, backend: Backend) -> bool:
    """Whether several inputs may run as one batch: an ONNX Runtime session whose input and every
    output have a dynamic first dimension (fixed-batch, ZipMap and TFLite models run one by one)."""
    from edge_runtime.backends.onnx import OnnxBackend

    dynamic = [t.shape[:1] for t in (spec.inputs[:1] + spec.outputs)]
    return (
        isinstance(backend, OnnxBackend)
        and spec.preprocess.batch == 1
        and all(len(d) == 1 and not isinstance(d[0], int) for d in dynamic)
        and all(not t.dtype.startswith("seq") for t in spec.outputs)
    )


def _one_of(outputs: Mapping[str, Any], n: int) -> dict[str, Any]:
    """Item n of a batch's outputs, each keeping its batch axis (as a batch of one)."""
    return {name: value[n : n + 1] for name, value in outputs.items()}


@dataclass(frozen=True, slots=True)
class PredictorOptions:
    device: DeviceRequest = field(default_factory=lambda: DeviceRequest(DeviceKind.AUTO))
    threads: int = 0  # backend intra-op threads; 0 = the backend's default
    load: LoadOptions = field(default_factory=LoadOptions)
    limits: ImageLimits = field(default_factory=ImageLimits)


def create_backend(spec: ModelSpec, plan: ExecutionPlan, threads: int) -> Backend:
    """The backend for the plan's runtime, from backends/base.BACKENDS."""
    return BACKENDS[plan.backend](spec.model_path, plan, threads)


class Predictor:
    def __init__(self, spec: ModelSpec, plan: ExecutionPlan, backend: Backend, limits: ImageLimits) -> None:
        self.spec = spec
        self.plan = plan
        self.backend = backend
        self.limits = limits
        self.warmup_seconds = 0.0
        self.health = InferenceHealth()
        self.shape_failures: dict[str, str] = {}  # warm-up image size -> the error, for readiness
        self.batchable = batchable(spec, backend)  # the micro-batcher asks on every input

    @classmethod
    def load(
        cls, path: Path, options: PredictorOptions | None = None, availability: Availability | None = None
    ) -> Predictor:
        """Load an export, pick the device, build the backend and warm it up (ready to serve)."""
        options = options or PredictorOptions()
        with export_folder(Path(path), options.load.extract_dir) as root:
            spec = load_spec(root, options.load, source=Path(path))
            needs = ModelNeeds(spec.format, openvino_compatible=spec.postprocess is not Postprocess.ZIPMAP)
            plan = select_provider(options.device, availability or detect_availability(), needs)
            if plan.fallback_from:
                log.warning("device %s missing, using %s: %s", plan.fallback_from, plan.device, plan.reason)
            backend = create_backend(spec, plan, options.threads)
            predictor = cls(spec, plan, backend, options.limits)
            predictor.warm_up()
        log.info(
            "model %s (%s, %s, %d labels) on %s (%s); warm-up %.1f ms",
            spec.shown_path,
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
        """First run allocates kernels and checks dynamic output sizes against the labels: it must pass.
        Then every other input shape the recipe makes of common pictures is tried: a model that fails
        there still loads (a line camera has one size), but says so in `shape_failures` and the log."""
        start = time.perf_counter()
        self.health = InferenceHealth(counted=False)
        first, *others = self.warmup_sizes()
        try:
            self.predict_image(Image.new("RGB", first, (128, 128, 128)))
        except InferenceError as exc:
            raise ModelLoadError(self.spec.model_path, f"warm-up run failed: {exc}") from exc
        self.shape_failures = {}
        for size in others:
            try:
                self.predict_image(Image.new("RGB", size, (128, 128, 128)))
            except InferenceError as exc:
                self.shape_failures[f"{size[0]}x{size[1]}"] = str(exc)
        if self.shape_failures:
            log.warning(
                "model %s fails on images of %s: such requests will answer 500 ModelInferenceFailed",
                self.spec.model_path,
                ", ".join(self.shape_failures),
            )
        self.warmup_seconds = time.perf_counter() - start
        self.health = InferenceHealth()  # judged on real inputs only
        return self.warmup_seconds

    def warmup_sizes(self) -> list[tuple[int, int]]:
        """One image size per distinct tensor shape the recipe makes of WARMUP_SIZES."""
        by_shape: dict[tuple[int, int], tuple[int, int]] = {}
        recipe = self.spec.preprocess
        for size in WARMUP_SIZES:
            shape = recipe.input_size if recipe.input_size else resize_sizes(*size, recipe)[-1]
            by_shape.setdefault(shape, size)
        return list(by_shape.values())

    def predict_bytes(self, data: bytes) -> PredictionResult:
        return self.infer([self.prepare_bytes(data)])[0]

    def predict_frame(self, frame: NDArray[np.uint8]) -> PredictionResult:
        return self.infer([self.prepare_frame(frame)])[0]

    def predict_image(self, image: Image.Image, decode_seconds: float = 0.0) -> PredictionResult:
        self._check_resize(*image.size)
        return self.infer([self._prepare(image, decode_seconds, image.size)])[0]

    def prepare_bytes(self, data: bytes) -> Prepared:
        """Decode and preprocess an encoded image: the input tensor, ready for infer()."""
        start = time.perf_counter()
        full: list[tuple[int, int]] = []  # the picture's size before a reduced-scale decode

        def shrink(width: int, height: int) -> tuple[int, int] | None:
            full.append((width, height))
            return fast_size(width, height, self.spec.preprocess)

        fast = self.spec.preprocess.fidelity is Fidelity.FAST
        # The size was checked from the header already.
        image = decode_image(data, self.limits, self._check_resize, shrink if fast else None)
        size = full[0] if full else image.size
        if fast:  # what the decode could not shrink (not a JPEG, or not by a power of two)
            image = shrink_image(image, fast_size(*image.size, self.spec.preprocess))
        return self._prepare(image, time.perf_counter() - start, size)

    def prepare_frame(self, frame: NDArray[np.uint8]) -> Prepared:
        """A camera frame (OpenCV BGR) preprocessed: the input tensor, ready for infer()."""
        start = time.perf_counter()
        height, width = frame.shape[:2]
        self._check_resize(width, height)
        if self.spec.preprocess.fidelity is Fidelity.FAST:
            frame = shrink_frame(frame, fast_size(width, height, self.spec.preprocess))
        image = image_from_bgr(frame)
        return self._prepare(image, time.perf_counter() - start, (width, height))

    def _check_resize(self, width: int, height: int) -> None:
        check_resize(width, height, self.spec.preprocess, self.limits.max_resized_pixels)

    def _prepare(self, image: Image.Image, decode_seconds: float, image_size: tuple[int, int]) -> Prepared:
        start = time.perf_counter()
        tensor, geometry = prepare(image, self.spec.preprocess)  # geometry: where the picture lies in it
        return Prepared(tensor, geometry, image_size, decode_seconds, time.perf_counter() - start)

    def infer(self, items: Sequence[Prepared]) -> list[PredictionResult]:
        """Run prepared inputs, as one batch when there are several (only when `batchable`), and
        postprocess each; the batch's inference time is shared out evenly."""
        t1 = time.perf_counter()
        try:
            batch = items[0].tensor if len(items) == 1 else np.concatenate([i.tensor for i in items])
            outputs: Any = self.backend.run(batch)
            t2 = time.perf_counter()
            each = [outputs] if len(items) == 1 else [_one_of(outputs, n) for n in range(len(items))]
            results = []
            for item, output in zip(items, each, strict=True):
                t3 = time.perf_counter()
                predictions = postprocess(output, self.spec, item.geometry)
                timings = StageTimings(
                    item.decode_seconds,
                    item.preprocess_seconds,
                    (t2 - t1) / len(items),
                    time.perf_counter() - t3,
                )
                results.append(PredictionResult(self.spec.task, predictions, item.image_size, timings))
        except InferenceError as exc:
            self.health.record(False, str(exc))
            raise
        except Exception as exc:  # outputs the postprocessing cannot use: the model's fault, not the image's
            error = f"the model's outputs cannot be used: {type(exc).__name__}: {exc}"
            self.health.record(False, error)
            raise InferenceError(error) from exc
        for _ in items:
            self.health.record(True)
        return results

    def close(self) -> None:
        self.backend.close()
