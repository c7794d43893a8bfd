"""Event snapshots: the frame as JPEG with the boxes drawn, in a directory capped by count and bytes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_runtime.domain import BoundingBox
from edge_runtime.events.ids import EVENT_ID_PATTERN

log = logging.getLogger(__name__)

BOX_COLOUR = (0, 0, 255)  # BGR red


class SnapshotStore:
    def __init__(self, directory: Path, max_count: int, max_bytes: int) -> None:
        self.directory = directory
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # saves come from executor threads
        directory.mkdir(parents=True, exist_ok=True)

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

    def save(self, event_id: str, frame: NDArray[np.uint8], boxes: Sequence[BoundingBox], label: str) -> Path:
        import cv2

        image = frame.copy()
        height, width = image.shape[:2]
        for box in boxes:
            p0 = (int(box.left * width), int(box.top * height))
            p1 = (int((box.left + box.width) * width), int((box.top + box.height) * height))
            cv2.rectangle(image, p0, p1, BOX_COLOUR, 2)
            cv2.putText(
                image, label, (p0[0], max(12, p0[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, BOX_COLOUR, 1
            )
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
