"""Decoding: EXIF orientation, image modes, size limits, camera frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import CLASSIFIER_LABELS, cpu_options, encode, pattern_image

from edge_runtime.engine import Predictor
from edge_runtime.errors import ImageDecodeError, ImageTooLargeError
from edge_runtime.model.imaging import DEFAULT_FORMATS, ImageLimits, decode_image, image_from_bgr

RED, BLUE = (255, 0, 0), (0, 0, 255)


def halves(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def close_to(pixel: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) < 40))


def test_exif_orientation_6_is_applied() -> None:
    image = decode_image(with_orientation(halves(), 6))
    # Orientation 6: the stored image is displayed rotated 90 degrees clockwise -> 20 wide, 40 high,
    # and the left (red) half ends up on top.
    assert image.size == (20, 40)
    arr = np.asarray(image)
    assert close_to(arr[5, 10], RED)
    assert close_to(arr[35, 10], BLUE)


def test_exif_orientation_3_is_applied() -> None:
    image = decode_image(with_orientation(halves(), 3))
    assert image.size == (40, 20)  # 180 degrees: red moves to the right
    arr = np.asarray(image)
    assert close_to(arr[10, 35], RED) and close_to(arr[10, 5], BLUE)


def test_no_exif_keeps_the_stored_orientation() -> None:
    image = decode_image(encode(halves(), "JPEG", quality=95))
    assert image.size == (40, 20)
    assert close_to(np.asarray(image)[10, 5], RED)


def test_orientation_changes_the_reported_image_size(classifier_export: Path) -> None:
    predictor = Predictor.load(classifier_export, cpu_options())
    result = predictor.predict_bytes(with_orientation(halves(64, 32), 6))
    assert result.image_size == (32, 64)


@pytest.mark.parametrize(
    ("fmt", "mode", "decoded_mode"),
    [
        ("JPEG", "L", "L"),  # grayscale: resized as one channel, converted to RGB at the end
        ("PNG", "RGBA", "RGBA"),  # alpha kept for the resize (premultiplied), dropped at the end
        ("PNG", "LA", "LA"),
        ("JPEG", "CMYK", "RGB"),
        ("BMP", "RGB", "RGB"),
        ("GIF", "P", "RGB"),
        ("WEBP", "RGB", "RGB"),
        ("TIFF", "RGB", "RGB"),
    ],
)
def test_image_modes_are_accepted(fmt: str, mode: str, decoded_mode: str) -> None:
    source = pattern_image(48, 36, seed=1)
    if mode == "RGBA":
        source = source.convert("RGBA")
        source.putalpha(Image.linear_gradient("L").resize(source.size))
    elif mode != "RGB":
        source = source.convert(mode)
    allowed = ImageLimits(formats=(*DEFAULT_FORMATS, "TIFF"))  # TIFF: off by default, allowed in settings
    image = decode_image(encode(source, fmt), allowed)
    assert image.size == (48, 36)
    assert image.mode == decoded_mode


def test_tiff_is_refused_unless_allowed() -> None:
    with pytest.raises(ImageDecodeError, match="not a recognised image format"):
        decode_image(encode(pattern_image(8, 8), "TIFF"))


def test_palette_png_with_transparency_becomes_rgba() -> None:
    source = pattern_image(20, 20, seed=2).convert("P")
    data = encode(source, "PNG", transparency=0)
    assert decode_image(data).mode == "RGBA"


def test_grayscale_and_rgba_predict_like_their_rgb_equivalents(classifier_export: Path) -> None:
    predictor = Predictor.load(classifier_export, cpu_options())
    grey = pattern_image(80, 60, seed=6, mode="L")
    # Grey: resizing one channel then converting equals converting then resizing (all channels equal).
    from_grey = predictor.predict_bytes(encode(grey, "PNG"))
    from_rgb = predictor.predict_image(grey.convert("RGB"))
    assert [p.tag_name for p in from_grey.predictions] == list(CLASSIFIER_LABELS)
    for a, b in zip(from_grey.predictions, from_rgb.predictions, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-6)

    rgba = pattern_image(80, 60, seed=7).convert("RGBA")  # fully opaque: alpha changes nothing
    from_rgba = predictor.predict_bytes(encode(rgba, "PNG"))
    from_plain = predictor.predict_image(rgba.convert("RGB"))
    for a, b in zip(from_rgba.predictions, from_plain.predictions, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-6)


def test_pixel_limit_boundary() -> None:
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    assert decode_image(data, ImageLimits(max_pixels=5000)).size == (100, 50)
    with pytest.raises(ImageTooLargeError, match="5000 pixels"):
        decode_image(data, ImageLimits(max_pixels=4999))


def test_image_from_bgr_frame() -> None:
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[..., 0] = 255  # blue in OpenCV order
    image = image_from_bgr(frame)
    assert image.mode == "RGB" and image.size == (6, 4)
    assert tuple(np.asarray(image)[0, 0]) == (0, 0, 255)
    assert image_from_bgr(np.zeros((4, 6), np.uint8)).mode == "L"
    with pytest.raises(ImageDecodeError, match="HxWx3"):
        image_from_bgr(np.zeros((4, 6, 4), np.uint8))


def test_predict_frame_matches_predict_image(classifier_export: Path) -> None:
    predictor = Predictor.load(classifier_export, cpu_options())
    image = pattern_image(64, 48, seed=8)
    frame = np.ascontiguousarray(np.asarray(image)[..., ::-1])
    a = predictor.predict_frame(frame)
    b = predictor.predict_image(image)
    assert [p.probability for p in a.predictions] == [p.probability for p in b.predictions]
