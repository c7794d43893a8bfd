"""The letterbox and torchvision recipes, by hand: where the picture goes, what the padding holds, and
how boxes found in input pixels come back to the original picture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from synthetic import pattern_image

from edge_runtime.errors import ImageTooLargeError
from edge_runtime.model.letterbox import PAD_GREY, InputGeometry, letterbox_geometry, letterbox_image
from edge_runtime.model.limits import DEFAULT_MAX_RESIZED_PIXELS
from edge_runtime.model.preprocess import (
    check_resize,
    prepare,
    resize_for,
    resize_sizes,
    torchvision_centre_crop,
    torchvision_size,
)
from edge_runtime.model.spec import PreprocessSpec, Resample, Resize


def letterbox_spec(resize: Resize = Resize.LETTERBOX_NO_UPSCALE, size: int = 640) -> PreprocessSpec:
    return PreprocessSpec(resize, (size, size), (size, size), Resample.CV2_LINEAR, bgr=False, scale=1 / 255)


@pytest.mark.parametrize(
    ("picture", "scale_up", "content"),
    [
        ((1280, 960), False, (0, 80, 640, 480)),  # r = 0.5: 80 px of grey above and below
        ((960, 1280), False, (80, 0, 480, 640)),
        ((320, 240), False, (160, 200, 320, 240)),  # never scaled up: centred at its own size
        ((320, 240), True, (0, 80, 640, 480)),  # scaled up to fit
        ((640, 640), False, (0, 0, 640, 640)),
        # r = 640/641: 640 x round(479.25) = 479, the 161 rows split round(80.4) = 80 above, 81 below
        ((641, 480), False, (0, 80, 640, 479)),
    ],
)
def test_geometry_by_hand(
    picture: tuple[int, int], scale_up: bool, content: tuple[int, int, int, int]
) -> None:
    assert letterbox_geometry(*picture, (640, 640), scale_up) == InputGeometry((640, 640), content)


def test_boxes_lose_the_padding_and_the_scale() -> None:
    geometry = InputGeometry((640, 640), (0, 80, 640, 480))
    corners = np.array(
        [[288.0, 296.0, 352.0, 344.0], [300.0, 70.0, 340.0, 110.0], [-5.0, 600.0, 700.0, 700.0]]
    )
    fractions = geometry.to_fractions(corners)
    assert np.allclose(fractions[0], [0.45, 0.45, 0.55, 0.55])
    assert np.allclose(fractions[1], [300 / 640, 0.0, 340 / 640, 30 / 480])  # its top was in the padding
    assert np.allclose(fractions[2], [0.0, 1.0, 1.0, 1.0])  # (600 - 80) / 480 > 1: clipped to the picture


def test_stretch_geometry_is_the_whole_input() -> None:
    geometry = InputGeometry.filling((800, 600))
    assert np.allclose(geometry.to_fractions(np.array([[80.0, 60.0, 240.0, 180.0]])), [[0.1, 0.1, 0.3, 0.3]])


def test_letterbox_pixels_are_opencv_bilinear_on_grey_114() -> None:
    picture = pattern_image(641, 480, seed=4)
    geometry = letterbox_geometry(641, 480, (640, 640), scale_up=False)
    out = np.asarray(letterbox_image(picture, geometry))
    assert out.shape == (640, 640, 3)
    assert (out[:80] == PAD_GREY).all() and (out[80 + 479 :] == PAD_GREY).all()
    assert out[80 + 479 :].shape[0] == 81
    expected = cv2.resize(np.asarray(picture), (640, 479), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out[80 : 80 + 479], expected)


def test_prepare_gives_the_tensor_and_the_geometry() -> None:
    picture = Image.new("RGB", (320, 240), (255, 0, 51))
    tensor, geometry = prepare(picture, letterbox_spec())
    assert geometry == InputGeometry((640, 640), (160, 200, 320, 240))
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert np.allclose(tensor[0, :, 0, 0], PAD_GREY / 255)  # padding: 114 / 255 in every channel
    assert np.allclose(tensor[0, :, 320, 320], [1.0, 0.0, 0.2])  # RGB, /255, no mean/std


def test_a_fixed_batch_repeats_the_picture() -> None:
    spec = PreprocessSpec(Resize.STRETCH, (8, 8), (8, 8), Resample.BILINEAR, bgr=False, scale=1.0, batch=3)
    tensor, geometry = prepare(pattern_image(20, 10), spec)
    assert tensor.shape == (3, 3, 8, 8) and np.array_equal(tensor[0], tensor[2])
    assert geometry == InputGeometry.filling((8, 8))


def test_a_picture_the_letterbox_would_collapse_is_refused() -> None:
    spec = letterbox_spec()
    assert resize_sizes(1, 20_000, spec) == [(0, 640)]
    with pytest.raises(ImageTooLargeError, match="1x20000"):
        check_resize(1, 20_000, spec, DEFAULT_MAX_RESIZED_PIXELS)


def test_torchvision_resize_truncates_and_its_crop_rounds() -> None:
    # 500 x 300 -> 256 * 500 / 300 = 426.67: torchvision keeps 426 (the container's recipe rounds to 427)
    assert torchvision_size(500, 300, 256) == (426, 256)
    assert torchvision_size(300, 500, 256) == (256, 426)
    assert torchvision_size(256, 256, 256) == (256, 256)
    # a 427-wide image cropped to 224: (427 - 224) / 2 = 101.5 -> round() -> 102 (floor would give 101)
    columns = np.tile(np.arange(427, dtype=np.uint8)[None, :, None], (256, 1, 3))
    cropped = np.asarray(torchvision_centre_crop(Image.fromarray(columns, "RGB"), (224, 224)))
    assert cropped[0, 0, 0] == 102 and cropped.shape == (224, 224, 3)


def test_torchvision_recipe_end_to_end() -> None:
    spec = PreprocessSpec(Resize.TORCHVISION_CROP, (224, 224), (256, 256), Resample.BILINEAR, False, 1 / 255)
    picture = pattern_image(500, 300, seed=2)
    expected = picture.resize((426, 256), Image.Resampling.BILINEAR).crop((101, 16, 325, 240))
    assert np.array_equal(np.asarray(resize_for(picture, spec)), np.asarray(expected))
