"""Bytes or camera frames -> a PIL image in display orientation, with size limits enforced first.

PIL is used (not OpenCV) because Custom Vision's container resamples with PIL; decoding gives the same
pixels either way (both use libjpeg-turbo), the resampler is what changes probabilities.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_runtime.errors import ImageDecodeError, ImageTooLargeError

# We enforce our own pixel limit before decoding; PIL's global bomb check would warn/raise at other sizes.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 50_000_000  # ~ 8K x 6K: bigger than any line camera, smaller than a bomb

# Modes PIL resizes natively in the way the container does (RGBA premultiplied, L as one channel).
_KEPT_MODES = {"RGB", "RGBA", "L", "LA"}


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    if not data:
        raise ImageDecodeError("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format (JPEG, PNG, BMP, GIF, TIFF, WebP ...)") from exc
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"cannot read the image header: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"the image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"the image has {width}x{height} = {width * height} pixels, "
            f"more than the limit of {limits.max_pixels}"
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:  # truncated files raise OSError
        raise ImageDecodeError(f"the image data is broken or truncated: {exc}") from exc
    return normalise_mode(orient(image))


def orient(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation (tag 0x0112) like the container; a broken EXIF block is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return image


def normalise_mode(image: Image.Image) -> Image.Image:
    if image.mode in _KEPT_MODES:
        return image
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


def image_from_bgr(frame: NDArray[np.uint8]) -> Image.Image:
    """A camera frame (OpenCV BGR, HxWx3 uint8) as an RGB PIL image."""
    if frame.ndim == 2:
        return Image.fromarray(frame, mode="L")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ImageDecodeError(f"expected an HxWx3 BGR frame, got shape {frame.shape}")
    return Image.fromarray(np.ascontiguousarray(frame[..., ::-1]), mode="RGB")
