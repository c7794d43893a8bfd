"""Latest-wins hand-over from a capture thread to the sampler: a slow reader never sees old frames."""

from __future__ import annotations

import threading

from edge_runtime.domain import Frame


class FrameSlot:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._taken = True
        self.dropped = 0  # frames overwritten before anyone took them (the backpressure policy)

    def put(self, frame: Frame) -> None:
        with self._lock:
            if not self._taken:
                self.dropped += 1
            self._frame = frame
            self._taken = False

    def take_newest(self) -> Frame | None:
        """The newest frame if it was not taken yet, else None."""
        with self._lock:
            if self._taken:
                return None
            self._taken = True
            return self._frame

    def peek(self) -> Frame | None:
        with self._lock:
            return self._frame
