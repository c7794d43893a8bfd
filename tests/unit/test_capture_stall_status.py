"""A stall the watchdog flagged while the capture thread is still blocked in a read: every field of
status() tells it at once (state, stalls, failures, last_error and last_failure), not some of them."""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import Capture
from edge_runtime.sources.decoding import DecodeMode
from edge_runtime.sources.readers import Pending, Picture, ReaderInfo, StreamSpec
from edge_runtime.sources.stream_clock import ClockSource
from edge_runtime.status import CameraState, FailureReason


class HungReader:
    """One frame, then a read that blocks until released (a server that stopped sending)."""

    def __init__(self) -> None:
        self.reads = 0
        self.unblock = threading.Event()

    @property
    def info(self) -> ReaderInfo:
        return ReaderInfo("software", "scripted", DecodeMode.ALL, ClockSource.ARRIVAL, None)

    def read(self) -> Picture | Pending:
        self.reads += 1
        if self.reads > 1:
            self.unblock.wait(10)
        return Picture.of(np.zeros((2, 2, 3), np.uint8))

    def set_keyframes_only(self, on: bool) -> None:
        pass

    def release(self) -> None:
        self.unblock.set()


def test_a_flagged_stall_shows_in_every_field_before_the_thread_counts_it() -> None:
    readers: list[HungReader] = []

    def opener(spec: StreamSpec) -> HungReader:
        readers.append(HungReader())
        return readers[-1]

    settings = CameraSettings(id="hung", url="rtsp://camera/hung", fps=2, stall_timeout_s=1.0)
    capture = Capture(settings, opener)
    capture.start()
    try:
        deadline = time.monotonic() + 5
        while capture.status().state is not CameraState.STREAMING or readers[0].reads < 2:
            assert time.monotonic() < deadline, capture.status()
            time.sleep(0.01)
        before = time.time()
        capture.watchdog(now=time.monotonic() + 5)  # long past stall_timeout_s, the read still blocked
        status = capture.status()
        assert status.state is CameraState.STALLED, status
        assert (status.stalls, status.failures) == (1, 1), status
        assert status.last_error is not None and "no frame for" in status.last_error, status
        assert status.last_failure is not None, status
        assert status.last_failure.reason is FailureReason.STALLED, status
        assert before <= status.last_failure.at <= time.time(), status
    finally:
        for reader in readers:
            reader.unblock.set()
        assert capture.stop(5)
