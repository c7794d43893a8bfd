"""One capture thread per camera: reads continuously into a latest-wins slot, reopens by itself.

States: connecting -> streaming; a failed open or a stream that ends -> backoff (capped exponential,
jittered) -> connecting. The sampler calls `watchdog()`: a streaming camera with no frame for
`stall_timeout_s` is declared stalled and told to reopen. OpenCV reads are bounded by a read timeout
(the stall timeout); a read that runs into it is a stall too, and whatever frame FFmpeg hands back
then is dropped as stale. So a hung server never blocks the thread for long and no thread is abandoned.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from edge_runtime import metrics
from edge_runtime.domain import Frame
from edge_runtime.redact import redact_url
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.frame_slot import FrameSlot
from edge_runtime.sources.readers import FrameReader, SourceError, open_reader

log = logging.getLogger(__name__)

Opener = Callable[[str, float, float], FrameReader]


class CameraState(StrEnum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class CameraStatus:
    camera: str
    url: str  # redacted
    state: CameraState
    frames: int
    dropped: int
    reconnects: int
    stalls: int
    last_frame_age_s: float | None
    last_error: str | None

    def to_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "state": self.state.value,
            "frames": self.frames,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "stalls": self.stalls,
            "last_frame_age_s": None if self.last_frame_age_s is None else round(self.last_frame_age_s, 3),
            "last_error": self.last_error,
        }


class Capture:
    def __init__(self, settings: CameraSettings, opener: Opener = open_reader) -> None:
        self.settings = settings
        self.slot = FrameSlot()
        self._opener = opener
        self._stop = threading.Event()
        self._reopen = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = CameraState.STOPPED
        self._frames = 0
        self._reconnects = 0
        self._stalls = 0
        self._last_frame_mono: float | None = None
        self._last_error: str | None = None
        self._url = redact_url(settings.url)

    # --- called from the loop -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"camera {self.settings.id}: capture already running")  # one thread per camera
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.settings.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Signal the thread and wait for it; True when it ended within `timeout`."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def watchdog(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        last = self._last_frame_mono
        streaming = self._state is CameraState.STREAMING and last is not None
        if streaming and last is not None and now - last > self.settings.stall_timeout_s:
            self._declare_stall(f"no frame for {now - last:.1f} s")

    def _declare_stall(self, reason: str) -> None:
        if self._state is CameraState.STALLED:
            return
        self._stalls += 1
        metrics.CAMERA_STALLS.labels(self.settings.id).inc()
        self._last_error = reason
        log.warning("camera %s (%s) stalled: %s", self.settings.id, self._url, reason)
        self._set_state(CameraState.STALLED)
        self._reopen.set()

    def status(self) -> CameraStatus:
        last = self._last_frame_mono
        return CameraStatus(
            camera=self.settings.id,
            url=self._url,
            state=self._state,
            frames=self._frames,
            dropped=self.slot.dropped,
            reconnects=self._reconnects,
            stalls=self._stalls,
            last_frame_age_s=None if last is None else time.monotonic() - last,
            last_error=self._last_error,
        )

    @property
    def state(self) -> CameraState:
        return self._state

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    # --- the capture thread -----------------------------------------------------------------------
    def _set_state(self, state: CameraState) -> None:
        if state is not self._state:
            log.info("camera %s: %s -> %s", self.settings.id, self._state.value, state.value)
            self._state = state
            metrics.set_camera_state(self.settings.id, state.value, [s.value for s in CameraState])

    def _run(self) -> None:
        s = self.settings
        delay = s.backoff_initial_s
        read_timeout = max(0.5, s.stall_timeout_s)
        sequence = 0
        while not self._stop.is_set():
            self._set_state(CameraState.CONNECTING)
            self._reopen.clear()
            try:
                reader = self._opener(s.url, s.open_timeout_s, read_timeout)
            except (SourceError, OSError, RuntimeError, ValueError) as exc:
                self._last_error = str(exc)
                log.warning("camera %s (%s): %s", s.id, self._url, exc)
                self._backoff(delay)
                delay = min(delay * 2, s.backoff_max_s)
                continue
            try:
                while not self._stop.is_set() and not self._reopen.is_set():
                    started = time.monotonic()
                    image = reader.read()
                    waited = time.monotonic() - started
                    if waited >= 0.9 * read_timeout and self._state is CameraState.STREAMING:
                        # A read that ran into its timeout: a hung source. FFmpeg may still hand back a
                        # leftover frame here; it is not fresh, so it is dropped, never published.
                        self._declare_stall(f"no frame for {waited:.1f} s")
                        break
                    if image is None:
                        self._last_error = "the stream ended or a read timed out"
                        break
                    if self._reopen.is_set():
                        break  # the watchdog gave up on this stream while we were blocked
                    sequence += 1
                    self._frames += 1
                    self._last_frame_mono = time.monotonic()
                    self.slot.put(Frame(image, time.time(), sequence))
                    metrics.CAMERA_FRAMES.labels(s.id).inc()
                    if self._state is not CameraState.STREAMING and not self._reopen.is_set():
                        self._set_state(CameraState.STREAMING)
                        delay = s.backoff_initial_s
            finally:
                reader.release()
            if self._stop.is_set():
                break
            self._reconnects += 1
            metrics.CAMERA_RECONNECTS.labels(s.id).inc()
            log.warning("camera %s (%s): reconnecting: %s", s.id, self._url, self._last_error)
            self._backoff(delay)
            delay = min(delay * 2, s.backoff_max_s)
        self._set_state(CameraState.STOPPED)

    def _backoff(self, delay: float) -> None:
        self._set_state(CameraState.BACKOFF)
        self._stop.wait(delay * random.uniform(0.8, 1.2))  # jitter: cameras on one switch don't retry in step
