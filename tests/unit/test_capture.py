"""Capture lifecycle and sampling on the synthetic conveyor: one thread per camera, overruns counted;
with scripted readers: every failure counted with its reason, `stalled` visible until the reopen, and
the worst-case recovery time the module docstring states."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np
import pytest
from prometheus_client import REGISTRY

from edge_runtime.domain import Event, Frame, Roi
from edge_runtime.errors import ConfigError, SourceError
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.inference.service import RoiPredictions
from edge_runtime.settings import CameraSettings, build_settings
from edge_runtime.sources.capture import CameraState, Capture, FailureReason
from edge_runtime.sources.decoding import DecodeMode
from edge_runtime.sources.readers import Picture, ReaderInfo, StreamSpec
from edge_runtime.sources.sampler import CameraSampler
from edge_runtime.sources.stream_clock import ClockSource


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


T = TypeVar("T")


class SlowInference:
    """The sampler's Inference protocol: 10 predictions a second at best, none with a finding."""

    # A predictor in service: the sampler reads its labels and passes it back.
    serving: Any = SimpleNamespace(spec=SimpleNamespace(labels=("stain",), model_id="m", sha1="s"))

    async def predict_rois(
        self, frame: Frame, rois: tuple[Roi, ...], predictor: Any = None
    ) -> RoiPredictions:
        await asyncio.to_thread(time.sleep, 0.1)
        return [(roi, ()) for roi in rois]

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        raise AssertionError("no events, no snapshots")


class NoEvents:
    snapshots: SnapshotStore | None = None

    async def publish(self, event: Event) -> None:
        raise AssertionError("no predictions, no events")


async def test_sampling_slower_than_fps_is_counted_as_overruns() -> None:
    camera = "overrun-belt"
    capture = Capture(CameraSettings(id=camera, url="synthetic://conveyor", fps=20))
    before = REGISTRY.get_sample_value("edge_runtime_camera_sampling_overruns_total", {"camera": camera}) or 0
    capture.start()
    task = asyncio.create_task(CameraSampler(capture, SlowInference(), NoEvents()).run())
    try:
        await asyncio.sleep(1.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert capture.stop()
    after = REGISTRY.get_sample_value("edge_runtime_camera_sampling_overruns_total", {"camera": camera}) or 0
    assert after - before >= 5  # ~10 late ticks in 1.2 s


# --------------------------------------------------------------------------------------------------
# Failures: counted with a reason, visible in status; the recovery bound

FRAME = np.zeros((4, 4, 3), np.uint8)


def failures(camera: str, reason: str) -> float:
    labels = {"camera": camera, "reason": reason}
    return REGISTRY.get_sample_value("edge_runtime_camera_failures_total", labels) or 0.0


class ScriptedReader:
    """`frames` frames at 100 fps, then: "end" (read returns None) or "hang" (blocks for the read timeout)."""

    def __init__(self, frames: int, then: str, read_timeout: float) -> None:
        self.left, self.then, self.read_timeout = frames, then, read_timeout

    info = ReaderInfo("software", "scripted", DecodeMode.ALL, ClockSource.ARRIVAL)

    def read(self) -> Picture | None:
        if self.left > 0:
            self.left -= 1
            time.sleep(0.01)
            return Picture.of(FRAME)
        if self.then == "hang":
            time.sleep(self.read_timeout)
        return None

    def set_keyframes_only(self, on: bool) -> None:
        pass

    def release(self) -> None:
        pass


def watch_states(capture: Capture, seconds: float, changes: int) -> list[tuple[float, CameraState]]:
    """(time, state) every 5 ms, the state changes only, until `changes` of them or `seconds`."""
    seen: list[tuple[float, CameraState]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(seen) < changes:
        state = capture.state
        started = seen or state is not CameraState.STOPPED  # the thread may not have begun yet
        if started and (not seen or seen[-1][1] is not state):
            seen.append((time.monotonic(), state))
        time.sleep(0.005)
    return seen


@pytest.mark.parametrize(
    ("then", "reason", "after"),
    [
        ("hang", FailureReason.STALLED, CameraState.STALLED),  # a hung server
        ("end", FailureReason.STREAM_ENDED, CameraState.BACKOFF),  # a server crash
    ],
)
def test_a_lost_stream_is_counted_with_its_reason_and_its_state_stays_visible(
    then: str, reason: FailureReason, after: CameraState
) -> None:
    camera = f"lost-{then}"
    settings = CameraSettings(
        id=camera, url="rtsp://x", stall_timeout_s=0.5, backoff_initial_s=0.4, backoff_max_s=0.4
    )
    opened = 0

    def opener(spec: StreamSpec) -> ScriptedReader:
        nonlocal opened
        opened += 1
        return ScriptedReader(10 if opened == 1 else 1000, then, spec.read_timeout_s)

    before = failures(camera, reason.value)
    capture = Capture(settings, opener)
    capture.start()
    try:
        seen = watch_states(capture, 3.0, changes=5)
    finally:
        assert capture.stop()
    states = [state for _, state in seen]
    assert states[:3] == [CameraState.CONNECTING, CameraState.STREAMING, after], seen
    # A stall stays shown through the backoff and the reopen, until frames flow again.
    reopen = [CameraState.STREAMING] if after is CameraState.STALLED else [CameraState.CONNECTING]
    assert states[3:4] == reopen, seen
    lasted = seen[3][0] - seen[2][0]
    assert lasted >= 0.8 * 0.4 - 0.02, f"{after} shown for {lasted:.3f} s only: the whole backoff wait"
    assert failures(camera, reason.value) == before + 1
    status = capture.status()
    assert status.failures == 1 and status.reconnects == 1
    assert status.last_failure is not None and status.last_failure.reason is reason
    assert time.time() - 3 < status.last_failure.at <= time.time()
    body = status.to_dict()
    assert body["last_failure"] == {"reason": reason.value, "at": status.last_failure.to_dict()["at"]}
    assert body["last_error"]


def test_an_open_failure_is_counted_and_named() -> None:
    camera = "open-fails"

    def opener(spec: StreamSpec) -> ScriptedReader:
        raise SourceError("cannot open the stream (refused)")

    before = failures(camera, "open_failed")
    capture = Capture(CameraSettings(id=camera, url="rtsp://x", backoff_initial_s=0.05), opener)
    capture.start()
    try:
        deadline = time.monotonic() + 2
        while capture.status().failures < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        assert capture.stop()
    status = capture.status()
    assert status.failures >= 2 and status.stalls == 0
    assert status.last_failure is not None and status.last_failure.reason is FailureReason.OPEN_FAILED
    assert status.last_error == "cannot open the stream (refused)"
    assert failures(camera, "open_failed") == before + status.failures


def test_worst_case_recovery_is_the_failing_attempt_plus_1_2_backoff_max_plus_the_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source returns just after an attempt began (it still fails, taking the whole open time),
    and the jitter draws its maximum: streaming again after open + 1.2 x backoff_max_s + open + frame."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the capture module's jitter
    open_s, backoff_max = 0.15, 0.3
    settings = CameraSettings(
        id="recovery", url="rtsp://x", open_timeout_s=open_s, backoff_initial_s=0.3, backoff_max_s=backoff_max
    )
    back_at: list[float] = []
    attempts = 0

    def opener(spec: StreamSpec) -> ScriptedReader:
        nonlocal attempts
        attempts += 1
        started = time.monotonic()
        if attempts == 2:  # the source returns now, a moment too late for this attempt
            back_at.append(started + 0.001)
        time.sleep(spec.open_timeout_s)  # an open that runs into its timeout, or succeeds as late
        if not back_at or started < back_at[0]:
            raise SourceError("cannot open the stream (timed out)")
        return ScriptedReader(1000, "end", spec.read_timeout_s)

    capture = Capture(settings, opener)
    capture.start()
    try:
        deadline = time.monotonic() + 5
        while capture.state is not CameraState.STREAMING and time.monotonic() < deadline:
            time.sleep(0.002)
        streaming_at = time.monotonic()
    finally:
        assert capture.stop()
    recovery = streaming_at - back_at[0]
    bound = open_s + 1.2 * backoff_max + open_s + 0.01 + 0.05  # + the first frame, + scheduling slack
    assert 1.2 * backoff_max + open_s <= recovery <= bound, (recovery, bound)


def test_backoff_initial_must_not_exceed_backoff_max() -> None:
    camera = {"id": "c", "url": "rtsp://x", "backoff_initial_s": 5, "backoff_max_s": 2}
    with pytest.raises(ConfigError, match=r"backoff_initial_s \(5\) must not exceed backoff_max_s \(2\)"):
        build_settings({"cameras": [camera]})
