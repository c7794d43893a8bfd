"""Latest-wins hand-over from a capture thread to the sampler: a slow reader never sees old frames.

Stations wait here too: `wait_newer(after)` is a future for the first frame captured after `after`
(settled on the waiter's loop from the capture thread), so a trigger never takes an older frame and
never polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from edge_runtime.domain import Frame
from edge_runtime.sources.stream_clock import ClockSource


class FrameSlot:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._taken = True
        self.dropped = 0  # frames overwritten before anyone took them (the backpressure policy)
        self.frames = 0  # frames put since the start (a station tells "stale" from "stalled" by it)
        self._waiters: list[tuple[float, float, asyncio.Future[Frame], asyncio.AbstractEventLoop]] = []

    def put(self, frame: Frame) -> None:
        with self._lock:
            if not self._taken:
                self.dropped += 1
            self._frame = frame
            self._taken = False
            self.frames += 1
            if not self._waiters:
                return
            ready = [w for w in self._waiters if _newer(frame, w[0], w[1])]
            self._waiters = [w for w in self._waiters if not _newer(frame, w[0], w[1]) and not w[2].done()]
        for _, _, future, loop in ready:
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, frame)

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

    def wait_newer(self, after: float, margin: float = 0.0) -> asyncio.Future[Frame]:
        """The first settled frame captured after `after` (plus `margin` unless the camera's RTCP
        clock timed it), the newest one now if it already is: from the loop. Cancel the future to stop
        waiting. Taking from it does not take from the sampler."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Frame] = loop.create_future()
        with self._lock:
            if self._frame is not None and _newer(self._frame, after, margin):
                future.set_result(self._frame)
                return future
            # Bounded by the stations' max_pending; given-up waits (cancelled) are dropped here.
            self._waiters = [w for w in self._waiters if not w[2].done()]
            self._waiters.append((after, margin, future, loop))
        return future


def _newer(frame: Frame, after: float, margin: float) -> bool:
    if not frame.settled:
        return False
    return frame.captured_at > after + (0.0 if frame.clock == ClockSource.RTCP else margin)


def _settle(future: asyncio.Future[Frame], frame: Frame) -> None:
    if not future.done():
        future.set_result(frame)
