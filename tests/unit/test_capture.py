"""Capture lifecycle and sampling on the synthetic conveyor: one thread per camera, overruns counted."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from edge_runtime.domain import PredictionResult, StageTimings, Task
from edge_runtime.model_slot import ModelSlot
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import Capture
from edge_runtime.sources.sampler import CameraSampler


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


async def test_sampling_slower_than_fps_is_counted_as_overruns() -> None:
    class SlowPredictor:
        spec = SimpleNamespace(labels=("stain",), model_id="m", sha1="s")

        def predict_frame(self, frame: object) -> PredictionResult:
            time.sleep(0.1)  # 10 fps at best, asked for 20
            return PredictionResult(Task.DETECTION, (), (1, 1), StageTimings())

    class Outlet:
        snapshots = None

        async def publish(self, event: object) -> None:
            raise AssertionError("no predictions, no events")

    camera = "overrun-belt"
    slot = ModelSlot()
    slot.predictor = SlowPredictor()  # type: ignore[assignment]
    capture = Capture(CameraSettings(id=camera, url="synthetic://conveyor", fps=20))
    before = REGISTRY.get_sample_value("edge_runtime_camera_sampling_overruns_total", {"camera": camera}) or 0
    with ThreadPoolExecutor(1) as executor:
        capture.start()
        task = asyncio.create_task(CameraSampler(capture, slot, executor, Outlet()).run())
        try:
            await asyncio.sleep(1.2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert capture.stop()
    after = REGISTRY.get_sample_value("edge_runtime_camera_sampling_overruns_total", {"camera": camera}) or 0
    assert after - before >= 5  # ~10 late ticks in 1.2 s
