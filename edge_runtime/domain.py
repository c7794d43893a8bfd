"""Frozen value objects that cross stage boundaries (decode -> preprocess -> backend -> postprocess)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Task(StrEnum):
    CLASSIFICATION = "classification"
    DETECTION = "detection"


@dataclass(frozen=True, slots=True)
class BoundingBox:
    """Normalised to the original image: every value is a fraction of its width or height."""

    left: float
    top: float
    width: float
    height: float

    @property
    def area(self) -> float:
        return self.width * self.height


@dataclass(frozen=True, slots=True)
class Prediction:
    tag_name: str
    probability: float
    # Detection: the class index (the container's integer tagId). Classification: None (tagId "").
    tag_id: int | None = None
    bounding_box: BoundingBox | None = None


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Seconds spent in each stage of one prediction."""

    decode: float = 0.0
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.preprocess + self.inference + self.postprocess


@dataclass(frozen=True, slots=True)
class PredictionResult:
    task: Task
    predictions: tuple[Prediction, ...]
    image_size: tuple[int, int]  # (width, height) of the original image after EXIF orientation
    timings: StageTimings
