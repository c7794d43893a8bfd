"""What each camera's model saw last: the newest inspected frame, its predictions per ROI and the rule
state, for people watching (the operator page). Latest wins; nothing here is durable or delivered.

    sampler (after each sample) -> Inspections.put(camera, Inspection)   readers: changes() (coalesced),
                                                                          get(camera)

Holding the frame keeps what is drawn and the picture it is drawn on the same moment; one frame per
camera, already converted (the model read it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from edge_runtime.domain import FULL_FRAME, BoundingBox, Frame, Prediction, Roi
from edge_runtime.events.rules import RuleState
from edge_runtime.latest import Latest
from edge_runtime.status import iso

MAX_SHOWN = 20  # predictions kept per ROI (highest first): enough to draw, bounded for detectors
MIN_SHOWN_PROBABILITY = 0.05  # below this a detector's boxes are noise to a person


def _box(box: BoundingBox) -> dict[str, float]:
    return {
        "left": round(box.left, 5),
        "top": round(box.top, 5),
        "width": round(box.width, 5),
        "height": round(box.height, 5),
    }


@dataclass(frozen=True, slots=True)
class RoiResult:
    roi: Roi
    predictions: tuple[Prediction, ...]  # full-frame boxes, as the model gave them

    def shown(self) -> list[Prediction]:
        """What a person is shown, highest probability first: ranked only when someone watches (every
        sample puts an inspection; few are ever read)."""
        ranked = sorted(self.predictions, key=lambda p: p.probability, reverse=True)
        # Classification: the top few whatever their probability (the answer is the ranking).
        shown = [p for p in ranked if p.bounding_box is None or p.probability >= MIN_SHOWN_PROBABILITY]
        return shown[:MAX_SHOWN] if shown and shown[0].bounding_box else shown[:5]

    def to_dict(self) -> dict[str, object]:
        r = self.roi
        return {
            "name": r.name,
            "rect": None if r == FULL_FRAME else _box(BoundingBox(r.x, r.y, r.width, r.height)),
            "predictions": [
                {
                    "tag": p.tag_name,
                    "probability": round(p.probability, 4),
                    "box": None if p.bounding_box is None else _box(p.bounding_box),
                }
                for p in self.shown()
            ],
        }


@dataclass(frozen=True, slots=True)
class Inspection:
    camera: str
    sequence: int  # grows with every inspection, across cameras and restarts: names the frame for caches
    frame: Frame
    rois: tuple[RoiResult, ...]
    rules: tuple[RuleState, ...]
    model_id: str

    def to_dict(self) -> dict[str, object]:
        # The model read the frame, so it is converted: its size costs nothing.
        height, width = self.frame.image.shape[:2]
        return {
            "camera": self.camera,
            "sequence": self.sequence,
            "captured_at": iso(self.frame.captured_at),
            "size": {"width": width, "height": height},
            "model": self.model_id,
            "rois": [r.to_dict() for r in self.rois],
            "rules": [s.to_dict() for s in self.rules],
        }


class Inspections(Latest[str, Inspection]):
    """The newest inspection per camera (key: the camera id)."""

    def __init__(self) -> None:
        super().__init__()
        # One counter for all: a restarted camera's first frame never reuses a cached frame's name.
        self._sequence = itertools.count(1)

    def next_sequence(self) -> int:
        return next(self._sequence)
