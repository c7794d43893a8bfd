"""Frozen value objects that cross stage boundaries (decode -> preprocess -> backend -> postprocess)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


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

    def to_dict(self) -> dict[str, float]:
        """As events, verdicts and the history give it (6 decimals: a micro-fraction of the frame)."""
        return {
            "left": round(self.left, 6),
            "top": round(self.top, 6),
            "width": round(self.width, 6),
            "height": round(self.height, 6),
        }


@dataclass(frozen=True, slots=True)
class Prediction:
    tag_name: str
    probability: float
    # Detection: the class index (the container's integer tagId). Classification: None (tagId "").
    tag_id: int | None = None
    bounding_box: BoundingBox | None = None

    def to_dict(self) -> dict[str, object]:
        """As the history and verdicts keep it (the HTTP API's shape is api/schemas.py's)."""
        box = self.bounding_box
        return {"tag": self.tag_name, "probability": round(self.probability, 6), "box": box and box.to_dict()}


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


class Frame:
    """One decoded camera frame and when it was captured (wall clock: the stream's own where the camera
    gives one, else when it was read).

    `image` (OpenCV BGR, H x W x 3) is converted from the decoder's picture the first time someone
    asks, once, and kept: a capture thread hands every decoded frame over, and only the sampled ones
    are ever converted. Safe to read from several threads (the conversion runs once, under a lock).
    """

    __slots__ = ("_convert", "_image", "_lock", "captured_at", "clock", "sequence", "settled")

    def __init__(
        self,
        image: NDArray[np.uint8] | Callable[[], NDArray[np.uint8]],
        captured_at: float,
        sequence: int,
        clock: str = "arrival",
        settled: bool = True,
    ) -> None:
        self.captured_at = captured_at
        self.sequence = sequence
        self.clock = clock  # stream_clock.ClockSource: rtcp | pts | arrival
        self.settled = settled  # False: captured_at not yet trustworthy (a young pts anchor)
        self._lock = threading.Lock()
        if callable(image):
            self._convert: Callable[[], NDArray[np.uint8]] | None = image
            self._image: NDArray[np.uint8] | None = None
        else:
            self._convert, self._image = None, image

    @property
    def image(self) -> NDArray[np.uint8]:
        with self._lock:
            if self._image is None:
                assert self._convert is not None
                self._image, self._convert = self._convert(), None
            return self._image

    @property
    def converted(self) -> bool:
        return self._image is not None

    def __repr__(self) -> str:
        return (
            f"Frame(sequence={self.sequence}, captured_at={self.captured_at:.3f}, converted={self.converted})"
        )


@dataclass(frozen=True, slots=True)
class Roi:
    """A normalised rectangle of the frame, predicted on its own (the whole frame: FULL_FRAME)."""

    name: str
    x: float
    y: float
    width: float
    height: float

    def to_frame(self, box: BoundingBox) -> BoundingBox:
        """Map a box predicted on this ROI's crop back to full-frame fractions."""
        return BoundingBox(
            self.x + box.left * self.width,
            self.y + box.top * self.height,
            box.width * self.width,
            box.height * self.height,
        )

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the crop in a width x height frame, at least one pixel each way."""
        x0 = min(round(self.x * width), width - 1)
        y0 = min(round(self.y * height), height - 1)
        x1 = max(x0 + 1, round((self.x + self.width) * width))
        y1 = max(y0 + 1, round((self.y + self.height) * height))
        return x0, y0, min(x1, width), min(y1, height)


FULL_FRAME = Roi("full", 0.0, 0.0, 1.0, 1.0)


class EventKind(StrEnum):
    STARTED = "started"
    ENDED = "ended"
    VERDICT = "verdict"  # a station's answer for one part (stations/verdict.py)


class Record(Protocol):
    """What the delivery, the sinks and the history need of anything published: a defect Event or a
    station's Verdict (whose `camera` is the station and `tag` the verdict)."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> EventKind: ...

    @property
    def camera(self) -> str: ...

    @property
    def roi(self) -> str: ...

    @property
    def tag(self) -> str: ...

    @property
    def captured_at(self) -> float: ...

    def to_dict(self) -> dict[str, object]: ...

    def detail_dict(self) -> dict[str, object]: ...


@dataclass(frozen=True, slots=True)
class Event:
    """A defect episode starting or ending on one camera / ROI / tag."""

    id: str  # unique and sortable by time (ULID)
    kind: EventKind
    camera: str
    roi: str
    tag: str
    probability: float  # the highest probability seen in the episode so far
    boxes: tuple[BoundingBox, ...]  # full-frame fractions; empty for classification
    captured_at: float  # capture time of the frame that decided the event
    model_id: str
    model_sha1: str
    snapshot: str | None = None  # URL path of the snapshot, e.g. /snapshots/<id>.jpg
    # Everything the model said about the ROI in the deciding frame (full-frame boxes), for people
    # reviewing the event (the history); sinks get to_dict(), without it.
    predictions: tuple[Prediction, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "camera": self.camera,
            "roi": self.roi,
            "tag": self.tag,
            "probability": round(self.probability, 8),
            "boxes": [b.to_dict() for b in self.boxes],
            "captured_at": datetime.fromtimestamp(self.captured_at, UTC).isoformat(timespec="milliseconds"),
            "model": {"id": self.model_id, "sha1": self.model_sha1},
            "snapshot": self.snapshot,
        }

    def detail_dict(self) -> dict[str, object]:
        """to_dict() with the ROI's whole prediction (the event history's record)."""
        return self.to_dict() | {"predictions": [p.to_dict() for p in self.predictions]}
