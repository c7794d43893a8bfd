"""How a camera's stream is decoded: which decoder (hardware or software) and which frames.

Pure decisions, table-tested like the inference device plan (backends/providers.py); the probing that
feeds them lives in sources/hwprobe.py and the reader that follows them in sources/pyav_reader.py.

- `plan_decoder(requested, probes, allow_fallback)`: `auto` takes the first accelerator in
  AUTO_ORDER that the probe found usable, else software, and says why; a named accelerator that is
  missing is an error (DecoderUnavailable) unless fallback is allowed, and then the fallback is in
  the plan's note. The plan is always shown (status, metric label, twin): never a silent fallback.
- `choose_decode(mode, sample_period_s, keyframe_interval_s)`: `auto` decodes keyframes only when the
  sampling period is at least the keyframe interval measured from the stream (within
  KEYFRAME_TOLERANCE: every sampled frame is then at most one keyframe interval old), all frames
  otherwise or while nothing is measured yet.
- `KeyframeMeter`: the keyframe interval from the stream's own timestamps, following changes.

A decoded frame could stay on the accelerator for inference (PyAV's `is_hw_owned` + DLPack into
onnxruntime's CUDA provider, or OpenVINO remote tensors on an Intel iGPU); today frames are downloaded
to system memory, converted only when sampled. That seam is in pyav_reader.PyAvReader.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from edge_runtime.errors import SourceError


class HwAccel(StrEnum):
    AUTO = "auto"
    NONE = "none"  # software decode, asked for
    CUDA = "cuda"  # NVDEC through FFmpeg's cuda hwaccel
    QSV = "qsv"  # Intel Quick Sync (the h264_qsv/hevc_qsv decoders)
    VAAPI = "vaapi"  # Intel/AMD through VA-API
    V4L2M2M = "v4l2m2m"  # SoC decoders (Raspberry Pi, some Jetson/Rockchip images)


class ReaderKind(StrEnum):
    PYAV = "pyav"
    OPENCV = "opencv"  # the reader before PyAV: OpenCV read() and converts every frame (kept to compare)


class DecodeMode(StrEnum):
    AUTO = "auto"
    ALL = "all"
    KEYFRAMES = "keyframes"


SOFTWARE = "software"
# A live source's timestamps jitter by milliseconds: sampling every 2 s with keyframes every 2.003 s
# is "keyframes only" (a sampled frame is then at most one keyframe interval old).
KEYFRAME_TOLERANCE = 0.05
# What `auto` prefers: a discrete GPU's decoder first, then the iGPU's, then SoC decoders.
AUTO_ORDER = (HwAccel.CUDA, HwAccel.QSV, HwAccel.VAAPI, HwAccel.V4L2M2M)


class DecoderUnavailable(SourceError):
    """A named hardware decoder is missing and fallback to software was not allowed."""


@dataclass(frozen=True, slots=True)
class DecoderPlan:
    decoder: str  # an HwAccel value or "software": the metric label and the status field
    note: str  # why this one (shown in status and the log)

    @property
    def hardware(self) -> bool:
        return self.decoder != SOFTWARE


def plan_decoder(
    requested: HwAccel, probes: Mapping[HwAccel, str | None], allow_fallback: bool = False
) -> DecoderPlan:
    """`probes[accel]` is None when that accelerator can decode this stream here, else why not; an
    accelerator absent from `probes` was not probed (not usable)."""
    if requested is HwAccel.NONE:
        return DecoderPlan(SOFTWARE, "hwaccel: none")

    def why_not(accel: HwAccel) -> str:
        return probes.get(accel, "not probed") or ""

    if requested is HwAccel.AUTO:
        for accel in AUTO_ORDER:
            if accel in probes and probes[accel] is None:
                return DecoderPlan(accel.value, "hwaccel: auto")
        tried = "; ".join(f"{a.value}: {why_not(a)}" for a in AUTO_ORDER)
        return DecoderPlan(SOFTWARE, f"hwaccel: auto, no hardware decoder usable ({tried})")
    if requested in probes and probes[requested] is None:
        return DecoderPlan(requested.value, f"hwaccel: {requested.value}")
    reason = f"hwaccel {requested.value} is not usable here: {why_not(requested)}"
    if not allow_fallback:
        raise DecoderUnavailable(f"{reason} (set hwaccel_fallback: true to decode in software instead)")
    return DecoderPlan(SOFTWARE, f"{reason}; decoding in software (hwaccel_fallback: true)")


@dataclass(frozen=True, slots=True)
class DecodeChoice:
    keyframes_only: bool
    reason: str

    @property
    def mode(self) -> DecodeMode:
        return DecodeMode.KEYFRAMES if self.keyframes_only else DecodeMode.ALL


def choose_decode(
    mode: DecodeMode, sample_period_s: float, keyframe_interval_s: float | None
) -> DecodeChoice:
    if mode is DecodeMode.ALL:
        return DecodeChoice(False, "decode: all")
    if mode is DecodeMode.KEYFRAMES:
        return DecodeChoice(True, "decode: keyframes")
    if keyframe_interval_s is None:
        return DecodeChoice(False, "decode: auto, keyframe interval not measured yet")
    keyframes_only = sample_period_s >= (1 - KEYFRAME_TOLERANCE) * keyframe_interval_s
    relation = ">=" if keyframes_only else "<"
    return DecodeChoice(
        keyframes_only,
        f"decode: auto, sampling every {sample_period_s:g} s {relation}"
        f" keyframes every {keyframe_interval_s:.1f} s",
    )


class KeyframeMeter:
    """The keyframe interval (s) from the timestamps of key packets: the longest of the last `window`
    intervals, so one early keyframe (a scene cut, a client joining) does not shorten it; a longer GOP
    shows at the next keyframe, a shorter one once `window` intervals confirm it. A timestamp that goes
    backwards (a file looping, a camera restarting its clock) starts the measurement over."""

    def __init__(self, window: int = 3) -> None:
        self._last: float | None = None
        self._intervals: deque[float] = deque(maxlen=window)

    def keyframe(self, at_s: float | None) -> None:
        if at_s is None:
            return
        if self._last is not None:
            if at_s <= self._last:
                self._intervals.clear()
            else:
                self._intervals.append(at_s - self._last)
        self._last = at_s

    @property
    def interval_s(self) -> float | None:
        return round(max(self._intervals), 3) if self._intervals else None
