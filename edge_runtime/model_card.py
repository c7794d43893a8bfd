"""The model card: one frozen description of a loaded model, rendered by `inspect`, `/health/ready` and
the model status.

`ModelCard.of(predictor)` takes what the export, the device plan and the warm-up decided; `to_dict()` is
`edge-runtime inspect`'s card and `readiness()` the "model" object of `/health/ready`. Detecting what
devices the machine has imports the runtimes, so it is done only when asked (`available`), never per
health request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_runtime.backends.providers import Availability
from edge_runtime.domain import Task
from edge_runtime.model.layouts import DECODERS
from edge_runtime.model.spec import DetectionParams, ModelFormat, Postprocess, TensorInfo

if TYPE_CHECKING:
    from edge_runtime.engine import Predictor


@dataclass(frozen=True, slots=True)
class ModelCard:
    id: str  # the iteration id, or the first 12 hex digits of the SHA-1
    path: str  # what the operator named (folder or .zip)
    format: ModelFormat
    task: Task
    domain: str
    flavour: str | None
    postprocess: Postprocess
    decoder: str  # what the postprocessing does, in words (layouts.DECODERS)
    labels: tuple[str, ...]
    sha1: str
    iteration_id: str
    input: TensorInfo
    layout: str  # "NCHW" | "NHWC"
    colour: str  # "RGB" | "BGR"
    value_range: str  # "0..1" | "0..255"
    outputs: tuple[TensorInfo, ...]
    preprocessing: str  # the recipe in words (PreprocessSpec.describe)
    detection: DetectionParams | None  # None for classifiers
    runtime: str  # the backend that runs it: "onnxruntime", "openvino", "litert"
    device: str
    device_reason: str
    fallback_from: str | None
    warmup_ms: float
    notes: tuple[str, ...]
    available: Availability | None = None  # what this machine offers, when asked for

    @classmethod
    def of(cls, predictor: Predictor, available: Availability | None = None) -> ModelCard:
        spec, plan, recipe = predictor.spec, predictor.plan, predictor.spec.preprocess
        return cls(
            id=spec.model_id,
            path=str(spec.shown_path),
            format=spec.format,
            task=spec.task,
            domain=spec.domain,
            flavour=spec.flavour,
            postprocess=spec.postprocess,
            decoder=_decoder(predictor),
            labels=spec.labels,
            sha1=spec.sha1,
            iteration_id=spec.iteration_id,
            input=spec.input,
            layout="NCHW" if recipe.nchw else "NHWC",
            colour="BGR" if recipe.bgr else "RGB",
            value_range="0..255" if recipe.scale == 1.0 else "0..1",
            outputs=spec.outputs,
            preprocessing=recipe.describe(),
            detection=None if spec.task is Task.CLASSIFICATION else spec.detection,
            runtime=plan.backend.value,
            device=predictor.device,
            device_reason=plan.reason,
            fallback_from=plan.fallback_from,
            warmup_ms=round(predictor.warmup_seconds * 1000, 2),
            notes=spec.notes,
            available=available,
        )

    def to_dict(self) -> dict[str, object]:
        """The full card, as `edge-runtime inspect` prints it (JSON-ready; key order is the output's)."""
        return {
            "model": self.path,
            "format": self.format.value,
            "task": self.task.value,
            "domain": self.domain,
            "flavour": self.flavour,
            "postprocess": self.postprocess.value,
            "decoder": self.decoder,
            "labels": list(self.labels),
            "sha1": self.sha1,
            "iteration_id": self.iteration_id,
            "input": {
                **_tensor(self.input),
                "layout": self.layout,
                "colour": self.colour,
                "range": self.value_range,
            },
            "outputs": [_tensor(output) for output in self.outputs],
            "preprocessing": self.preprocessing,
            "detection": None if self.detection is None else _detection(self.detection),
            "devices_available": None
            if self.available is None
            else {
                "onnxruntime": list(self.available.ort_providers),
                "openvino": list(self.available.openvino_devices),
            },
            "runtime": self.runtime,
            "device": self.device,
            "device_reason": self.device_reason,
            "fallback_from": self.fallback_from,
            "warmup_ms": self.warmup_ms,
            "notes": list(self.notes),
        }

    def readiness(self) -> dict[str, object]:
        """The short card `/health/ready` answers under "model"."""
        return {
            "id": self.id,
            "sha1": self.sha1,
            "path": self.path,
            "task": self.task.value,
            "domain": self.domain,
            "flavour": self.flavour,
            "postprocess": self.postprocess.value,
            "labels": list(self.labels),
            "device": self.device,
            "device_reason": self.device_reason,
            "fallback_from": self.fallback_from,
            "warmup_ms": self.warmup_ms,
        }


def _decoder(predictor: Predictor) -> str:
    spec = predictor.spec
    words = DECODERS[spec.postprocess]
    if spec.postprocess is Postprocess.LOGITS_MULTILABEL:
        words += f" ({spec.detection.prob_threshold})"
    if spec.decoder_outputs:
        words += f"; reads {', '.join(spec.decoder_outputs)}"
    return words


def _tensor(tensor: TensorInfo) -> dict[str, object]:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype}


def _detection(params: DetectionParams) -> dict[str, object]:
    return {
        "prob_threshold": params.prob_threshold,
        "iou_threshold": params.iou_threshold,
        "max_detections": params.max_detections,
        "anchors": [list(anchor) for anchor in params.anchors],
    }
