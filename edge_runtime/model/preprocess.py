"""PIL image + PreprocessSpec -> the input tensor, exactly as Custom Vision prepares it."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from edge_runtime.errors import ImageTooLargeError
from edge_runtime.model.letterbox import InputGeometry, letterbox_geometry, letterbox_image
from edge_runtime.model.spec import PreprocessSpec, Resample, Resize

_FILTERS = {
    Resample.BILINEAR: Image.Resampling.BILINEAR,
    Resample.BICUBIC: Image.Resampling.BICUBIC,
    Resample.CV2_LINEAR: Image.Resampling.BILINEAR,  # only the letterbox uses OpenCV (letterbox.py)
}
LEGACY_MAX_SIDE = 1600  # the 2018 container shrinks anything larger first
LETTERBOXES = {Resize.LETTERBOX: True, Resize.LETTERBOX_NO_UPSCALE: False}  # recipe -> scale up?
FAST_MARGIN = 2  # fast fidelity shrinks early to no less than this times the recipe's first resize


def shorter_side_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The container's arithmetic: shorter side -> `side`, the other round()ed with aspect = w / h."""
    aspect = width / height
    if width < height:
        return side, round(side / aspect)
    return round(side * aspect), side


def pixel_count_align32_size(width: int, height: int, target: tuple[int, int]) -> tuple[int, int]:
    """The detection export's arithmetic: w*h ~ target area, int() THEN round up to a multiple of 32."""
    ratio = math.sqrt(target[0] * target[1] / (width * height))
    return (
        32 * math.ceil(int(width * ratio) / 32),
        32 * math.ceil(int(height * ratio) / 32),
    )


def torchvision_size(width: int, height: int, side: int) -> tuple[int, int]:
    """torchvision's Resize(int): shorter side -> `side`, the other int(side * long / short)."""
    if width <= height:
        return side, int(side * height / width)
    return int(side * width / height), side


def centre_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    width, height = image.size
    left, top = (width - size[0]) // 2, (height - size[1]) // 2
    return image.crop((left, top, left + size[0], top + size[1]))


def torchvision_centre_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """torchvision's CenterCrop: offsets round(d / 2) (Python rounds halves to even)."""
    width, height = image.size
    left, top = round((width - size[0]) / 2.0), round((height - size[1]) / 2.0)
    return image.crop((left, top, left + size[0], top + size[1]))


def geometry_for(width: int, height: int, spec: PreprocessSpec) -> InputGeometry | None:
    """Where a width x height picture lies in the input: a letterbox's placement, the whole input for
    the other recipes of a fixed input size (None when the input size follows the picture)."""
    if spec.input_size is None:
        return None
    if spec.resize in LETTERBOXES:
        return letterbox_geometry(width, height, spec.input_size, LETTERBOXES[spec.resize])
    return InputGeometry.filling(spec.input_size)


def resize_sizes(width: int, height: int, spec: PreprocessSpec) -> list[tuple[int, int]]:
    """The size of every resize the recipe makes of a width x height image, in order."""
    if spec.resize is Resize.PIXEL_COUNT_ALIGN32:
        return [pixel_count_align32_size(width, height, spec.resize_target)]
    if spec.resize in LETTERBOXES:
        geometry = geometry_for(width, height, spec)
        return [geometry.content[2:]] if geometry else [spec.resize_target]
    if spec.resize is Resize.TORCHVISION_CROP:
        return [torchvision_size(width, height, spec.resize_target[0])]
    if spec.resize is Resize.STRETCH:
        return [spec.resize_target]
    if spec.resize is Resize.CENTRE_SQUARE_THEN_CROP:
        sizes = []
        if max(width, height) > LEGACY_MAX_SIDE:
            scale = LEGACY_MAX_SIDE / max(width, height)
            width, height = round(width * scale), round(height * scale)
            sizes.append((width, height))
        return [*sizes, spec.resize_target]
    side = (
        spec.resize_target[0]
        if spec.resize is Resize.SHORTER_SIDE_THEN_CROP
        else max(spec.input_size or (0, 0))
    )
    return [shorter_side_size(width, height, side)]


def fast_size(width: int, height: int, spec: PreprocessSpec) -> tuple[int, int] | None:
    """Fast fidelity: what a picture may be shrunk to before the recipe runs (a reduced-scale JPEG
    decode, or one OpenCV INTER_AREA resize): twice the recipe's first whole-picture resize, so that
    Pillow's resampler still antialiases the last factor of two. None when the recipe crops first (the
    2018 recipe under 1600 px) or the picture is not at least twice that."""
    if spec.resize is Resize.CENTRE_SQUARE_THEN_CROP and max(width, height) <= LEGACY_MAX_SIDE:
        return None
    first = resize_sizes(width, height, spec)[0]
    wanted = (FAST_MARGIN * first[0], FAST_MARGIN * first[1])
    # Only where it halves the picture at least: a slight shrink costs about what it saves, and shifts.
    return wanted if width >= 2 * wanted[0] and height >= 2 * wanted[1] else None


def check_resize(width: int, height: int, spec: PreprocessSpec, max_pixels: int) -> None:
    """A thin image (1 x 20000) passes a pixel limit, but the recipe would make 224 x 4,480,000 of it."""
    for w, h in resize_sizes(width, height, spec):
        if w < 1 or h < 1 or w * h > max_pixels:
            raise ImageTooLargeError(
                f"the image's shape {width}x{height} cannot be used: the model's resize would make "
                f"{w}x{h} pixels (allowed: at least 1x1, at most {max_pixels} pixels)"
            )


def resize_for(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Resize and crop in the image's own mode, then convert to RGB (the container's order)."""
    if spec.resize in LETTERBOXES:
        geometry = geometry_for(*image.size, spec)
        assert geometry is not None  # the loader gives letterboxed models a fixed input size
        return letterbox_image(image, geometry)
    sizes = resize_sizes(*image.size, spec)
    crop = spec.input_size
    if spec.resize is Resize.TORCHVISION_CROP:
        out = _resize(image, sizes[0], spec)
        out = torchvision_centre_crop(out, crop) if crop else out
        return out if out.mode == "RGB" else out.convert("RGB")
    if spec.resize is Resize.CENTRE_SQUARE_THEN_CROP:
        if len(sizes) == 2:
            image = _resize(image, sizes[0], spec)
        square = min(image.size)
        out = _resize(centre_crop(image, (square, square)), sizes[-1], spec)
        out = centre_crop(out, crop) if crop else out
    else:
        out = _resize(image, sizes[0], spec)
        if spec.resize not in (Resize.PIXEL_COUNT_ALIGN32, Resize.STRETCH) and crop:
            out = centre_crop(out, crop)
    return out if out.mode == "RGB" else out.convert("RGB")


def _resize(image: Image.Image, size: tuple[int, int], spec: PreprocessSpec) -> Image.Image:
    return image.resize(size, _FILTERS[spec.resample])


def to_tensor(image: Image.Image, spec: PreprocessSpec) -> NDArray[np.float32] | NDArray[np.float16]:
    pixels = np.asarray(image)  # H x W x 3 uint8, RGB
    if spec.bgr:
        pixels = pixels[..., ::-1]
    chw = pixels.transpose(2, 0, 1) if spec.nchw else pixels
    tensor = chw.astype(np.float32)[None]  # one copy: reorders and converts at once
    if spec.scale != 1.0:
        tensor *= np.float32(spec.scale)
    if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
        shape = (1, 3, 1, 1) if spec.nchw else (1, 1, 1, 3)
        mean = np.asarray(spec.mean, np.float32).reshape(shape)
        std = np.asarray(spec.std, np.float32).reshape(shape)
        tensor = (tensor - mean) / std
    if spec.float16:
        return tensor.astype(np.float16)
    return tensor


def preprocess(image: Image.Image, spec: PreprocessSpec) -> NDArray[np.float32] | NDArray[np.float16]:
    return to_tensor(resize_for(image, spec), spec)


def prepare(
    image: Image.Image, spec: PreprocessSpec
) -> tuple[NDArray[np.float32] | NDArray[np.float16], InputGeometry | None]:
    """The input tensor (the batch filled when the model's batch is fixed) and where the picture lies in
    it, for decoders that find boxes in input pixels."""
    tensor = preprocess(image, spec)
    if spec.batch > 1:
        tensor = np.repeat(tensor, spec.batch, axis=0)  # type: ignore[assignment]
    return tensor, geometry_for(*image.size, spec)
