"""The decode decisions, table-tested: which decoder (plan_decoder), which frames (choose_decode), the
keyframe interval they follow (KeyframeMeter), and the settings the legacy OpenCV reader refuses."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import numpy as np
import pytest
from pydantic import ValidationError

from edge_runtime.errors import SourceError
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import Capture
from edge_runtime.sources.decoding import (
    AUTO_ORDER,
    SOFTWARE,
    DecodeMode,
    DecoderUnavailable,
    HwAccel,
    KeyframeMeter,
    choose_decode,
    plan_decoder,
)
from edge_runtime.sources.readers import PENDING, Pending, Picture, ReaderInfo, StreamSpec
from edge_runtime.sources.stream_clock import ClockSource
from edge_runtime.status import CameraStatus

CUDA, QSV, VAAPI, V4L2 = HwAccel.CUDA, HwAccel.QSV, HwAccel.VAAPI, HwAccel.V4L2M2M
NO_NVIDIA = "no NVIDIA driver (libcuda.so.1 not found)"
NO_QSV = "PyAV's FFmpeg has no h264_qsv decoder"
NO_VAAPI = "PyAV's FFmpeg was built without vaapi"
NO_V4L2 = "no V4L2 memory-to-memory device (/dev/video*)"
NONE_USABLE: dict[HwAccel, str | None] = {CUDA: NO_NVIDIA, QSV: NO_QSV, VAAPI: NO_VAAPI, V4L2: NO_V4L2}
ALL_USABLE: dict[HwAccel, str | None] = dict.fromkeys(AUTO_ORDER)


# --------------------------------------------------------------------------------------------------
# plan_decoder


def test_auto_order_prefers_a_discrete_gpu_then_the_igpu_then_soc_decoders() -> None:
    assert AUTO_ORDER == (CUDA, QSV, VAAPI, V4L2)


@pytest.mark.parametrize(
    ("probes", "decoder"),
    [
        (ALL_USABLE, "cuda"),
        ({**NONE_USABLE, QSV: None, VAAPI: None}, "qsv"),  # the first usable one in AUTO_ORDER
        ({**NONE_USABLE, VAAPI: None, V4L2: None}, "vaapi"),
        ({**NONE_USABLE, V4L2: None}, "v4l2m2m"),
        ({V4L2: None}, "v4l2m2m"),  # the others not probed at all
    ],
    ids=["all-usable", "qsv-first-usable", "vaapi-before-v4l2", "only-v4l2", "only-v4l2-probed"],
)
def test_auto_takes_the_first_usable_accelerator_in_order(
    probes: Mapping[HwAccel, str | None], decoder: str
) -> None:
    plan = plan_decoder(HwAccel.AUTO, probes)
    assert plan.decoder == decoder
    assert plan.hardware is True
    assert plan.note == "hwaccel: auto"


def test_auto_with_nothing_usable_decodes_in_software_and_says_why_for_each() -> None:
    plan = plan_decoder(HwAccel.AUTO, NONE_USABLE)
    assert plan.decoder == SOFTWARE and plan.hardware is False
    assert plan.note.startswith("hwaccel: auto, no hardware decoder usable (")
    for accel, reason in NONE_USABLE.items():
        assert f"{accel.value}: {reason}" in plan.note, plan.note
    # in AUTO_ORDER, so an operator reads them in the order they were tried
    positions = [plan.note.index(f"{accel.value}: ") for accel in AUTO_ORDER]
    assert positions == sorted(positions), plan.note


def test_auto_with_no_probes_names_each_accelerator_as_not_probed() -> None:
    plan = plan_decoder(HwAccel.AUTO, {CUDA: NO_NVIDIA})
    assert plan.decoder == SOFTWARE
    assert f"cuda: {NO_NVIDIA}" in plan.note
    for accel in (QSV, VAAPI, V4L2):
        assert f"{accel.value}: not probed" in plan.note, plan.note


@pytest.mark.parametrize("allow_fallback", [False, True])
@pytest.mark.parametrize("accel", AUTO_ORDER, ids=[a.value for a in AUTO_ORDER])
def test_a_named_usable_accelerator_is_used(accel: HwAccel, allow_fallback: bool) -> None:
    probes = {**NONE_USABLE, accel: None}
    plan = plan_decoder(accel, probes, allow_fallback)
    assert (plan.decoder, plan.note, plan.hardware) == (accel.value, f"hwaccel: {accel.value}", True)


@pytest.mark.parametrize(
    ("accel", "probes", "reason"),
    [
        (CUDA, NONE_USABLE, NO_NVIDIA),
        (VAAPI, {**NONE_USABLE, CUDA: None}, NO_VAAPI),  # another accelerator usable: not taken instead
        (QSV, {CUDA: None}, "not probed"),
    ],
    ids=["cuda-missing", "vaapi-missing-cuda-usable", "qsv-not-probed"],
)
def test_a_named_missing_accelerator_is_an_error_naming_the_reason_and_the_fallback(
    accel: HwAccel, probes: Mapping[HwAccel, str | None], reason: str
) -> None:
    with pytest.raises(DecoderUnavailable) as caught:
        plan_decoder(accel, probes, allow_fallback=False)
    message = str(caught.value)
    assert f"hwaccel {accel.value} is not usable here: {reason}" in message
    assert "hwaccel_fallback: true" in message
    # a SourceError: the capture counts it as a failed open and shows it in last_error
    assert isinstance(caught.value, SourceError)


@pytest.mark.parametrize(
    ("accel", "probes", "reason"),
    [(CUDA, NONE_USABLE, NO_NVIDIA), (V4L2, {**NONE_USABLE, CUDA: None}, NO_V4L2), (QSV, {}, "not probed")],
    ids=["cuda-missing", "v4l2-missing-cuda-usable", "qsv-not-probed"],
)
def test_a_named_missing_accelerator_with_fallback_decodes_in_software_and_says_so(
    accel: HwAccel, probes: Mapping[HwAccel, str | None], reason: str
) -> None:
    plan = plan_decoder(accel, probes, allow_fallback=True)
    assert plan.decoder == SOFTWARE and plan.hardware is False
    assert f"hwaccel {accel.value} is not usable here: {reason}" in plan.note
    assert "decoding in software (hwaccel_fallback: true)" in plan.note


@pytest.mark.parametrize("probes", [ALL_USABLE, NONE_USABLE, {}], ids=["all-usable", "none-usable", "none"])
def test_hwaccel_none_decodes_in_software_whatever_the_probes_say(
    probes: Mapping[HwAccel, str | None],
) -> None:
    plan = plan_decoder(HwAccel.NONE, probes)
    assert (plan.decoder, plan.note, plan.hardware) == (SOFTWARE, "hwaccel: none", False)


# --------------------------------------------------------------------------------------------------
# choose_decode


@pytest.mark.parametrize(
    ("mode", "period", "interval", "keyframes_only", "reason"),
    [
        (DecodeMode.ALL, 10.0, 1.0, False, "decode: all"),  # even when keyframes would do
        (DecodeMode.ALL, 0.1, None, False, "decode: all"),
        (DecodeMode.KEYFRAMES, 0.1, 1.0, True, "decode: keyframes"),  # even when sampled faster
        (DecodeMode.KEYFRAMES, 0.5, None, True, "decode: keyframes"),
        (DecodeMode.AUTO, 5.0, None, False, "decode: auto, keyframe interval not measured yet"),
        (DecodeMode.AUTO, 2.0, 2.0, True, r"decode: auto, sampling every 2 s >= keyframes every 2(\.0)? s"),
        (DecodeMode.AUTO, 2.0, 1.0, True, r"decode: auto, sampling every 2 s >= keyframes every 1(\.0)? s"),
        # a live stream's keyframes jitter by milliseconds: 2.003 s is "every 2 s" still
        (
            DecodeMode.AUTO,
            2.0,
            2.003,
            True,
            r"decode: auto, sampling every 2 s >= keyframes every 2(\.0|\.003)? s",
        ),
        (DecodeMode.AUTO, 0.5, 1.0, False, r"decode: auto, sampling every 0.5 s < keyframes every 1(\.0)? s"),
        (DecodeMode.AUTO, 0.9, 1.0, False, r"decode: auto, sampling every 0.9 s < keyframes every 1(\.0)? s"),
        (DecodeMode.AUTO, 0.2, 4.0, False, r"decode: auto, sampling every 0.2 s < keyframes every 4(\.0)? s"),
    ],
    ids=[
        "all",
        "all-unmeasured",
        "keyframes",
        "keyframes-unmeasured",
        "auto-unmeasured",
        "auto-equal",
        "auto-gop-shorter",
        "auto-gop-jitter",
        "auto-gop-longer",
        "auto-gop-10pc-longer",
        "auto-long-gop",
    ],
)
def test_choose_decode(
    mode: DecodeMode, period: float, interval: float | None, keyframes_only: bool, reason: str
) -> None:
    choice = choose_decode(mode, period, interval)
    assert choice.keyframes_only is keyframes_only
    assert choice.mode is (DecodeMode.KEYFRAMES if keyframes_only else DecodeMode.ALL)
    assert re.fullmatch(reason, choice.reason), choice.reason


# --------------------------------------------------------------------------------------------------
# KeyframeMeter


def measured(times: list[float | None], window: int = 3) -> list[float | None]:
    """The meter's interval after each keyframe time."""
    meter = KeyframeMeter(window)
    seen = []
    for at in times:
        meter.keyframe(at)
        seen.append(meter.interval_s)
    return seen


def test_a_steady_gop_is_measured_from_the_second_keyframe() -> None:
    assert measured([10.0, 11.0, 12.0, 13.0, 14.0]) == [None, 1.0, 1.0, 1.0, 1.0]


def test_the_interval_is_rounded_to_milliseconds() -> None:
    assert measured([0.0, 1 / 3, 2 / 3]) == [None, 0.333, 0.333]
    assert measured([0.0, 1.0404]) == [None, 1.04]


def test_a_longer_gop_shows_at_its_first_keyframe() -> None:
    assert measured([0.0, 1.0, 2.0, 3.0, 7.0, 11.0]) == [None, 1.0, 1.0, 1.0, 4.0, 4.0]


def test_a_shorter_gop_shows_only_once_three_intervals_confirm_it() -> None:
    # 4 s GOP, then 1 s: one early keyframe (a scene cut, a client joining) does not shorten it
    assert measured([0.0, 4.0, 8.0, 12.0, 13.0, 14.0, 15.0, 16.0]) == [
        None,
        4.0,
        4.0,
        4.0,
        4.0,
        4.0,
        1.0,
        1.0,
    ]


def test_a_single_early_keyframe_does_not_shorten_it() -> None:
    assert measured([0.0, 2.0, 4.0, 4.5, 6.5, 8.5, 10.5]) == [None, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]


def test_the_window_sets_how_many_intervals_confirm_a_shorter_gop() -> None:
    assert measured([0.0, 4.0, 5.0, 6.0], window=1) == [None, 4.0, 1.0, 1.0]
    assert measured([0.0, 4.0, 5.0, 6.0], window=2) == [None, 4.0, 4.0, 1.0]


@pytest.mark.parametrize("back_to", [0.5, 2.0], ids=["backwards", "repeated"])
def test_a_timestamp_going_backwards_starts_the_measurement_over(back_to: float) -> None:
    # a file looping, or a camera restarting its clock: no negative or zero interval, no stale one
    assert measured([0.0, 1.0, 2.0, back_to, back_to + 3.0, back_to + 6.0]) == [
        None,
        1.0,
        1.0,
        None,
        3.0,
        3.0,
    ]


def test_keyframes_without_a_timestamp_are_ignored() -> None:
    assert measured([None, None]) == [None, None]
    assert measured([None, 5.0, None, 6.0, None, 7.0]) == [None, None, None, 1.0, 1.0, 1.0]
    # a missing timestamp neither resets the measurement nor counts as an interval
    assert measured([0.0, 4.0, None, 8.0, 9.0, None, 10.0]) == [None, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]


# --------------------------------------------------------------------------------------------------
# CameraSettings: the legacy OpenCV reader cannot follow decode or hwaccel


@pytest.mark.parametrize(
    "controls",
    [{"decode": "keyframes"}, {"hwaccel": "cuda"}, {"hwaccel": "vaapi"}, {"hwaccel": "qsv"}],
    ids=["decode-keyframes", "hwaccel-cuda", "hwaccel-vaapi", "hwaccel-qsv"],
)
def test_reader_opencv_refuses_keyframes_and_hardware_decoders(controls: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match=r"reader: opencv decodes every frame in software") as caught:
        CameraSettings(id="legacy", url="rtsp://cam/x", reader="opencv", **controls)  # type: ignore[arg-type]
    assert "'legacy'" in str(caught.value)


@pytest.mark.parametrize(
    "controls",
    [{}, {"decode": "all"}, {"decode": "auto"}, {"hwaccel": "none"}, {"hwaccel": "auto"}],
    ids=["defaults", "decode-all", "decode-auto", "hwaccel-none", "hwaccel-auto"],
)
def test_reader_opencv_accepts_what_it_does(controls: dict[str, str]) -> None:
    settings = CameraSettings(id="legacy", url="rtsp://cam/x", reader="opencv", **controls)  # type: ignore[arg-type]
    assert settings.reader.value == "opencv"


@pytest.mark.parametrize(
    "controls",
    [{"decode": "keyframes"}, {"hwaccel": "cuda"}, {"hwaccel": "v4l2m2m", "hwaccel_fallback": True}],
)
def test_reader_pyav_accepts_every_control(controls: dict[str, object]) -> None:
    settings = CameraSettings(id="cam", url="rtsp://cam/x", **controls)  # type: ignore[arg-type]
    assert settings.reader.value == "pyav"


# --------------------------------------------------------------------------------------------------
# Keyframes only and the watchdog: a frame once a GOP is not a stall


class GopReader:
    """A camera with a keyframe every `gop_s` and 50 fps between: all frames, or only keyframes once
    told (a PENDING heartbeat every 50 ms between them); the interval is known from the second keyframe."""

    def __init__(self, gop_s: float) -> None:
        self.gop_s = gop_s
        self.keyframes_only = False
        self.keyframes = 0
        self.next_keyframe = time.monotonic()

    @property
    def info(self) -> ReaderInfo:
        decode = DecodeMode.KEYFRAMES if self.keyframes_only else DecodeMode.ALL
        interval = self.gop_s if self.keyframes >= 2 else None
        return ReaderInfo("software", "scripted", decode, ClockSource.ARRIVAL, interval)

    def read(self) -> Picture | Pending:
        now = time.monotonic()
        if now >= self.next_keyframe:
            self.keyframes += 1
            self.next_keyframe = now + self.gop_s
            return Picture.of(np.zeros((2, 2, 3), np.uint8))
        if self.keyframes_only:
            time.sleep(min(0.05, self.next_keyframe - now))
            return PENDING
        time.sleep(0.02)
        return Picture.of(np.zeros((2, 2, 3), np.uint8))

    def set_keyframes_only(self, on: bool) -> None:
        self.keyframes_only = on

    def release(self) -> None:
        pass


def run_gop_camera(decode: str, seconds: float) -> tuple[CameraStatus, list[GopReader]]:
    """A camera sampled every 2 s on a 0.6 s GOP, with a 0.4 s stall timeout; the watchdog every 50 ms."""
    readers: list[GopReader] = []

    def opener(spec: StreamSpec) -> GopReader:
        readers.append(GopReader(gop_s=0.6))
        return readers[-1]

    settings = CameraSettings(
        id=f"gop-{decode}",
        url="rtsp://camera/gop",
        fps=0.5,
        decode=decode,  # type: ignore[arg-type]
        stall_timeout_s=0.4,
        open_timeout_s=1.0,
        backoff_initial_s=0.05,
        backoff_max_s=0.05,
    )
    capture = Capture(settings, opener)
    capture.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            capture.watchdog()
            time.sleep(0.05)
        status = capture.status()
    finally:
        assert capture.stop()
    return status, readers


def test_decode_auto_waits_a_gop_for_each_keyframe_without_a_stall() -> None:
    status, readers = run_gop_camera("auto", 2.0)
    assert status.stream is not None and status.stream.decode == "keyframes", status
    assert readers[0].keyframes >= 3, "the test must cover gaps between keyframes"
    assert (status.stalls, status.reconnects, len(readers)) == (0, 0, 1), status


def test_decode_keyframes_waits_a_gop_for_each_keyframe_without_a_stall() -> None:
    status, readers = run_gop_camera("keyframes", 2.0)
    assert status.stream is not None and status.stream.decode == "keyframes", status
    assert readers[0].keyframes >= 3, f"{len(readers)} readers opened: {status}"
    assert (status.stalls, status.reconnects, len(readers)) == (0, 0, 1), status
