"""What a capture thread opens: the reader contract, and the readers besides PyAV's.

`open_reader(spec)` picks one: PyAV for streams and files (pyav_reader.py), OpenCV when a camera asks
for the legacy reader (`reader: opencv`: it decodes and converts every frame), a synthetic conveyor for
the demo.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import SourceError
from edge_runtime.sources.decoding import DecodeMode, HwAccel, ReaderKind
from edge_runtime.sources.stream_clock import ClockSource

FFMPEG_CAPTURE_OPTIONS = "rtsp_transport;tcp"


def configure_ffmpeg_capture() -> None:
    """Give OpenCV's FFmpeg client our options unless the operator set their own. Idempotent.

    It must be the environment: OPENCV_FFMPEG_CAPTURE_OPTIONS is the only hook OpenCV reads (at every
    open, files included; VideoCapture has no parameter for it). Called once by `serve` before anything
    opens a camera, and by `open_reader` before each OpenCV open, so library users and tests get it too.

    TCP: no UDP loss on busy plants. `fflags;nobuffer` is not set: it made the first second of an mp4v
    file decode as grey smears (and raise a false event); the capture thread reads continuously anyway,
    so buffered frames are superseded within a second.
    """
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_CAPTURE_OPTIONS)
    # FFmpeg's own warnings (on every retry) stay out of the log: the reader's error says what failed.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What to open and how (from a camera's settings; `url` is the stream's, detect_url or url)."""

    url: str
    open_timeout_s: float
    read_timeout_s: float
    reader: ReaderKind = ReaderKind.PYAV
    hwaccel: HwAccel = HwAccel.AUTO
    hwaccel_fallback: bool = False


@dataclass(frozen=True, slots=True)
class Picture:
    """A decoded frame as a reader hands it over: pixels converted on demand, captured_at by the clock."""

    pixels: Callable[[], NDArray[np.uint8]]
    captured_at: float
    clock: ClockSource = ClockSource.ARRIVAL  # what captured_at is measured by
    settled: bool = True  # False while a pts anchor is too young to trust (stream_clock.settled)

    @classmethod
    def of(cls, image: NDArray[np.uint8], captured_at: float | None = None) -> Picture:
        return cls(lambda: image, time.time() if captured_at is None else captured_at)


class Pending:
    """Packets arrive, no frame is due yet (keyframes only, a long GOP): the source is alive."""


PENDING = Pending()


@dataclass(frozen=True, slots=True)
class ReaderInfo:
    """What a reader is doing, shown per camera (status, metric labels)."""

    decoder: str  # "software", a hardware accelerator, "opencv" (legacy reader) or "synthetic"
    decoder_note: str
    decode: DecodeMode  # ALL or KEYFRAMES: what is being decoded now
    clock: ClockSource
    keyframe_interval_s: float | None = None
    resolution: tuple[int, int] | None = None  # width, height


class FrameReader(Protocol):
    @property
    def info(self) -> ReaderInfo: ...

    def read(self) -> Picture | Pending | None:
        """The next frame; PENDING while the source is alive but no frame is due; None when the stream
        ended; SourceError (or OSError) when it failed. Blocks up to the read timeout."""

    def set_keyframes_only(self, on: bool) -> None:
        """Decode keyframes only (or all frames again); readers that cannot, ignore it (see info)."""

    def release(self) -> None: ...


class OpenCvReader:
    def __init__(self, url: str, open_timeout_s: float, read_timeout_s: float, loop: bool) -> None:
        import cv2

        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(read_timeout_s * 1000),
        ]
        self._cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError("cannot open the stream (refused, timed out, or unsupported codec)")
        self._loop = loop
        size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.info = ReaderInfo("opencv", "reader: opencv", DecodeMode.ALL, ClockSource.ARRIVAL, None, size)
        fps = self._cap.get(cv2.CAP_PROP_FPS) if loop else 0.0
        self._period = 1.0 / fps if fps and 0 < fps < 240 else 0.0
        self._next = time.monotonic()

    def set_keyframes_only(self, on: bool) -> None:
        """OpenCV decodes every frame (settings refuse `decode: keyframes` with this reader)."""

    def read(self) -> Picture | None:
        import cv2

        if self._period:  # a file plays at its own frame rate, like a camera would
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next = max(self._next + self._period, time.monotonic() - self._period)
        ok, frame = self._cap.read()
        if not ok and self._loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        image: NDArray[np.uint8] = np.asarray(frame, dtype=np.uint8)
        return Picture.of(image)

    def release(self) -> None:
        self._cap.release()


class ConveyorReader:
    """Synthetic camera: a grey belt moving right; defects pass at known moments of a repeating cycle.

    Cycle of `CYCLE_S` seconds from the reader's start: a dark stain crosses during STAIN_WINDOW, a
    bright glare patch during GLARE_WINDOW; the belt is clean otherwise. Frames at `fps`.
    """

    WIDTH, HEIGHT = 640, 480
    CYCLE_S = 12.0
    STAIN_WINDOW = (2.0, 5.0)
    GLARE_WINDOW = (7.0, 9.0)

    def __init__(self, fps: float = 10.0, start: float | None = None) -> None:
        self._period = 1.0 / fps
        self._start = time.monotonic() if start is None else start
        self._next = self._start
        size = (self.WIDTH, self.HEIGHT)
        self.info = ReaderInfo("synthetic", "synthetic", DecodeMode.ALL, ClockSource.ARRIVAL, None, size)

    def set_keyframes_only(self, on: bool) -> None:
        """Rendered, not decoded: nothing to skip."""

    @classmethod
    def defect_at(cls, seconds: float) -> str | None:
        t = seconds % cls.CYCLE_S
        if cls.STAIN_WINDOW[0] <= t < cls.STAIN_WINDOW[1]:
            return "stain"
        if cls.GLARE_WINDOW[0] <= t < cls.GLARE_WINDOW[1]:
            return "glare"
        return None

    @classmethod
    def render(cls, seconds: float) -> NDArray[np.uint8]:
        frame = np.full((cls.HEIGHT, cls.WIDTH, 3), 170, np.uint8)
        shift = int(seconds * 40) % 64  # faint belt texture that moves, so frames differ
        frame[:, (np.arange(cls.WIDTH) + shift) % 64 < 4] = 160
        defect = cls.defect_at(seconds)
        if defect is not None:
            x = 200 + int((seconds % cls.CYCLE_S) * 10) % 200
            value = 25 if defect == "stain" else 250
            frame[180:276, x : x + 96] = value
        return frame

    def read(self) -> Picture | None:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + self._period, time.monotonic() - self._period)
        return Picture.of(self.render(time.monotonic() - self._start))

    def release(self) -> None:
        pass


def open_reader(spec: StreamSpec) -> FrameReader:
    url = spec.url
    if url.startswith("synthetic://"):
        kind = url.removeprefix("synthetic://").split("?")[0]
        if kind != "conveyor":
            raise SourceError(f"unknown synthetic source {kind!r} (available: conveyor)")
        return ConveyorReader()
    if "://" not in url and not Path(url).is_file():
        raise SourceError(f"video file {url} does not exist")
    if spec.reader is ReaderKind.OPENCV:
        configure_ffmpeg_capture()
        return OpenCvReader(url, spec.open_timeout_s, spec.read_timeout_s, loop="://" not in url)
    from edge_runtime.sources.pyav_reader import PyAvReader

    return PyAvReader(
        url,
        spec.open_timeout_s,
        spec.read_timeout_s,
        spec.hwaccel,
        spec.hwaccel_fallback,
        file_loop="://" not in url,
    )
