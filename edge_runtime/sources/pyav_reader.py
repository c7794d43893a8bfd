"""The stream reader: FFmpeg through PyAV, decoding only what the camera's policy needs.

- Frames are handed over undecoded-to-pixels (`Picture.pixels` converts to BGR when a sampler takes
  the frame); the colour conversion of frames nobody samples never happens.
- `set_keyframes_only(True)` makes the decoder skip every non-key frame (FFmpeg's skip_frame NONKEY);
  switching back takes effect at the next keyframe, so no frame is decoded against a missing reference.
- The keyframe interval is measured from the key packets' timestamps (decoding.KeyframeMeter).
- Opening waits for the first keyframe, bounded by the open timeout: a stream whose I-frame interval is
  longer says so instead of failing with a vague error or being declared stalled.
- While packets arrive but no frame is due (keyframes only, a long GOP), `read()` returns PENDING
  every HEARTBEAT_S, so the capture thread can tell a quiet decoder from a hung source.
- The hardware decoder follows decoding.plan_decoder; PyAV downloads hardware frames to system
  memory. Keeping them on the device (`HWAccel(is_hw_owned=True)` + DLPack into the inference
  provider) is the seam for a later zero-copy path.
- FFmpeg's reasons (404, 401, refused, no route, timed out, no decoder) become the SourceError message;
  FFmpeg's own log stays off (PyAV does not forward it unless asked), so retries are not noisy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from edge_runtime.errors import SourceError
from edge_runtime.sources.decoding import DecodeMode, DecoderPlan, HwAccel, KeyframeMeter, plan_decoder
from edge_runtime.sources.readers import PENDING, Pending, Picture, ReaderInfo
from edge_runtime.sources.stream_clock import ClockSource, StreamClock

HEARTBEAT_S = 0.5
RTSP_OPTIONS = {"rtsp_transport": "tcp"}  # no UDP loss on busy plants
# A little probing is enough for a camera: the codec parameters come with the SDP or the first packets.
PROBE_OPTIONS = {"analyzeduration": "1000000", "probesize": "1000000"}


def describe_av_error(exc: BaseException, timeout_s: float) -> str:
    """FFmpeg's reason for a failed open or read, without the URL (it may carry credentials)."""
    import av

    if isinstance(exc, av.error.ExitError | TimeoutError):
        return f"timed out after {timeout_s:g} s (no answer from the source)"
    if isinstance(exc, av.error.HTTPUnauthorizedError):
        return "401 Unauthorized: check the camera's user name and password"
    if isinstance(exc, av.error.HTTPForbiddenError):
        return "403 Forbidden: the camera refused this user"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "404 Not Found: the camera has no stream at this path"
    if isinstance(exc, av.error.DecoderNotFoundError):
        return "unsupported codec: PyAV's FFmpeg has no decoder for it"
    if isinstance(exc, av.error.InvalidDataError):
        return "invalid data: not a video stream FFmpeg can read (wrong URL, path or format)"
    # strerror, never str(exc): FFmpeg's exceptions quote the URL (and its credentials) in str().
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def _is_key(packet: Any) -> bool:
    return bool(packet.is_keyframe)


class PyAvReader:
    """Used by one capture thread; `set_keyframes_only` may be called from it between reads."""

    def __init__(
        self,
        url: str,
        open_timeout_s: float,
        read_timeout_s: float,
        hwaccel: HwAccel = HwAccel.AUTO,
        hwaccel_fallback: bool = False,
        file_loop: bool = False,
    ) -> None:
        import av

        self._timeout = (open_timeout_s, read_timeout_s)
        self._file_loop = file_loop
        options = dict(PROBE_OPTIONS)
        if url.startswith(("rtsp://", "rtsps://")):
            options.update(RTSP_OPTIONS)
        started = time.monotonic()
        try:
            self._container: Any = av.open(url, options=options, timeout=(open_timeout_s, read_timeout_s))
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open the stream: {describe_av_error(exc, open_timeout_s)}") from None
        try:
            if not self._container.streams.video:
                raise SourceError("cannot open the stream: it has no video track")
            self._stream = self._container.streams.video[0]
            codec = self._stream.codec_context.name
            self._plan = self._decoder_plan(hwaccel, hwaccel_fallback, codec)
            self._decoder = self._open_decoder(codec)
            self._meter = KeyframeMeter()
            self._clock = StreamClock()
            self._keyframes_only = False
            self._want_keyframes: bool | None = None  # a switch waiting for the next keyframe
            self._pace_origin: tuple[float, float] | None = None  # (monotonic, pts) of a file's start
            self._packets = self._demux()
            self._first: Picture | None = self._first_frame(started, open_timeout_s)
        except BaseException:
            self.release()
            raise

    # ---- the reader -------------------------------------------------------------------------------
    @property
    def info(self) -> ReaderInfo:
        return ReaderInfo(
            decoder=self._plan.decoder,
            decoder_note=self._plan.note,
            decode=DecodeMode.KEYFRAMES if self._keyframes_only else DecodeMode.ALL,
            clock=self._clock_source,
            keyframe_interval_s=self._meter.interval_s,
            resolution=(self._stream.codec_context.width, self._stream.codec_context.height),
        )

    @property
    def keyframe_interval_s(self) -> float | None:
        return self._meter.interval_s

    def set_keyframes_only(self, on: bool) -> None:
        if on and not self._keyframes_only:
            self._decoder.skip_frame = "NONKEY"
            self._keyframes_only, self._want_keyframes = True, None
        elif not on and self._keyframes_only:
            self._want_keyframes = False  # at the next keyframe: P-frames need their reference

    def read(self) -> Picture | Pending | None:
        """The next frame, PENDING while packets arrive but no frame is due for HEARTBEAT_S, or None
        when the stream ended; SourceError when the source failed (timed out, reset)."""
        if self._first is not None:
            first, self._first = self._first, None
            return first
        import av

        quiet_since = time.monotonic()
        try:
            for picture in self._pictures():
                if picture is not None:
                    return picture
                if time.monotonic() - quiet_since >= HEARTBEAT_S:
                    return PENDING
        except (av.error.FFmpegError, OSError) as exc:
            if isinstance(exc, av.error.EOFError):
                return None
            raise SourceError(describe_av_error(exc, self._timeout[1])) from None
        return None

    def release(self) -> None:
        # The demux generator refers to the reader: closed here, the decoder (FFmpeg threads, frame
        # pool) is freed now rather than at the next cyclic garbage collection.
        packets = getattr(self, "_packets", None)
        if packets is not None:
            packets.close()
        self._container.close()

    # ---- inside -----------------------------------------------------------------------------------
    def _decoder_plan(self, hwaccel: HwAccel, allow_fallback: bool, codec: str) -> DecoderPlan:
        if hwaccel is HwAccel.NONE:
            return plan_decoder(hwaccel, {}, allow_fallback)
        from edge_runtime.sources.hwprobe import probe

        return plan_decoder(hwaccel, probe(codec), allow_fallback)

    def _open_decoder(self, codec: str) -> Any:
        """The stream's own software decoder, or a hardware one fed the same codec parameters."""
        context = self._stream.codec_context
        context.thread_type = "SLICE"  # frame threading would hold frames back (latency) for no CPU gain
        if not self._plan.hardware:
            return context
        import av
        from av.codec.hwaccel import HWAccel

        from edge_runtime.sources.hwprobe import hw_decoder_name

        accel = HwAccel(self._plan.decoder)
        name = hw_decoder_name(accel, codec)
        decoder: Any
        if name is not None:
            decoder = av.CodecContext.create(name, "r")
        else:
            decoder = av.CodecContext.create(
                codec, "r", hwaccel=HWAccel(device_type=accel.value, allow_software_fallback=False)
            )
        decoder.extradata = context.extradata
        decoder.width, decoder.height = context.width, context.height
        return decoder

    def _demux(self) -> Iterator[Any]:
        while True:
            for packet in self._container.demux(self._stream):
                if packet.size:  # the demuxer's flush packet at the end carries no data
                    yield packet
            if not self._file_loop:
                return
            self._container.seek(0)
            self._pace_origin = None

    def _first_frame(self, started: float, open_timeout_s: float) -> Picture:
        """Frames before the first keyframe cannot be decoded; waiting for it is part of the open."""
        import av

        try:
            for picture in self._pictures():
                if picture is not None:
                    return picture
                if time.monotonic() - started > open_timeout_s:
                    break
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open the stream: {describe_av_error(exc, open_timeout_s)}") from None
        waited = time.monotonic() - started
        if waited <= open_timeout_s:
            raise SourceError("cannot open the stream: it ended before the first frame")
        raise SourceError(
            f"no keyframe in {open_timeout_s:g} s: raise open_timeout_s or shorten the camera's"
            " I-frame interval"
        )

    def _pictures(self) -> Iterator[Picture | None]:
        """Decoded frames, with None after each packet that gave none (so callers can keep time)."""
        for packet in self._packets:
            key = _is_key(packet)
            if key:
                self._meter.keyframe(None if packet.pts is None else float(packet.pts * packet.time_base))
                if self._want_keyframes is False:
                    self._decoder.skip_frame = "DEFAULT"
                    self._keyframes_only, self._want_keyframes = False, None
            if self._file_loop:
                self._pace(packet)
            produced = False
            for frame in self._decoder.decode(packet):
                produced = True
                yield self._picture(frame)
            if not produced:
                yield None

    def _pace(self, packet: Any) -> None:
        """A file plays at its own rate, like a camera would (by the packets' timestamps)."""
        if packet.pts is None:
            return
        pts = float(packet.pts * packet.time_base)
        now = time.monotonic()
        if self._pace_origin is None or pts < self._pace_origin[1]:
            self._pace_origin = (now, pts)
            return
        due = self._pace_origin[0] + (pts - self._pace_origin[1])
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:  # fell behind (a slow box): catch up instead of racing
            self._pace_origin = (now, pts)

    def _picture(self, frame: Any) -> Picture:
        arrival = time.time()
        if self._file_loop:
            captured_at, self._clock_source = arrival, ClockSource.ARRIVAL
        else:
            realtime = self._container.start_time_realtime
            pts = None if frame.pts is None else float(frame.pts * self._stream.time_base)
            captured_at, self._clock_source = self._clock.captured_at(
                pts, arrival, None if realtime is None else realtime / 1e6
            )
        settled = self._clock.settled(arrival, self._clock_source)
        return Picture(lambda: frame.to_ndarray(format="bgr24"), captured_at, self._clock_source, settled)

    _clock_source = ClockSource.ARRIVAL
