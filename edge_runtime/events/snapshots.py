"""Event snapshots: the frame as JPEG with what decided the event drawn, in a directory capped by count
and bytes.

Drawn for a person: the ROI outline, one box per cluster of overlapping boxes (a detector's neighbouring
cells give several boxes for one defect), one label per box, and a banner with the event (kind, tag,
probability). An `ended` snapshot shows the frame as it is now, without the boxes of the defect that left.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_runtime.domain import BoundingBox
from edge_runtime.events.ids import EVENT_ID_PATTERN

log = logging.getLogger(__name__)

BOX_COLOUR = (0, 0, 255)  # BGR red
ROI_COLOUR = (255, 200, 0)  # BGR light blue
TEXT_COLOUR = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class Drawing:
    """What a snapshot shows besides the frame."""

    kind: str  # started | ended | ...
    tag: str
    probability: float
    boxes: tuple[BoundingBox, ...] = ()  # full-frame fractions; none for an `ended` event
    roi: BoundingBox | None = None  # full-frame fractions; None = the whole frame
    roi_name: str = ""


def merge_overlapping(boxes: Sequence[BoundingBox]) -> list[BoundingBox]:
    """Boxes that overlap or nearly touch become their union, until none do."""
    merged = list(boxes)
    i = 0
    while i < len(merged):
        a = merged[i]
        for j in range(i + 1, len(merged)):
            b = merged[j]
            if _touch(a, b):
                left, top = min(a.left, b.left), min(a.top, b.top)
                right = max(a.left + a.width, b.left + b.width)
                bottom = max(a.top + a.height, b.top + b.height)
                merged[i] = BoundingBox(left, top, right - left, bottom - top)
                del merged[j]
                i = 0  # the union may now touch a box already passed over
                break
        else:
            i += 1  # nothing touches this one any more
    return merged


def _touch(a: BoundingBox, b: BoundingBox, slack: float = 0.25) -> bool:
    """Overlapping, or apart by less than `slack` of the smaller box (a detector's neighbouring cells)."""
    gap_x = slack * min(a.width, b.width)
    gap_y = slack * min(a.height, b.height)
    return (
        a.left <= b.left + b.width + gap_x
        and b.left <= a.left + a.width + gap_x
        and a.top <= b.top + b.height + gap_y
        and b.top <= a.top + a.height + gap_y
    )


def render(frame: NDArray[np.uint8], drawing: Drawing) -> NDArray[np.uint8]:
    import cv2

    image = frame.copy()
    height, width = image.shape[:2]
    scale = max(0.5, min(width, height) / 720)  # text and lines readable from VGA to 4K
    thick = max(2, round(2 * scale))

    def px(box: BoundingBox) -> tuple[tuple[int, int], tuple[int, int]]:
        return (
            (round(box.left * width), round(box.top * height)),
            (round((box.left + box.width) * width) - 1, round((box.top + box.height) * height) - 1),
        )

    def label(text: str, at: tuple[int, int], colour: tuple[int, int, int]) -> None:
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thick)
        x = min(max(0, at[0]), max(0, width - w - 4))
        y = min(max(h + base + 4, at[1]), height - 1)
        cv2.rectangle(image, (x, y - h - base - 4), (x + w + 4, y), colour, cv2.FILLED)
        cv2.putText(
            image, text, (x + 2, y - base - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, TEXT_COLOUR, thick
        )

    if drawing.roi is not None:
        p0, p1 = px(drawing.roi)
        cv2.rectangle(image, p0, p1, ROI_COLOUR, thick)
        label(drawing.roi_name or "roi", (p0[0], p0[1] + round(24 * scale)), ROI_COLOUR)
    for box in merge_overlapping(drawing.boxes):
        p0, p1 = px(box)
        cv2.rectangle(image, p0, p1, BOX_COLOUR, thick)
        label(drawing.tag, (p0[0], p0[1] - thick), BOX_COLOUR)
    banner = f"{drawing.kind.upper()} {drawing.tag} p={drawing.probability:.2f}"
    label(banner, (0, round(30 * scale)), BOX_COLOUR if drawing.kind == "started" else (60, 60, 60))
    return image


class SnapshotStore:
    def __init__(
        self, directory: Path, max_count: int, max_bytes: int, public_url: str | None = None
    ) -> None:
        self.directory = directory
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.public_url = (public_url or "").rstrip("/")
        self._lock = threading.Lock()  # saves come from executor threads
        directory.mkdir(parents=True, exist_ok=True)

    def url_for(self, event_id: str) -> str:
        """The link an event carries: absolute when the server's public URL is configured."""
        return f"{self.public_url}/snapshots/{event_id}.jpg"

    def path_for(self, event_id: str) -> Path | None:
        if not EVENT_ID_PATTERN.fullmatch(event_id):
            return None
        path = self.directory / f"{event_id}.jpg"
        return path if path.is_file() else None

    def read(self, event_id: str) -> bytes | None:
        """The JPEG, or None once evicted by the caps."""
        path = self.path_for(event_id)
        try:
            return None if path is None else path.read_bytes()
        except FileNotFoundError:  # evicted between the check and the read
            return None

    def save(self, event_id: str, frame: NDArray[np.uint8], drawing: Drawing | None = None) -> Path:
        """`drawing` None: the plain frame (a snapshot asked for, not an event)."""
        import cv2

        image = frame if drawing is None else render(frame, drawing)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise OSError("JPEG encoding failed")
        path = self.directory / f"{event_id}.jpg"
        with self._lock:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(encoded.tobytes())
            tmp.replace(path)  # readers never see half a file
            self._enforce_caps()
        return path

    def _enforce_caps(self) -> None:
        files = sorted(self.directory.glob("*.jpg"))  # ULID names sort by time: oldest first
        sizes = [f.stat().st_size for f in files]
        total = sum(sizes)
        # The newest file always stays, even alone over max_bytes: its event already links to it.
        while len(files) > 1 and (len(files) > self.max_count or total > self.max_bytes):
            oldest = files.pop(0)
            total -= sizes.pop(0)
            oldest.unlink(missing_ok=True)
