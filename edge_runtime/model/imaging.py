"""Bytes or camera frames -> a PIL image in display orientation, with size limits enforced first.

PIL is used (not OpenCV) because Custom Vision's container resamples with PIL; decoding gives the same
pixels either way (both use libjpeg-turbo), the resampler is what changes probabilities.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_runtime.errors import ImageDecodeError, ImageTooLargeError
from edge_runtime.model.limits import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_JPEG_SCANS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_RESIZED_PIXELS,
)

# We enforce our own pixel limit before decoding; PIL's global bomb check would warn/raise at other sizes.
Image.MAX_IMAGE_PIXELS = None

# Modes PIL resizes natively in the way the container does (RGBA premultiplied, L as one channel).
_KEPT_MODES = {"RGB", "RGBA", "L", "LA"}


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """Bounds checked before decoding. The defaults are model/limits.py's; a server passes its settings'."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_resized_pixels: int = DEFAULT_MAX_RESIZED_PIXELS
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
    formats: tuple[str, ...] = DEFAULT_FORMATS


Shrink = Callable[[int, int], tuple[int, int] | None]  # oriented (w, h) -> the smallest size wanted


def decode_image(
    data: bytes,
    limits: ImageLimits = ImageLimits(),
    check_size: Callable[[int, int], None] | None = None,
    shrink: Shrink | None = None,
) -> Image.Image:
    """Every bound is checked before the decoder runs: C decoders cannot be interrupted once started.
    `check_size(width, height)` adds the caller's own (the model's resize) to them. `shrink` (fast
    fidelity): a JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain, as small as still gives
    at least the size it returns for the picture's oriented size (None: full size)."""
    if not data:
        raise ImageDecodeError("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=limits.formats)
    except UnidentifiedImageError as exc:
        accepted = ", ".join(limits.formats)
        raise ImageDecodeError(f"not a recognised image format (accepted: {accepted})") from exc
    except Exception as exc:  # PIL's header parsers raise many kinds on hostile bytes
        raise ImageDecodeError(f"cannot read the image header: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"the image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"the image has {width}x{height} = {width * height} pixels, "
            f"more than the limit of {limits.max_pixels}"
        )
    if check_size is not None:
        check_size(width, height)
    if image.format in ("JPEG", "MPO"):
        scans = jpeg_scan_count(data)
        if scans > limits.max_jpeg_scans:
            raise ImageTooLargeError(
                f"the JPEG has {scans} scans, more than the limit of {limits.max_jpeg_scans}"
            )
    if shrink is not None and image.format == "JPEG":
        _draft(image, shrink)
    try:
        image.load()
    except Exception as exc:  # truncated files raise OSError; hostile ones also struct/Index/MemoryError
        raise ImageDecodeError(f"the image data is broken or truncated: {exc}") from exc
    return normalise_mode(orient(image))


def _draft(image: Image.Image, shrink: Shrink) -> None:
    try:
        transposed = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except Exception:  # EXIF is client data: a broken block means "as stored"
        transposed = False
    width, height = image.size
    wanted = shrink(height, width) if transposed else shrink(width, height)
    if wanted is not None:
        image.draft(image.mode, wanted[::-1] if transposed else wanted)


EXIF_ORIENTATION = 0x0112
_TRANSPOSED = {2, 3, 4, 5, 6, 7, 8}  # the orientations exif_transpose acts on


def jpeg_scan_count(data: bytes) -> int:
    """Start-of-scan markers in a JPEG: the decoder makes one pass over the image per scan.

    Counted as raw FF DA pairs: entropy-coded data never holds one (an FF there is followed by 00 or a
    restart marker), so this never undercounts; a thumbnail inside EXIF adds its few.
    """
    return data.count(b"\xff\xda")


def orient(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation (tag 0x0112) like the container; a broken EXIF block is ignored. An
    upright picture (no tag, or 1) is returned as it is: exif_transpose would copy it whole."""
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) not in _TRANSPOSED:
            return image
        return ImageOps.exif_transpose(image)
    except Exception:  # EXIF is client data: any parser failure means "no orientation"
        return image


def normalise_mode(image: Image.Image) -> Image.Image:
    if image.mode in _KEPT_MODES:
        return image
    try:
        if image.mode == "P" and "transparency" in image.info:
            return image.convert("RGBA")
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(f"cannot use pixel format {image.mode!r}: {exc}") from exc


def image_from_bgr(frame: NDArray[np.uint8]) -> Image.Image:
    """A camera frame (OpenCV BGR, HxWx3 uint8) as an RGB PIL image."""
    if frame.ndim == 2:
        return Image.fromarray(frame, mode="L")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ImageDecodeError(f"expected an HxWx3 BGR frame, got shape {frame.shape}")
    return Image.fromarray(np.ascontiguousarray(frame[..., ::-1]), mode="RGB")


def shrink_frame(frame: NDArray[np.uint8], size: tuple[int, int] | None) -> NDArray[np.uint8]:
    """Fast fidelity: a camera frame (or a decoded picture's pixels) shrunk at once by one OpenCV
    INTER_AREA resize (an area average: no aliasing); never enlarged."""
    if size is None or size[0] * size[1] >= frame.shape[0] * frame.shape[1]:
        return frame
    import cv2

    return np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def shrink_image(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """shrink_frame for a decoded picture that a reduced-scale decode could not shrink (PNG, BMP, ...).
    Pictures with alpha stay with Pillow, which weighs colour by alpha (OpenCV would not)."""
    if size is None or image.mode not in ("RGB", "L") or size[0] * size[1] >= image.width * image.height:
        return image
    return Image.fromarray(shrink_frame(np.asarray(image), size), image.mode)
