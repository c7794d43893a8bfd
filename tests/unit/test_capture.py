"""Capture lifecycle on the synthetic conveyor: one thread per camera, restartable after stop."""

from __future__ import annotations

import pytest

from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import Capture


def test_a_second_start_is_refused_and_a_stopped_capture_starts_again() -> None:
    capture = Capture(CameraSettings(id="belt", url="synthetic://conveyor"))
    capture.start()
    try:
        first = capture.thread
        with pytest.raises(RuntimeError, match="already running"):
            capture.start()
        assert capture.thread is first
    finally:
        assert capture.stop()
    capture.start()
    try:
        assert capture.thread is not first and capture.thread is not None and capture.thread.is_alive()
    finally:
        assert capture.stop()
