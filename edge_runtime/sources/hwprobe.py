"""What hardware decoders this box has, for decoding plan_decoder's input: probed, never guessed.

A probe answers per accelerator None (usable for this codec) or why not, in words an operator can act
on. Results are cached per codec for the process: devices do not come and go under a running module.
"""

from __future__ import annotations

import functools
import glob

from edge_runtime.sources.decoding import AUTO_ORDER, HwAccel

# Accelerators used through a device context on FFmpeg's own decoder (av.open(hwaccel=...)), and
# those that are separate FFmpeg decoders (h264_qsv, h264_v4l2m2m).
DEVICE_ACCELS = (HwAccel.CUDA, HwAccel.VAAPI)
DECODER_SUFFIX = {HwAccel.QSV: "qsv", HwAccel.V4L2M2M: "v4l2m2m"}


def hw_decoder_name(accel: HwAccel, codec: str) -> str | None:
    """The FFmpeg decoder to open for `accel` (None: the codec's own decoder with a device context)."""
    suffix = DECODER_SUFFIX.get(accel)
    return None if suffix is None else f"{codec}_{suffix}"


@functools.cache
def probe(codec: str) -> dict[HwAccel, str | None]:
    return {accel: _probe_one(accel, codec) for accel in AUTO_ORDER}


def _probe_one(accel: HwAccel, codec: str) -> str | None:
    import av
    from av.codec.hwaccel import HWAccel, hwdevices_available

    decoder = hw_decoder_name(accel, codec)
    if decoder is not None and decoder not in av.codecs_available:
        return f"PyAV's FFmpeg has no {decoder} decoder"
    if accel is HwAccel.V4L2M2M:
        # A SoC decoder is a /dev/video node; FFmpeg finds the right one when the codec opens.
        return None if glob.glob("/dev/video*") else "no V4L2 memory-to-memory device (/dev/video*)"
    if accel.value not in hwdevices_available():
        return f"PyAV's FFmpeg was built without {accel.value}"
    try:
        HWAccel(device_type=accel.value, allow_software_fallback=False).create(
            av.codec.Codec(decoder or codec, "r")
        )
    except (OSError, NotImplementedError, ValueError, av.error.FFmpegError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return None
