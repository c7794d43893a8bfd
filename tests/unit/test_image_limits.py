"""Image bounds checked before any decoder runs: format allow-list, JPEG scans, pixels, resized sizes."""

from __future__ import annotations

import dataclasses
import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile
from synthetic import encode, pattern_image

from edge_runtime.errors import ImageDecodeError, ImageTooLargeError
from edge_runtime.model.imaging import DEFAULT_MAX_RESIZED_PIXELS, ImageLimits, decode_image, jpeg_scan_count
from edge_runtime.model.preprocess import (
    LEGACY_MAX_SIDE,
    centre_crop,
    check_resize,
    pixel_count_align32_size,
    resize_for,
    resize_sizes,
    shorter_side_size,
)
from edge_runtime.model.spec import PreprocessSpec, Resample, Resize

PHOTO = pattern_image(64, 48)


# ------------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "PCX", "TGA", "SGI", "QOI"])
def test_formats_outside_the_allow_list_are_refused_though_pil_reads_them(fmt: str) -> None:
    data = encode(PHOTO, fmt)
    Image.open(io.BytesIO(data)).load()  # PIL itself would decode it
    with pytest.raises(ImageDecodeError, match="not a recognised image format"):
        decode_image(data)


def test_only_the_configured_formats() -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(encode(PHOTO, "PNG"), ImageLimits(formats=("JPEG",)))
    assert decode_image(encode(PHOTO, "PNG"), ImageLimits(formats=("PNG",))).size == (64, 48)


def test_mpo_and_exif_jpegs_decode_as_jpeg() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the decoded image is in display orientation
    mpo = io.BytesIO()
    PHOTO.save(mpo, "MPO", save_all=True, append_images=[pattern_image(64, 48, seed=1)], exif=exif)
    assert Image.open(io.BytesIO(mpo.getvalue())).format == "MPO"
    jpeg_only = ImageLimits(formats=("JPEG",))
    assert decode_image(mpo.getvalue(), jpeg_only).size == (48, 64)
    assert decode_image(encode(PHOTO, "JPEG", exif=exif), jpeg_only).size == (48, 64)


def test_empty_and_unrecognised_bytes() -> None:
    for data in (b"", b"\0", b"GIF89a", b"\xff\xd8\xff", b"not an image at all"):
        with pytest.raises(ImageDecodeError):
            decode_image(data)


# --------------------------------------------------------------------------------------------- JPEG scans


def many_scans(progressive: bytes, extra: int) -> bytes:
    """The progressive JPEG with its last scan (SOS header and data) repeated `extra` more times."""
    last_scan = progressive.rindex(b"\xff\xda")
    end = progressive.rindex(b"\xff\xd9")
    return progressive[:end] + progressive[last_scan:end] * extra + progressive[end:]


def test_jpeg_scan_count() -> None:
    assert jpeg_scan_count(encode(PHOTO, "JPEG")) == 1
    assert 6 <= jpeg_scan_count(encode(PHOTO, "JPEG", progressive=True)) <= 12  # libjpeg's script: 10
    assert jpeg_scan_count(many_scans(encode(PHOTO, "JPEG", progressive=True), 200)) >= 200


def test_too_many_scans_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    progressive = encode(PHOTO, "JPEG", progressive=True)
    assert decode_image(progressive).size == (64, 48)
    loads: list[object] = []
    monkeypatch.setattr(JpegImageFile, "load", lambda self: loads.append(self))
    with pytest.raises(ImageTooLargeError, match="scans, more than the limit of 5"):
        decode_image(progressive, ImageLimits(max_jpeg_scans=5))
    with pytest.raises(ImageTooLargeError, match="more than the limit of 100"):
        decode_image(many_scans(progressive, 200))
    assert loads == []


def test_a_bomb_header_is_refused_before_decoding() -> None:
    png = bytearray(encode(PHOTO, "PNG"))
    png[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR: 10^10 pixels in a 10 kB file
    png[29:33] = struct.pack(">I", zlib.crc32(png[12:29]))
    with pytest.raises(ImageTooLargeError, match="100000x100000"):
        decode_image(bytes(png))
    with pytest.raises(ImageTooLargeError):
        decode_image(encode(PHOTO, "PNG"), ImageLimits(max_pixels=64 * 48 - 1))
    assert decode_image(encode(PHOTO, "PNG"), ImageLimits(max_pixels=64 * 48)).size == (64, 48)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF", "WEBP", "JPEG"])
def test_flipped_bits_give_an_image_or_an_image_error(fmt: str) -> None:
    small = pattern_image(16, 12)
    data = encode(small, fmt, progressive=True) if fmt == "JPEG" else encode(small, fmt)
    rng = random.Random(f"flips-{fmt}")
    for _ in range(300):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):  # mostly in the header, where the parsers are
            at = rng.randrange(min(len(data), 64)) if rng.random() < 0.7 else rng.randrange(len(data))
            flipped[at] ^= 1 << rng.randrange(8)
        try:
            image = decode_image(bytes(flipped), ImageLimits(formats=(fmt,)))  # TIFF is off by default
        except (ImageDecodeError, ImageTooLargeError):
            continue
        assert image.mode in ("RGB", "RGBA", "L", "LA") and image.width * image.height > 0


# ----------------------------------------------------------------------------------------- resize sizes


def recipe_spec(
    resize: Resize, input_size: tuple[int, int] | None, target: tuple[int, int]
) -> PreprocessSpec:
    return PreprocessSpec(resize, input_size, target, Resample.BILINEAR, bgr=False, scale=1.0)


RECIPES = {
    Resize.SHORTER_SIDE_TO_INPUT: recipe_spec(Resize.SHORTER_SIDE_TO_INPUT, (224, 224), (224, 224)),
    Resize.SHORTER_SIDE_THEN_CROP: recipe_spec(Resize.SHORTER_SIDE_THEN_CROP, (224, 224), (256, 256)),
    Resize.CENTRE_SQUARE_THEN_CROP: recipe_spec(Resize.CENTRE_SQUARE_THEN_CROP, (227, 227), (256, 256)),
    Resize.STRETCH: recipe_spec(Resize.STRETCH, (320, 320), (320, 320)),
    Resize.PIXEL_COUNT_ALIGN32: recipe_spec(Resize.PIXEL_COUNT_ALIGN32, None, (512, 512)),
    Resize.TORCHVISION_CROP: recipe_spec(Resize.TORCHVISION_CROP, (224, 224), (256, 256)),
    Resize.LETTERBOX: recipe_spec(Resize.LETTERBOX, (640, 640), (640, 640)),
    Resize.LETTERBOX_NO_UPSCALE: recipe_spec(Resize.LETTERBOX_NO_UPSCALE, (640, 640), (640, 640)),
}
# The recipes (and resamplers) resize_before knows: the later ones have no "before".
BEFORE_RECIPES = list(RECIPES)[:5]
BEFORE_RESAMPLES = [Resample.BILINEAR, Resample.BICUBIC]
THIN = [(1, 20_000), (20_000, 1), (1, 1_000_000), (50_000_000, 1)]
# Which thin shapes each recipe cannot use: stretch always makes its target; pixel-count-align32 makes
# 32 x 72416 of 1 x 20000 (2.3 MP, fine) but collapses the short side of 1 x 1000000 to 0.
USABLE_THIN = {Resize.STRETCH: set(THIN), Resize.PIXEL_COUNT_ALIGN32: {(1, 20_000), (20_000, 1)}}
NORMAL = [(640, 480), (480, 640), (1920, 1080), (224, 224), (33, 17), (1700, 1200), (1, 1), (100, 2000)]


@pytest.mark.parametrize("recipe", list(Resize))
@pytest.mark.parametrize("size", THIN)
def test_thin_images(recipe: Resize, size: tuple[int, int]) -> None:
    spec = RECIPES[recipe]
    if size in USABLE_THIN.get(recipe, set()):
        check_resize(*size, spec, DEFAULT_MAX_RESIZED_PIXELS)
        return
    with pytest.raises(ImageTooLargeError, match=f"shape {size[0]}x{size[1]} cannot be used"):
        check_resize(*size, spec, DEFAULT_MAX_RESIZED_PIXELS)


@pytest.mark.parametrize("recipe", list(Resize))
def test_normal_images_pass(recipe: Resize) -> None:
    for size in NORMAL:
        check_resize(*size, RECIPES[recipe], DEFAULT_MAX_RESIZED_PIXELS)


def test_the_limit_is_on_every_resize() -> None:
    container = RECIPES[Resize.SHORTER_SIDE_TO_INPUT]
    assert resize_sizes(640, 480, container) == [(299, 224)]
    check_resize(640, 480, container, 299 * 224)
    with pytest.raises(ImageTooLargeError, match="299x224"):
        check_resize(640, 480, container, 299 * 224 - 1)
    legacy = RECIPES[Resize.CENTRE_SQUARE_THEN_CROP]
    assert resize_sizes(3200, 1600, legacy) == [(1600, 800), (256, 256)]
    with pytest.raises(ImageTooLargeError, match="1600x800"):  # the first of two resizes is too big
        check_resize(3200, 1600, legacy, 1600 * 800 - 1)


def resize_before(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """resize_for as it was before resize_sizes existed (commit 92d39e2^)."""
    resample = {Resample.BILINEAR: Image.Resampling.BILINEAR, Resample.BICUBIC: Image.Resampling.BICUBIC}
    width, height = image.size
    crop = spec.input_size
    if spec.resize is Resize.PIXEL_COUNT_ALIGN32:
        out = image.resize(
            pixel_count_align32_size(width, height, spec.resize_target), resample[spec.resample]
        )
    elif spec.resize is Resize.STRETCH:
        out = image.resize(spec.resize_target, resample[spec.resample])
    elif spec.resize is Resize.CENTRE_SQUARE_THEN_CROP:
        if max(width, height) > LEGACY_MAX_SIDE:
            scale = LEGACY_MAX_SIDE / max(width, height)
            image = image.resize((round(width * scale), round(height * scale)), resample[spec.resample])
        square = min(image.size)
        out = centre_crop(image, (square, square)).resize(spec.resize_target, resample[spec.resample])
        out = centre_crop(out, crop) if crop else out
    else:
        side = spec.resize_target[0] if spec.resize is Resize.SHORTER_SIDE_THEN_CROP else max(crop or (0, 0))
        out = image.resize(shorter_side_size(width, height, side), resample[spec.resample])
        out = centre_crop(out, crop) if crop else out
    return out if out.mode == "RGB" else out.convert("RGB")


@pytest.fixture(scope="module")
def normal_images() -> list[Image.Image]:
    return [
        pattern_image(*size, seed=seed, mode="L" if seed % 3 == 0 else "RGB")
        for seed, size in enumerate(NORMAL)
    ]


@pytest.mark.parametrize("recipe", BEFORE_RECIPES)
@pytest.mark.parametrize("resample", BEFORE_RESAMPLES)
def test_resize_for_is_unchanged_for_normal_images(
    recipe: Resize, resample: Resample, normal_images: list[Image.Image]
) -> None:
    spec = dataclasses.replace(RECIPES[recipe], resample=resample)
    for image, size in zip(normal_images, NORMAL, strict=True):
        got = resize_for(image, spec)
        cropped = spec.input_size is not None and recipe not in (Resize.STRETCH, Resize.PIXEL_COUNT_ALIGN32)
        assert got.size == (spec.input_size if cropped else resize_sizes(*size, spec)[-1])
        assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.asarray(resize_before(image, spec)))


def test_image_limit_defaults_are_written_once() -> None:
    from edge_runtime.model import limits

    assert ImageLimits() == ImageLimits(
        limits.DEFAULT_MAX_PIXELS,
        limits.DEFAULT_MAX_RESIZED_PIXELS,
        limits.DEFAULT_MAX_JPEG_SCANS,
        limits.DEFAULT_FORMATS,
    )
