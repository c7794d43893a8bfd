"""The PyAV reader against a real RTSP server: keyframes-only decoding by policy, FFmpeg's reasons in
last_error, a keyframe interval longer than the open timeout, and frame times from the camera's clock.

Each test starts its own gst-rtsp-server (tests/rtsp_server.py under /usr/bin/python3) and a real
`Capture` reading it through PyAV over TCP, software decoding (hwaccel: none) unless a test says
otherwise. Every frame carries the server's wall time, so a test can tell whether a frame decoded
clean and whether the time the capture gave it is right. The test plays the sampler's part: it calls
`Capture.watchdog()` every 0.2 s and takes frames from `Capture.slot`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from rtsp_fixtures import (
    OpenCamera,
    RtspServer,
    StreamWatcher,
    captures,
    closed_port,
    decode_stamp,
    gst_rtsp_unavailable,
    offset_ms,
    wait_until,
)

from edge_runtime.sources import hwprobe
from edge_runtime.sources.capture import CameraState, Capture, FailureReason
from edge_runtime.sources.decoding import AUTO_ORDER
from edge_runtime.status import StreamInfo

pytestmark = pytest.mark.slow

WATCHDOG_EVERY = 0.2  # how often the test calls Capture.watchdog(), like the sampler at 5 fps
SAME_MS = 100  # a frame's captured_at and the server's stamp in it agree this closely (ms)

StartServer = Callable[..., RtspServer]
Watch = Callable[[str], StreamWatcher]


@pytest.fixture(scope="module", autouse=True)
def _gst_rtsp_server_available() -> None:
    reason = gst_rtsp_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def open_camera() -> Iterator[OpenCamera]:
    """Start a Capture on a URL with quick test timings (override any CameraSettings field)."""
    with captures(
        "decoding",
        hwaccel="none",
        open_timeout_s=8.0,  # a busy CI box: opening is not what these tests are about
        stall_timeout_s=3.0,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
    ) as open_:
        yield open_


@pytest.fixture
def start_server(tmp_path: Path, open_camera: OpenCamera) -> Iterator[StartServer]:
    """Start test servers; all are killed at teardown, before the cameras stop (so no open hangs)."""
    servers: list[RtspServer] = []

    def start(
        fps: float = 25, keyframe_s: float | None = None, auth: tuple[str, str] | None = None
    ) -> RtspServer:
        server = RtspServer(tmp_path, fps=fps, keyframe_s=keyframe_s, auth=auth)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def watch(start_server: StartServer) -> Iterator[Watch]:
    """Second clients that keep a server's stream playing; closed before the servers are killed."""
    watchers: list[StreamWatcher] = []

    def watch_(url: str) -> StreamWatcher:
        watchers.append(StreamWatcher(url))
        return watchers[-1]

    yield watch_
    for watcher in watchers:
        watcher.close()


def ticking(camera: Capture, condition: Callable[[], object], timeout: float, what: str) -> float:
    """wait_until with the watchdog called every tick, like the sampler; fails the test past `timeout`."""
    took = wait_until(lambda: bool(condition()), timeout, tick=camera.watchdog, every=WATCHDOG_EVERY)
    assert took is not None, f"not within {timeout:g} s: {what}: {camera.status()}"
    return took


def stream_of(camera: Capture) -> StreamInfo:
    stream = camera.status().stream
    assert stream is not None, camera.status()
    return stream


def decoding(camera: Capture, decode: str) -> bool:
    stream = camera.status().stream
    return stream is not None and stream.decode == decode


def stream_info_metric(camera: Capture, stream: StreamInfo) -> float | None:
    labels = {
        "camera": camera.settings.id,
        "stream": "inspect",
        "decoder": stream.decoder,
        "decode": stream.decode,
        "clock": stream.clock,
    }
    return REGISTRY.get_sample_value("edge_runtime_camera_stream_info", labels)


def assert_stream_metrics(camera: Capture) -> None:
    """The stream-info series has the labels the status shows, and the keyframe interval its value (read
    again when the status changed meanwhile, e.g. the clock turning to rtcp a few seconds in)."""
    seen: list[tuple[StreamInfo, float | None, float | None]] = []

    def agree() -> bool:
        stream = stream_of(camera)
        info = stream_info_metric(camera, stream)
        interval = REGISTRY.get_sample_value(
            "edge_runtime_camera_keyframe_interval_seconds",
            {"camera": camera.settings.id, "stream": "inspect"},
        )
        seen.append((stream, info, interval))
        return stream_of(camera) == stream and info == 1.0 and interval == (stream.keyframe_interval_s or 0.0)

    assert wait_until(agree, 2, every=0.01) is not None, seen[-3:]


def sample(camera: Capture, seconds: float, every: float = WATCHDOG_EVERY) -> tuple[int, list[int | None]]:
    """Play the sampler for `seconds`: the frames the capture read meanwhile, and for each frame taken
    its captured_at minus the server's stamp in it (ms; None: the frame did not decode clean)."""
    before = camera.status().frames
    offsets: list[int | None] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(every)
        camera.watchdog()
        frame = camera.slot.take_newest()
        if frame is not None:
            stamp = decode_stamp(frame.image)
            offsets.append(None if stamp is None else offset_ms(stamp, frame.captured_at))
    return camera.status().frames - before, offsets


def assert_clean(offsets: list[int | None], at_least: int, camera: Capture) -> None:
    """Every frame taken decoded clean (its stamp reads), at the time its stamp says."""
    assert len(offsets) >= at_least, (offsets, camera.status())
    assert None not in offsets, f"frames that did not decode clean: {offsets}"
    assert all(abs(o) <= 500 for o in offsets if o is not None), f"captured_at minus stamp (ms): {offsets}"


# --- a. keyframes only while the sampling period allows it, all frames again after a retune ----------
def test_a_slow_sampler_decodes_keyframes_only_and_a_retune_to_a_faster_one_decodes_all(
    start_server: StartServer, open_camera: OpenCamera
) -> None:
    server = start_server(fps=25)  # a keyframe every second
    camera = open_camera(server.url, id="kf-switch", fps=0.5)  # sampled every 2 s: keyframes will do

    # The interval is known from the second keyframe on; decode: auto then skips every other frame.
    ticking(camera, lambda: decoding(camera, "keyframes"), 10, "keyframes only")
    before = camera.status()
    stream = stream_of(camera)
    assert stream.keyframe_interval_s is not None and 0.9 <= stream.keyframe_interval_s <= 1.2, stream
    assert stream.decoder == "software" and stream.decoder_note == "hwaccel: none", stream
    assert stream.decode_note.startswith("decode: auto, sampling every 2 s >= keyframes every"), stream
    assert stream.resolution == (320, 240), stream
    assert_stream_metrics(camera)

    read, offsets = sample(camera, 3.0)
    assert 2 <= read <= 5, f"{read} frames in 3 s decoding keyframes only (a 25 fps stream, 1 s GOP)"
    assert_clean(offsets, 2, camera)
    assert camera.state is CameraState.STREAMING, camera.status()  # a frame a second is not a stall

    camera.retune(camera.settings.model_copy(update={"fps": 5.0}))  # sampled every 0.2 s now
    # The switch back waits for the next keyframe: no P-frame decoded against a missing reference.
    ticking(camera, lambda: decoding(camera, "all"), 3, "all frames again")
    stream = stream_of(camera)
    assert stream.decode_note.startswith("decode: auto, sampling every 0.2 s < keyframes every"), stream
    assert_stream_metrics(camera)
    read, offsets = sample(camera, 2.0, every=0.1)
    assert read >= 36, f"{read} frames in 2 s decoding all frames of a 25 fps stream"
    assert_clean(offsets, 15, camera)

    # neither switch failed, stalled or reopened the stream
    status = camera.status()
    assert status.state is CameraState.STREAMING, status
    assert (status.failures, status.stalls, status.reconnects) == (
        before.failures,
        before.stalls,
        before.reconnects,
    ), (
        before,
        status,
    )
    assert status.last_error == before.last_error, status


# --- b. FFmpeg's reasons in last_error, never the credentials --------------------------------------------
def test_open_failures_name_the_reason_and_never_the_credentials(
    start_server: StartServer, open_camera: OpenCamera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_runtime")
    user, password, wrong = "viewer", "Pa55-s3cr3t", "Wr0ng-s3cr3t"
    server = start_server(auth=(user, password))
    failing = {
        "404": open_camera(server.url_as(user, password, "/no-such-stream"), id="err-404"),
        "401": open_camera(server.url_as(user, wrong), id="err-401"),
        "refused": open_camera(f"rtsp://{user}:{password}@127.0.0.1:{closed_port()}/test", id="err-refused"),
    }
    good = open_camera(server.url, id="err-good")  # the right password: the 401 is about the password
    ticking(good, lambda: good.state is CameraState.STREAMING, 15, "streaming with the right password")
    for camera in failing.values():
        ticking(camera, lambda camera=camera: camera.status().failures >= 2, 5, "two failed opens")

    expected = {
        "404": "cannot open the stream: 404 Not Found: the camera has no stream at this path",
        "401": "cannot open the stream: 401 Unauthorized: check the camera's user name and password",
        "refused": "cannot open the stream: Connection refused",
    }
    texts = [r.getMessage() for r in caplog.records]
    for reason, camera in failing.items():
        status = camera.status()
        assert status.last_error == expected[reason], status
        assert status.last_failure is not None and status.last_failure.reason is FailureReason.OPEN_FAILED
        assert status.frames == 0 and status.state in {CameraState.BACKOFF, CameraState.CONNECTING}, status
        texts += [repr(status), str(status.to_dict())]
    texts += [repr(good.status()), str(good.status().to_dict())]
    leaks = [text for text in texts if password in text or wrong in text or f"{user}:" in text]
    assert not leaks, leaks


def test_a_missing_hardware_decoder_is_named_and_the_fallback_is_shown(
    start_server: StartServer, open_camera: OpenCamera
) -> None:
    missing = [(accel, why) for accel, why in hwprobe.probe("h264").items() if why is not None]
    if not missing:
        pytest.skip(f"every hardware decoder ({', '.join(a.value for a in AUTO_ORDER)}) is usable here")
    accel, why = missing[0]
    server = start_server()
    strict = open_camera(server.url, id="hw-strict", hwaccel=accel.value)
    ticking(strict, lambda: strict.status().failures >= 1, 10, "the open refused")
    status = strict.status()
    assert status.last_error == (
        f"hwaccel {accel.value} is not usable here: {why}"
        " (set hwaccel_fallback: true to decode in software instead)"
    ), status
    assert status.last_failure is not None and status.last_failure.reason is FailureReason.OPEN_FAILED
    assert status.frames == 0
    # stopped first: its reopens, each tearing down the shared test stream, would disturb the next one
    assert strict.stop(timeout=10)

    fallback = open_camera(server.url, id="hw-fallback", hwaccel=accel.value, hwaccel_fallback=True)
    ticking(fallback, lambda: fallback.state is CameraState.STREAMING, 15, "streaming in software")
    stream = stream_of(fallback)
    assert stream.decoder == "software", stream
    assert stream.decoder_note == (
        f"hwaccel {accel.value} is not usable here: {why}; decoding in software (hwaccel_fallback: true)"
    ), stream
    assert_stream_metrics(fallback)
    _, offsets = sample(fallback, 0.6, every=0.1)
    assert_clean(offsets, 3, fallback)


# --- c. a keyframe interval longer than the open timeout ---------------------------------------------
def test_a_gop_longer_than_the_open_timeout_is_named_and_a_longer_timeout_streams_without_a_stall(
    start_server: StartServer, open_camera: OpenCamera, watch: Watch
) -> None:
    server = start_server(fps=25, keyframe_s=4)
    watcher = watch(server.url)  # keeps the stream running: a camera joins mid-GOP, as on a real one
    # The second keyframe (the first came with the watcher's open, late by FFmpeg's probing): the next
    # one is 4 s away, so the cameras opening now wait that long for their first.
    watcher.wait_keyframes(2, timeout=10)

    short = open_camera(server.url, id="gop-short", open_timeout_s=1.5, backoff_initial_s=5, backoff_max_s=5)
    # Sampled every 5 s: once the interval is measured, a frame comes every 4 s; stall_timeout_s 1.5.
    patient = open_camera(server.url, id="gop-long", fps=0.2, open_timeout_s=6, stall_timeout_s=1.5)
    states: list[CameraState] = []

    def streaming() -> bool:
        states.append(patient.state)
        return patient.state is CameraState.STREAMING

    took = ticking(patient, streaming, 8, "streaming once the keyframe came")
    assert took >= 2.5, f"streaming {took:.1f} s after joining mid-GOP: the test joined too late"
    assert set(states) <= {CameraState.CONNECTING, CameraState.STREAMING}, states

    ticking(short, lambda: short.status().failures >= 1, 3, "the first open failed")
    status = short.status()
    assert status.last_error == (
        "no keyframe in 1.5 s: raise open_timeout_s or shorten the camera's I-frame interval"
    ), status
    assert status.last_failure is not None and status.last_failure.reason is FailureReason.OPEN_FAILED
    assert status.frames == 0 and status.stalls == 0, status
    assert short.stop(timeout=10)

    ticking(patient, lambda: decoding(patient, "keyframes"), 6, "keyframes only, after the second keyframe")
    stream = stream_of(patient)
    assert stream.keyframe_interval_s is not None and 3.8 <= stream.keyframe_interval_s <= 4.3, stream
    frames = patient.status().frames
    states.clear()
    ticking(patient, lambda: streaming() and patient.status().frames > frames, 6, "the next keyframe decoded")
    # 4 s between frames, more than twice the stall timeout: streaming throughout, never a stall
    assert set(states) == {CameraState.STREAMING}, states
    status = patient.status()
    assert status.state is CameraState.STREAMING, status
    assert (status.stalls, status.failures, status.reconnects) == (0, 0, 0), status


# --- d. frame times from the camera's clock ------------------------------------------------------------
def test_frame_times_come_from_the_cameras_rtcp_clock(
    start_server: StartServer, open_camera: OpenCamera
) -> None:
    server = start_server(fps=25)
    camera = open_camera(server.url, id="rtcp-clock", fps=5)
    ticking(camera, lambda: camera.state is CameraState.STREAMING, 15, "streaming")
    assert stream_of(camera).clock in {"pts", "rtcp"}  # RTCP sender reports come a few seconds in

    ticking(camera, lambda: stream_of(camera).clock == "rtcp", 10, "the RTCP clock")
    assert_stream_metrics(camera)
    _, offsets = sample(camera, 1.5, every=0.1)
    assert_clean(offsets, 10, camera)
    assert all(o is not None and abs(o) <= SAME_MS for o in offsets), (
        f"captured_at minus the server's stamp (ms), by the RTCP clock: {offsets}"
    )
    status = camera.status()
    assert status.last_frame_at is not None and status.last_frame_at <= time.time()
