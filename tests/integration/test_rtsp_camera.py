"""The camera layer against a real RTSP server: freshness, crash + restart, hang, thread hygiene, bad URLs.

Each test starts its own gst-rtsp-server (tests/rtsp_server.py under /usr/bin/python3, ~1-2 s to the
first frame) and a real `Capture` reading it through OpenCV/FFmpeg over TCP. Every frame carries the
server's wall time, so a test can tell how old the frame a consumer got really is. Servers are killed
(hung ones too) and cameras stopped in the fixture teardown.

The test plays the sampler's part: it calls `Capture.watchdog()` every 0.2 s and takes frames from
`Capture.slot`.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from rtsp_fixtures import (  # noqa: E402
    OpenCamera,
    RtspServer,
    age_ms,
    captures,
    closed_port,
    decode_stamp,
    gst_rtsp_unavailable,
    wait_until,
)

from edge_runtime.sources.capture import CameraState, Capture  # noqa: E402

pytestmark = pytest.mark.slow

WATCHDOG_EVERY = 0.2  # how often the test calls Capture.watchdog(), like the sampler at 5 fps
FRESH_MS = 500  # a frame handed to a consumer must be younger than this (server stamp -> take)
NOT_STREAMING = {CameraState.BACKOFF, CameraState.CONNECTING, CameraState.STALLED}

StartServer = Callable[..., RtspServer]


@pytest.fixture(scope="module", autouse=True)
def _gst_rtsp_server_available() -> None:
    reason = gst_rtsp_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def open_camera() -> Iterator[OpenCamera]:
    """Start a Capture on a URL with quick test timings (override any CameraSettings field)."""
    with captures(
        "rtsp",
        open_timeout_s=3.0,
        stall_timeout_s=3.0,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
    ) as open_:
        yield open_


@pytest.fixture
def start_server(tmp_path: Path, open_camera: OpenCamera) -> Iterator[StartServer]:
    """Start test servers; all are killed at teardown, before the cameras stop (so no open hangs)."""
    servers: list[RtspServer] = []

    def start(fps: float = 25) -> RtspServer:
        server = RtspServer(tmp_path, fps=fps)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


def watchdog_of(camera: Capture) -> Callable[[], None]:
    return lambda: camera.watchdog()


def wait_streaming(camera: Capture, timeout: float) -> float | None:
    return wait_until(
        lambda: camera.state is CameraState.STREAMING, timeout, tick=watchdog_of(camera), every=WATCHDOG_EVERY
    )


def capture_threads(camera_id: str | None = None) -> list[threading.Thread]:
    """Live capture threads: of one camera, or all of them ("capture-*")."""
    threads = [t for t in threading.enumerate() if t.name.startswith("capture-")]
    return threads if camera_id is None else [t for t in threads if t.name == f"capture-{camera_id}"]


def native_threads() -> int:
    """OS threads of this process (FFmpeg's decoder threads included, which threading cannot see)."""
    return len(os.listdir("/proc/self/task"))


def down_failures(camera_id: str) -> list[tuple[str, float]]:
    """(reason, count) of edge_runtime_camera_failures_total for one camera."""
    labels = ("open_failed", "stream_ended", "stalled")
    values = [
        REGISTRY.get_sample_value("edge_runtime_camera_failures_total", {"camera": camera_id, "reason": r})
        for r in labels
    ]
    return [(reason, value) for reason, value in zip(labels, values, strict=True) if value]


def fresh_age_ms(camera: Capture, timeout: float = 3.0) -> int:
    """Age of the next frame a consumer takes, decoded from the server's stamp."""
    camera.slot.take_newest()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        frame = camera.slot.take_newest()
        if frame is not None and (stamp := decode_stamp(frame.image)) is not None:
            return age_ms(stamp)
    raise AssertionError(f"no decodable frame within {timeout} s: {camera.status()}")


# --- 1. a consumer slower than the stream still gets fresh frames -------------------------------------
def test_slow_consumer_gets_fresh_frames_and_old_ones_are_dropped(
    start_server: StartServer, open_camera: OpenCamera
) -> None:
    server = start_server(fps=25)
    camera = open_camera(server.url)
    assert wait_streaming(camera, 15) is not None, camera.status()

    streaming_since = time.monotonic()
    camera.slot.take_newest()
    pauses = itertools.cycle((0.3, 0.4, 0.5, 0.35, 0.45))  # slower than 25 fps, and irregular
    ages: list[int] = []
    taken = undecodable = empty = 0
    while time.monotonic() - streaming_since < 6.0:
        time.sleep(next(pauses))
        frame = camera.slot.take_newest()
        now = time.time()
        status = camera.status()
        if frame is None:
            empty += 1
            continue
        taken += 1
        assert frame.image.shape == (240, 320, 3), frame.image.shape
        assert frame.image.dtype.name == "uint8"
        stamp = decode_stamp(frame.image)
        if stamp is None:
            undecodable += 1
            continue
        if time.monotonic() - streaming_since >= 1.0:  # the first second may still carry the open's backlog
            ages.append(age_ms(stamp, now))
            # the capture's own time (what events report) agrees with the server's stamp
            assert age_ms(stamp, frame.captured_at) < FRESH_MS, (age_ms(stamp, frame.captured_at), status)

    status = camera.status()
    elapsed = time.monotonic() - streaming_since
    assert empty == 0, f"a 25 fps camera had no new frame after >= 300 ms {empty} times: {status}"
    assert taken >= 10 and undecodable <= taken // 10, f"taken={taken} undecodable={undecodable}"
    assert len(ages) >= 8, ages
    assert max(ages) < FRESH_MS, f"stale frames handed to a slow consumer (ms): {ages}"
    assert camera.slot.dropped > 0, "a slow consumer must make the latest-wins slot drop frames"
    assert status.superseded > taken, status  # ~10 frames overwritten per take at 25 fps
    assert status.frames >= 15 * elapsed, f"the capture thread does not keep up with 25 fps: {status}"
    assert status.state is CameraState.STREAMING and status.reconnects == 0 and status.stalls == 0, status


# --- 2. the server crashes and comes back on the same port ----------------------------------------------
def test_killed_server_is_reconnected_after_restart_on_the_same_port(
    start_server: StartServer, open_camera: OpenCamera
) -> None:
    server = start_server()
    camera = open_camera(server.url, id="killed-crash")
    assert wait_streaming(camera, 15) is not None, camera.status()
    thread, port, frames_before = camera.thread, server.port, camera.status().frames

    server.kill()  # SIGKILL: the TCP connection closes at once
    left = wait_until(lambda: camera.state in NOT_STREAMING, 5, tick=watchdog_of(camera))
    assert left is not None, f"still {camera.state} 5 s after the server died: {camera.status()}"
    time.sleep(1.0)  # a few refused reopens while it is down
    down = camera.status()
    assert down.state in NOT_STREAMING and down.last_error, down

    # The crash is counted with its reason (the stream ended, or no frame came), then refused reopens.
    counted = dict(down_failures(camera.settings.id))
    assert counted.get("stream_ended", 0) + counted.get("stalled", 0) >= 1, (counted, down)
    assert down.failures >= 1 and down.last_failure is not None, down

    server.restart()
    assert server.port == port
    back = wait_streaming(camera, 15)
    assert back is not None, f"not streaming 15 s after the restart: {camera.status()}"

    status = camera.status()
    assert status.reconnects >= 1, status
    assert status.frames > frames_before, status
    assert camera.thread is thread and thread is not None and thread.is_alive(), (
        "the capture thread was replaced"
    )
    assert fresh_age_ms(camera) < FRESH_MS


# --- 3. the server hangs (SIGSTOP): TCP stays up, no data ------------------------------------------------
def test_hung_server_is_reported_as_a_stall(start_server: StartServer, open_camera: OpenCamera) -> None:
    stall_timeout = 3.0
    server = start_server()
    # The first reopen waits 0.6 x 0.8..1.2 s: `stalled` stays visible that long, longer than a tick.
    camera = open_camera(server.url, id="hung-stall", stall_timeout_s=stall_timeout, backoff_initial_s=0.6)
    assert wait_streaming(camera, 15) is not None, camera.status()
    time.sleep(0.5)

    server.pause()
    paused_at = time.time()
    states: list[CameraState] = []
    stale: list[int] = []  # server-stamp age (ms) of frames captured after the hang began

    def tick() -> None:
        camera.watchdog()
        states.append(camera.state)
        frame = camera.slot.take_newest()
        if frame is not None and (stamp := decode_stamp(frame.image)) is not None:
            age = age_ms(stamp, frame.captured_at)
            if frame.captured_at > paused_at and age >= FRESH_MS:
                stale.append(age)

    deadline = stall_timeout + 1.5
    took = wait_until(lambda: camera.status().stalls >= 1, deadline, tick=tick, every=WATCHDOG_EVERY)
    status = camera.status()
    problems = []
    if took is None:
        problems.append(
            f"no stall counted within {deadline} s of the hang; states seen: {sorted(set(states))}"
        )
    if stale:
        problems.append(f"frames from before the hang published as new, stamped {stale} ms before capture")
    assert not problems, f"{problems}; {status}"
    assert status.state is not CameraState.STREAMING, status
    for _ in range(3):  # the state shows it too, until the reopen starts
        tick()
        time.sleep(WATCHDOG_EVERY / 2)
    assert CameraState.STALLED in states, f"states seen: {states}"
    assert status.last_failure is not None and status.last_failure.reason.value == "stalled", status
    assert dict(down_failures(camera.settings.id)).get("stalled", 0) >= 1, down_failures(camera.settings.id)


def test_hung_server_is_left_and_reconnected_after_sigcont(
    start_server: StartServer, open_camera: OpenCamera
) -> None:
    stall_timeout = 3.0
    server = start_server()
    camera = open_camera(server.url, stall_timeout_s=stall_timeout)
    assert wait_streaming(camera, 15) is not None, camera.status()

    server.pause()
    left = wait_until(
        lambda: camera.state in NOT_STREAMING,
        stall_timeout + 1.5,
        tick=watchdog_of(camera),
        every=WATCHDOG_EVERY,
    )
    assert left is not None, f"still {camera.state} {stall_timeout + 1.5} s into the hang: {camera.status()}"
    hung = camera.status()
    assert hung.stalls + hung.reconnects >= 1 and hung.last_error, hung
    time.sleep(1.0)  # it keeps trying (reopens time out) while the server stays hung
    assert camera.thread is not None and camera.thread.is_alive()

    server.resume()
    back = wait_streaming(camera, 20)
    assert back is not None, f"not streaming 20 s after SIGCONT: {camera.status()}"
    assert fresh_age_ms(camera) < FRESH_MS


def test_slow_camera_within_the_stall_timeout_keeps_streaming(
    start_server: StartServer, open_camera: OpenCamera
) -> None:
    server = start_server(fps=1)
    # OpenCV probes several frames before the open returns: ~8 s at 1 fps
    camera = open_camera(server.url, stall_timeout_s=2.0, open_timeout_s=15.0)
    assert wait_streaming(camera, 25) is not None, camera.status()
    first = camera.status()

    seen: list[tuple[float, CameraState]] = []
    started = time.monotonic()
    while time.monotonic() - started < 5.0:
        camera.watchdog()
        seen.append((round(time.monotonic() - started, 1), camera.state))
        if camera.state is not CameraState.STREAMING:
            break
        time.sleep(WATCHDOG_EVERY)
    status = camera.status()
    assert [state for _, state in seen if state is not CameraState.STREAMING] == [], (seen[-3:], status)
    assert status.stalls == 0 and status.reconnects == 0, status
    assert status.frames >= first.frames + 3, (first, status)


# --- 4. reconnect cycles leave no threads behind ----------------------------------------------------------
def test_reconnect_cycles_and_stop_leave_no_threads(
    start_server: StartServer, open_camera: OpenCamera
) -> None:
    python_before = threading.active_count()
    native_before = native_threads()
    all_before = len(capture_threads())
    assert capture_threads("leak") == []

    server = start_server()
    camera = open_camera(server.url, id="leak")
    assert wait_streaming(camera, 15) is not None, camera.status()
    assert len(capture_threads("leak")) == 1
    native_streaming = native_threads()

    for cycle in range(3):
        server.kill()
        assert wait_until(lambda: camera.state in NOT_STREAMING, 5, tick=watchdog_of(camera)) is not None
        time.sleep(0.5)
        assert len(capture_threads("leak")) == 1, (cycle, threading.enumerate())
        assert len(capture_threads()) == all_before + 1, (cycle, threading.enumerate())
        server.restart()
        assert wait_streaming(camera, 15) is not None, (cycle, camera.status())
        assert len(capture_threads("leak")) == 1, (cycle, threading.enumerate())
        assert threading.active_count() == python_before + 1, (cycle, threading.enumerate())
    assert camera.status().reconnects >= 3
    # one decoder's worth of FFmpeg threads at a time, not one more set per reconnect
    assert native_threads() <= native_streaming + 2, (native_before, native_streaming, native_threads())

    thread = camera.thread
    started = time.monotonic()
    assert camera.stop(timeout=10) is True
    assert time.monotonic() - started < 10
    assert thread is not None and not thread.is_alive()
    assert camera.state is CameraState.STOPPED
    assert capture_threads("leak") == []
    assert len(capture_threads()) == all_before, threading.enumerate()
    assert threading.active_count() == python_before, threading.enumerate()
    assert wait_until(lambda: native_threads() <= native_before, 2) is not None, (
        native_before,
        native_threads(),
    )


# --- 5. bad URLs: never raise, keep retrying, never show a password ------------------------------------
def test_unreachable_url_backs_off_with_an_error_and_keeps_the_thread(open_camera: OpenCamera) -> None:
    camera = open_camera(f"rtsp://127.0.0.1:{closed_port()}/x")
    took = wait_until(
        lambda: camera.state is CameraState.BACKOFF and camera.status().last_error is not None,
        5,
        tick=watchdog_of(camera),
    )
    assert took is not None, camera.status()
    states = set()
    for _ in range(10):  # 2 s of refused retries: backoff <-> connecting, the thread alive throughout
        camera.watchdog()
        states.add(camera.state)
        assert camera.thread is not None and camera.thread.is_alive()
        time.sleep(WATCHDOG_EVERY)
    status = camera.status()
    assert states <= {CameraState.BACKOFF, CameraState.CONNECTING}, states
    assert status.frames == 0 and status.last_frame_age_s is None and status.last_error, status
    assert status.to_dict()["state"] in {"backoff", "connecting"}
    assert camera.stop(timeout=10) is True


def test_credentials_never_appear_in_status_logs_or_errors(
    start_server: StartServer,
    open_camera: OpenCamera,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_runtime")
    server = start_server()
    secret = "s3cr3t-Pa55"
    refused = open_camera(f"rtsp://user:{secret}@127.0.0.1:{closed_port()}/x")
    not_found = open_camera(f"rtsp://user:{secret}@127.0.0.1:{server.port}/x")  # DESCRIBE -> 404
    live = open_camera(f"rtsp://user:{secret}@127.0.0.1:{server.port}/test?token={secret}")
    cameras = (refused, not_found, live)

    assert wait_streaming(live, 15) is not None, live.status()
    server.kill()  # the live one now logs a reconnect with its URL, the others keep failing
    assert wait_until(lambda: live.status().reconnects >= 1, 5, tick=watchdog_of(live)) is not None
    assert wait_until(lambda: all(c.status().last_error for c in cameras), 5) is not None
    for camera in cameras:
        assert camera.stop(timeout=10) is True

    texts = []
    for camera in cameras:
        status = camera.status()
        assert status.url.startswith("rtsp://***@127.0.0.1:"), status.url
        texts += [repr(status), str(status.to_dict())]
    texts += [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    out, err = capfd.readouterr()  # what OpenCV/FFmpeg print themselves (container logs)
    texts += [out, err]
    assert any("reconnecting" in r.getMessage() for r in caplog.records), "expected the reconnect warning"
    leaks = [t for t in texts if secret in t]
    assert not leaks, leaks
