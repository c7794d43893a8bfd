"""One capture thread per camera stream: reads continuously into a latest-wins slot, reopens by itself.

The reader hands over decoded frames unconverted (a Frame converts on first look), so a frame nobody
samples costs its decode only. After every read the thread applies the camera's decode policy
(decoding.choose_decode: keyframes only when the sampling period allows it, following the measured
keyframe interval) and pushes a status when what the reader does changes (decoder, decode mode, clock).
A `view` capture (the snapshot stream of a camera with a detect_url) always decodes keyframes only.

States: connecting -> streaming; a failed open or a stream that ends -> backoff (capped exponential,
jittered) -> connecting. The sampler calls `watchdog()`: a streaming camera with no frame for
`stall_timeout_s` is shown stalled at once and the thread is told to reopen; it shows `stalled` (not
`backoff`) until the reopen starts. OpenCV reads are bounded by a read timeout (the stall timeout); a
read that runs into it is a stall too, and whatever frame FFmpeg hands back then is dropped as stale.
So a hung server never blocks the thread for long and no thread is abandoned.

Only the capture thread writes the capture's state and counters; the watchdog (on the loop) raises a
flag the thread reads. Every change of state is pushed to `report` (the status board), and progress
(frame counts) at most once a second.

Every failure is counted with its reason (edge_runtime_camera_failures_total{reason}) and kept in the
status (`last_failure`): states last from a fraction of a second, so a scraped gauge may miss them.

Recovery after the source is back, worst case: the attempt under way when it returns (up to
open_timeout_s if it times out; a refused connection fails at once) + the backoff wait (at most
1.2 x backoff_max_s: the delay never exceeds backoff_max_s, the jitter is x0.8..1.2) + the successful
open + the first frame (bounded by the read timeout).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge_runtime import metrics
from edge_runtime.backoff import Backoff
from edge_runtime.domain import Frame
from edge_runtime.errors import SourceError
from edge_runtime.redact import redact_url
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.decoding import DecodeChoice, DecodeMode, choose_decode
from edge_runtime.sources.frame_slot import FrameSlot
from edge_runtime.sources.readers import FrameReader, Pending, ReaderInfo, StreamSpec, open_reader
from edge_runtime.status import CameraState, CameraStatus, Failure, FailureReason, StreamInfo

__all__ = ["CameraState", "CameraStatus", "Capture", "Failure", "FailureReason"]
log = logging.getLogger(__name__)

Opener = Callable[[StreamSpec], FrameReader]
Report = Callable[[CameraStatus], None]
PROGRESS_EVERY_S = 1.0  # frame counts reach the status board this often at most


class Capture:
    def __init__(
        self,
        settings: CameraSettings,
        opener: Opener = open_reader,
        report: Report | None = None,
        view: bool = False,
    ) -> None:
        """`report(status)` is called from the capture thread (and from watchdog()); it must be
        thread-safe. `view`: read `url` for snapshots (keyframes only), not the inspected stream."""
        self.settings = settings
        self.view = view
        self.stream_name = "view" if view else "inspect"
        self.slot = FrameSlot()
        self._opener = opener
        self._report = report
        self._stop = threading.Event()
        self._reopen = threading.Event()
        self._stall_seen: str | None = None  # written by the watchdog (loop), read by the thread
        self._thread: threading.Thread | None = None
        self._state = CameraState.STOPPED
        self._frames = 0
        self._reconnects = 0
        self._stalls = 0
        self._failures = 0
        self._last_failure: Failure | None = None
        self._stall_seen_at = 0.0  # wall clock of the watchdog's flag (_stall_seen)
        self._last_frame_mono: float | None = None
        self._last_frame_at: float | None = None
        self._last_reported = 0.0
        self._last_error: str | None = None
        self._url = redact_url(self.url)
        self._reader_info: ReaderInfo | None = None
        self._decode = DecodeChoice(False, "")
        self._stream: StreamInfo | None = None

    @property
    def url(self) -> str:
        return self.settings.url if self.view else self.settings.inspect_url

    def retune(self, settings: CameraSettings) -> None:
        """New sampling settings (fps, decode) for the running stream: the thread reads them next."""
        self.settings = settings

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
        """From the loop: a streaming camera with no frame for stall_timeout_s shows `stalled` now and
        its thread is told to reopen (the thread counts the stall: it is the only writer)."""
        now = time.monotonic() if now is None else now
        last = self._last_frame_mono
        streaming = self._state is CameraState.STREAMING and last is not None
        allowed = self.settings.stall_timeout_s
        info = self._reader_info
        if self._decode.keyframes_only and info is not None:
            # A frame comes once a keyframe interval; before one is measured (a new reader), allow
            # what an open allows for the first keyframe. A hung source still hits the read timeout.
            allowed += info.keyframe_interval_s or self.settings.open_timeout_s
        overdue = streaming and last is not None and now - last > allowed
        if overdue and last is not None and self._stall_seen is None:
            self._stall_seen_at = time.time()  # before the flag: a reader that sees it sees this
            self._stall_seen = f"no frame for {now - last:.1f} s"
            self._reopen.set()
            self._push()

    # --- the capture thread -----------------------------------------------------------------------
    def _declare_stall(self, reason: str) -> None:
        if self._state is CameraState.STALLED:
            self._stall_seen = None
            return
        # Counted here, then the watchdog's flag cleared at once: status() counts a flagged stall
        # the thread has not counted yet, so a reader sees it exactly once (but for a few bytecodes).
        self._failed(FailureReason.STALLED, reason, stall=True)
        self._stall_seen = None
        self._set_state(CameraState.STALLED)
        metrics.CAMERA_STALLS.labels(self.settings.id).inc()
        log.warning("camera %s (%s) stalled: %s", self.settings.id, self._url, reason)
        self._reopen.set()

    def _failed(self, reason: FailureReason, error: str, stall: bool = False) -> None:
        self._stalls += stall
        self._failures += 1
        self._last_failure = Failure(reason, time.time())
        self._last_error = error
        metrics.CAMERA_FAILURES.labels(self.settings.id, reason.value).inc()

    def status(self) -> CameraStatus:
        stall = self._stall_seen
        # A stall the watchdog saw and the thread (still blocked in a read) has not counted yet.
        pending = stall is not None and self._state is CameraState.STREAMING
        return CameraStatus(
            camera=self.settings.id,
            url=self._url,
            state=CameraState.STALLED if pending else self._state,
            frames=self._frames,
            superseded=self.slot.dropped,
            reconnects=self._reconnects,
            stalls=self._stalls + pending,
            last_frame_at=self._last_frame_at,
            last_error=stall if pending else self._last_error,
            failures=self._failures + pending,
            # A pending stall is the last failure already (as in stalls and failures above).
            last_failure=Failure(FailureReason.STALLED, self._stall_seen_at)
            if pending
            else self._last_failure,
            stream=self._stream,
        )

    @property
    def state(self) -> CameraState:
        if self._stall_seen is not None and self._state is CameraState.STREAMING:
            return CameraState.STALLED  # seen by the watchdog; the thread has not got out of its read
        return self._state

    @property
    def thread(self) -> threading.Thread | None:
        """The capture thread (a test seam: tests check it is one thread, and that it ends)."""
        return self._thread

    def _push(self) -> None:
        if self._report is not None:
            self._last_reported = time.monotonic()
            self._report(self.status())

    def _set_state(self, state: CameraState) -> None:
        if state is not self._state:
            log.info("camera %s: %s -> %s", self.settings.id, self._state.value, state.value)
            self._state = state
            metrics.set_camera_state(self.settings.id, state.value, [s.value for s in CameraState])
            self._push()

    def _spec(self) -> StreamSpec:
        s = self.settings
        return StreamSpec(
            self.url, s.open_timeout_s, max(0.5, s.stall_timeout_s), s.reader, s.hwaccel, s.hwaccel_fallback
        )

    def _follow(self, reader: FrameReader) -> None:
        """Apply the decode policy and show what the reader does when that changed."""
        info = reader.info
        mode = DecodeMode.KEYFRAMES if self.view else self.settings.decode
        choice = choose_decode(mode, 1.0 / self.settings.fps, info.keyframe_interval_s)
        if choice.keyframes_only != self._decode.keyframes_only:
            reader.set_keyframes_only(choice.keyframes_only)
            log.info("camera %s (%s stream): %s", self.settings.id, self.stream_name, choice.reason)
            info = reader.info
        self._decode = choice
        self._reader_info = info
        interval = info.keyframe_interval_s
        stream = StreamInfo(
            decoder=info.decoder,
            decoder_note=info.decoder_note,
            decode=info.decode.value,
            decode_note=choice.reason,
            clock=info.clock.value,
            # Shown to 0.1 s: a live stream's keyframes jitter by milliseconds, not worth a push each.
            keyframe_interval_s=None if interval is None else round(interval, 1),
            resolution=info.resolution,
        )
        if stream == self._stream:
            return
        self._stream = stream
        metrics.set_camera_stream(
            self.settings.id,
            self.stream_name,
            (info.decoder, info.decode.value, info.clock.value),
            stream.keyframe_interval_s or 0.0,
        )
        self._push()

    def _run(self) -> None:
        s = self.settings
        backoff = Backoff(s.backoff_initial_s, s.backoff_max_s)
        sequence = 0
        while not self._stop.is_set():
            if self._state is not CameraState.STALLED:  # a stall stays shown until the stream is back
                self._set_state(CameraState.CONNECTING)
            self._reopen.clear()
            self._stall_seen = None  # a new stream: the watchdog may flag it afresh
            spec = self._spec()
            try:
                reader = self._opener(spec)
            except (SourceError, OSError, RuntimeError, ValueError) as exc:
                self._failed(FailureReason.OPEN_FAILED, str(exc) or type(exc).__name__)
                log.warning("camera %s (%s): %s", s.id, self._url, self._last_error)
                self._backoff(backoff.next_delay())
                continue
            self._decode = DecodeChoice(False, "")  # a new reader decodes every frame until told
            self._reader_info = None
            if reader.info.decoder_note:
                log.info(
                    "camera %s (%s stream): decoder %s (%s)",
                    s.id,
                    self.stream_name,
                    reader.info.decoder,
                    reader.info.decoder_note,
                )
            try:
                while not self._stop.is_set() and not self._reopen.is_set():
                    started = time.monotonic()
                    try:
                        picture = reader.read()
                        failure = None
                    except (SourceError, OSError) as exc:
                        picture, failure = None, str(exc) or type(exc).__name__
                    waited = time.monotonic() - started
                    if waited >= 0.9 * spec.read_timeout_s and self._state is CameraState.STREAMING:
                        # A read that ran into its timeout: a hung source. FFmpeg may still hand back a
                        # leftover frame here; it is not fresh, so it is dropped, never published.
                        self._declare_stall(f"no frame for {waited:.1f} s")
                        break
                    if picture is None:
                        self._failed(FailureReason.STREAM_ENDED, failure or "the stream ended")
                        break
                    if self._reopen.is_set():
                        if self._stall_seen is not None:  # the watchdog gave up on this stream
                            self._declare_stall(self._stall_seen)
                        break
                    self._follow(reader)
                    if isinstance(picture, Pending):
                        continue
                    sequence += 1
                    self._frames += 1
                    self._last_frame_mono = time.monotonic()
                    self._last_frame_at = picture.captured_at
                    self.slot.put(
                        Frame(picture.pixels, picture.captured_at, sequence, picture.clock, picture.settled)
                    )
                    metrics.CAMERA_FRAMES.labels(s.id).inc()
                    if self._state is not CameraState.STREAMING and not self._reopen.is_set():
                        self._set_state(CameraState.STREAMING)
                        backoff.reset()
                    elif self._last_frame_mono - self._last_reported >= PROGRESS_EVERY_S:
                        self._push()
            finally:
                reader.release()
            if self._stop.is_set():
                break
            self._reconnects += 1
            metrics.CAMERA_RECONNECTS.labels(s.id).inc()
            log.warning("camera %s (%s): reconnecting: %s", s.id, self._url, self._last_error)
            self._backoff(backoff.next_delay())
        self._set_state(CameraState.STOPPED)

    def _backoff(self, delay: float) -> None:
        if self._state is not CameraState.STALLED:  # a stall stays visible until the reopen starts
            self._set_state(CameraState.BACKOFF)
        else:
            self._push()  # the failure's details
        self._stop.wait(delay)  # Backoff jitters it: cameras on one switch don't retry in step
