"""Frames are converted when someone looks, once: a capture hands every decoded frame over, and only
the frames a sampler takes are ever converted to BGR."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray
from waiting import wait_until

from edge_runtime.domain import Frame
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import CameraState, Capture
from edge_runtime.sources.decoding import DecodeMode, HwAccel
from edge_runtime.sources.pyav_reader import PyAvReader
from edge_runtime.sources.readers import Picture, ReaderInfo, StreamSpec
from edge_runtime.sources.stream_clock import ClockSource


class Conversions:
    """A thread-safe count of pixel conversions, and a factory of counting converters."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.count = 0
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def converter(self, value: int) -> tuple[list[int], object]:
        calls: list[int] = []

        def pixels() -> NDArray[np.uint8]:
            with self._lock:
                self.count += 1
            calls.append(value)
            time.sleep(self.delay_s)  # a conversion takes a while: others arrive while it runs
            return np.full((4, 4, 3), value % 256, np.uint8)

        return calls, pixels


def test_an_array_frame_is_converted_from_the_start() -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    frame = Frame(image, 1.0, 1)
    assert frame.converted is True and frame.image is image
    assert "converted=True" in repr(frame)


def test_a_callable_frame_converts_on_first_look_and_keeps_the_result() -> None:
    conversions = Conversions()
    calls, pixels = conversions.converter(7)
    frame = Frame(pixels, 1.0, 1)  # type: ignore[arg-type]
    assert frame.converted is False and calls == []
    assert "converted=False" in repr(frame)
    first = frame.image
    assert frame.converted is True and calls == [7]
    assert frame.image is first and int(first[0, 0, 0]) == 7
    assert calls == [7]


def test_a_frame_read_from_many_threads_at_once_converts_once() -> None:
    conversions = Conversions(delay_s=0.05)
    readers = 8
    for round_ in range(5):
        calls, pixels = conversions.converter(round_)
        frame = Frame(pixels, 1.0, round_)  # type: ignore[arg-type]
        start = threading.Barrier(readers)

        def look(frame: Frame = frame, start: threading.Barrier = start) -> NDArray[np.uint8]:
            start.wait(timeout=5)
            return frame.image

        with ThreadPoolExecutor(readers) as pool:
            images = list(pool.map(lambda _: look(), range(readers)))
        assert calls == [round_], f"round {round_}: converted {len(calls)} times"
        assert all(image is images[0] for image in images)
    assert conversions.count == 5


def test_a_failed_conversion_is_raised_to_the_caller_and_tried_again() -> None:
    attempts: list[int] = []

    def pixels() -> NDArray[np.uint8]:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("corrupt frame")
        return np.ones((1, 1, 3), np.uint8)

    frame = Frame(pixels, 1.0, 1)
    with pytest.raises(ValueError, match="corrupt frame"):
        _ = frame.image
    assert frame.converted is False
    assert int(frame.image[0, 0, 0]) == 1 and frame.converted is True
    assert len(attempts) == 2


class CountingReader:
    """A fast camera (~200 fps) whose frames count their conversions."""

    info = ReaderInfo("software", "counting", DecodeMode.ALL, ClockSource.ARRIVAL)

    def __init__(self, conversions: Conversions) -> None:
        self.conversions = conversions
        self.read_count = 0

    def read(self) -> Picture | None:
        time.sleep(0.005)
        self.read_count += 1
        _, pixels = self.conversions.converter(self.read_count)
        return Picture(pixels, time.time())  # type: ignore[arg-type]

    def set_keyframes_only(self, on: bool) -> None:
        pass

    def release(self) -> None:
        pass


def test_a_capture_converts_only_the_frames_a_sampler_takes() -> None:
    conversions = Conversions()
    readers: list[CountingReader] = []

    def opener(spec: StreamSpec) -> CountingReader:
        readers.append(CountingReader(conversions))
        return readers[-1]

    capture = Capture(CameraSettings(id="lazy", url="rtsp://camera/lazy", fps=5), opener)
    capture.start()
    taken: list[Frame] = []
    try:
        wait_until(lambda: capture.state is CameraState.STREAMING, 5, "the capture streams")
        for _ in range(5):  # a sampler at ~10 fps against a ~200 fps camera
            time.sleep(0.1)
            frame = capture.slot.take_newest()
            assert frame is not None, capture.status()
            assert frame.image.shape == (4, 4, 3)
            assert frame.image is frame.image  # a second look converts nothing more
            taken.append(frame)
        newest = capture.slot.peek()
    finally:
        assert capture.stop()
    status = capture.status()
    assert len(readers) == 1 and status.reconnects == 0, status
    assert [int(f.image[0, 0, 0]) for f in taken] == [f.sequence % 256 for f in taken]
    assert conversions.count == len(taken) == 5, (
        f"{conversions.count} conversions for {len(taken)} frames taken"
    )
    assert status.frames >= 40, f"the camera read only {status.frames} frames: the test proves nothing"
    assert status.superseded >= status.frames - len(taken) - 1, status  # the rest were dropped, unconverted
    assert newest is not None and (newest in taken or not newest.converted)


# --------------------------------------------------------------------------------------------------
# A frame outlives its reader; a released reader is freed at once


def h264_file(path: Path, frames: int = 10) -> Path:
    """A small H.264 MP4 (64x48, 25 fps, a keyframe every 5 frames), encoded with PyAV's libx264."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "5"}
        for i in range(frames):
            image = np.full((48, 64, 3), (i * 20) % 256, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    return path


def test_a_frame_handed_over_converts_after_its_reader_was_released_and_freed(tmp_path: Path) -> None:
    """The slot may hold an unconverted frame across a reconnect: its pixels belong to the frame."""
    reader = PyAvReader(str(h264_file(tmp_path / "camera.mp4")), 2.0, 2.0, HwAccel.NONE, file_loop=True)
    picture = reader.read()
    assert isinstance(picture, Picture)
    frame = Frame(picture.pixels, picture.captured_at, 1)
    reader.release()
    del reader, picture
    gc.collect()
    image = frame.image
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert image.mean() <= 3, image.mean()  # the first frame: black


def test_a_released_reader_is_freed_at_once(tmp_path: Path) -> None:
    reader = PyAvReader(str(h264_file(tmp_path / "camera.mp4")), 2.0, 2.0, HwAccel.NONE, file_loop=True)
    assert isinstance(reader.read(), Picture)
    freed = weakref.ref(reader)
    gc.disable()  # freed by reference counting, as a reconnect needs, not whenever the collector runs
    try:
        reader.release()
        del reader
        assert freed() is None, "the released reader (and its decoder) is still alive"
    finally:
        gc.enable()
