"""Frame readers a capture thread opens: OpenCV for RTSP and files, a synthetic conveyor for the demo."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import SourceError

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


class FrameReader(Protocol):
    def read(self) -> NDArray[np.uint8] | None:
        """The next frame (BGR), or None when the stream ended or failed; may block up to the read timeout."""

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
        fps = self._cap.get(cv2.CAP_PROP_FPS) if loop else 0.0
        self._period = 1.0 / fps if fps and 0 < fps < 240 else 0.0
        self._next = time.monotonic()

    def read(self) -> NDArray[np.uint8] | None:
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
        return image

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

    def read(self) -> NDArray[np.uint8] | None:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + self._period, time.monotonic() - self._period)
        return self.render(time.monotonic() - self._start)

    def release(self) -> None:
        pass


def open_reader(url: str, open_timeout_s: float, read_timeout_s: float) -> FrameReader:
    if url.startswith("synthetic://"):
        kind = url.removeprefix("synthetic://").split("?")[0]
        if kind != "conveyor":
            raise SourceError(f"unknown synthetic source {kind!r} (available: conveyor)")
        return ConveyorReader()
    if "://" not in url and not Path(url).is_file():
        raise SourceError(f"video file {url} does not exist")
    configure_ffmpeg_capture()
    return OpenCvReader(url, open_timeout_s, read_timeout_s, loop="://" not in url)
