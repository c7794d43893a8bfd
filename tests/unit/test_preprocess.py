"""Preprocessing arithmetic, recipes, tensor layout, and where colour order / value range come from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synthetic
from PIL import Image
from synthetic import cpu_options, encode, pattern_image

from edge_runtime.engine import Predictor
from edge_runtime.model.loader import LoadOptions, load_spec
from edge_runtime.model.preprocess import (
    pixel_count_align32_size,
    preprocess,
    resize_for,
    shorter_side_size,
    to_tensor,
)
from edge_runtime.model.spec import PreprocessSpec, Resample, Resize


def spec_for(
    resize: Resize,
    input_size: tuple[int, int] | None = (224, 224),
    target: tuple[int, int] = (256, 256),
    resample: Resample = Resample.BILINEAR,
    **kwargs: object,
) -> PreprocessSpec:
    return PreprocessSpec(
        resize=resize,
        input_size=input_size,
        resize_target=target,
        resample=resample,
        bgr=bool(kwargs.pop("bgr", False)),
        scale=float(kwargs.pop("scale", 1.0)),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("width", "height", "side", "expected"),
    [
        (640, 480, 224, (299, 224)),  # 298.67 -> 299
        (480, 640, 224, (224, 299)),
        (224, 224, 224, (224, 224)),
        (1000, 999, 224, (224, 224)),  # 224.22 -> 224: the shorter side is always exactly `side`
        # Python's round() is round-half-to-even: 234.5 -> 234 (floor(x + 0.5) would give 235)...
        (268, 256, 224, (234, 224)),
        (256, 268, 224, (224, 234)),
        # ... and 227.5 -> 228.
        (260, 256, 224, (228, 224)),
        (256, 260, 224, (224, 228)),
        (5, 2, 1, (2, 1)),  # 2.5 -> 2
        (640, 480, 256, (341, 256)),
    ],
)
def test_shorter_side_size(width: int, height: int, side: int, expected: tuple[int, int]) -> None:
    assert shorter_side_size(width, height, side) == expected


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        # The export's python/object_detection.py: int() first, then round UP to a multiple of 32.
        (640, 480, (608, 448)),
        (480, 640, (448, 608)),
        (1920, 1080, (704, 384)),
        (700, 536, (608, 448)),
        (100, 80, (576, 480)),
        (608, 448, (608, 448)),  # already at the target area: unchanged
        (512, 512, (512, 512)),
    ],
)
def test_pixel_count_align32_size(width: int, height: int, expected: tuple[int, int]) -> None:
    size = pixel_count_align32_size(width, height, (512, 512))
    assert size == expected
    assert size[0] % 32 == 0 and size[1] % 32 == 0


def test_pixel_count_align32_is_not_the_csharp_rounding() -> None:
    # ObjectDetection.cs uses 32 * round(side * r / 32): 576x448 for 640x480. Python is the reference.
    assert pixel_count_align32_size(640, 480, (512, 512)) != (576, 448)


# ---------------------------------------------------------------------------------------------- recipes


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return pattern_image(640, 480, seed=3)


def test_container_recipe_resizes_shorter_side_to_input_then_centre_crops(photo: Image.Image) -> None:
    out = resize_for(photo, spec_for(Resize.SHORTER_SIDE_TO_INPUT, target=(224, 224)))
    assert out.size == (224, 224) and out.mode == "RGB"
    # 640x480 -> 299x224 (PIL BILINEAR), crop offset (299 - 224) // 2 = 37.
    expected = photo.resize((299, 224), Image.Resampling.BILINEAR).crop((37, 0, 261, 224))
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_sidecar_recipe_resizes_shorter_side_to_256_then_crops(photo: Image.Image) -> None:
    out = resize_for(photo, spec_for(Resize.SHORTER_SIDE_THEN_CROP, target=(256, 256)))
    # 640x480 -> 341x256, crop offsets (341 - 224) // 2 = 58 and (256 - 224) // 2 = 16.
    expected = photo.resize((341, 256), Image.Resampling.BILINEAR).crop((58, 16, 282, 240))
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_recipes_give_different_pixels(photo: Image.Image) -> None:
    container = resize_for(photo, spec_for(Resize.SHORTER_SIDE_TO_INPUT, target=(224, 224)))
    sidecar = resize_for(photo, spec_for(Resize.SHORTER_SIDE_THEN_CROP, target=(256, 256)))
    assert not np.array_equal(np.asarray(container), np.asarray(sidecar))


def test_stretch_ignores_aspect(photo: Image.Image) -> None:
    out = resize_for(photo, spec_for(Resize.STRETCH, input_size=(300, 300), target=(300, 300)))
    expected = photo.resize((300, 300), Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_pixel_count_recipe_uses_bicubic_and_align32(photo: Image.Image) -> None:
    spec = spec_for(Resize.PIXEL_COUNT_ALIGN32, input_size=None, target=(512, 512), resample=Resample.BICUBIC)
    out = resize_for(photo, spec)
    assert out.size == (608, 448)
    expected = photo.resize((608, 448), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_legacy_recipe_centre_square_then_256_then_crop() -> None:
    image = pattern_image(2000, 1000, seed=4)
    spec = spec_for(Resize.CENTRE_SQUARE_THEN_CROP, input_size=(227, 227), target=(256, 256))
    out = resize_for(image, spec)
    assert out.size == (227, 227)
    # > 1600: shrink to 1600x800 first, centre square 800 at x=400, -> 256, crop 227 at (14, 14).
    step = image.resize((1600, 800), Image.Resampling.BILINEAR).crop((400, 0, 1200, 800))
    expected = step.resize((256, 256), Image.Resampling.BILINEAR).crop((14, 14, 241, 241))
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_rgba_is_resized_in_its_own_mode_then_converted() -> None:
    # Alpha varies across the image, so premultiplied (RGBA) resizing differs from resizing after convert().
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 256, (60, 80, 4), dtype=np.uint8)
    rgba = Image.fromarray(pixels, "RGBA")
    spec = spec_for(Resize.SHORTER_SIDE_TO_INPUT, input_size=(32, 32), target=(32, 32))
    out = resize_for(rgba, spec)
    assert out.mode == "RGB" and out.size == (32, 32)
    own_mode = rgba.resize((43, 32), Image.Resampling.BILINEAR).crop((5, 0, 37, 32)).convert("RGB")
    converted_first = rgba.convert("RGB").resize((43, 32), Image.Resampling.BILINEAR).crop((5, 0, 37, 32))
    assert np.array_equal(np.asarray(out), np.asarray(own_mode))
    assert not np.array_equal(np.asarray(out), np.asarray(converted_first))


def test_grayscale_comes_out_as_three_equal_channels() -> None:
    grey = pattern_image(50, 40, seed=5, mode="L")
    out = resize_for(grey, spec_for(Resize.STRETCH, input_size=(20, 20), target=(20, 20)))
    arr = np.asarray(out)
    assert arr.shape == (20, 20, 3)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])


# ---------------------------------------------------------------------------------------------- tensors


@pytest.fixture(scope="module")
def tiny() -> Image.Image:
    # 3 wide x 2 high, every channel value distinct.
    pixels = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 10 + 5
    return Image.fromarray(pixels, "RGB")


def test_tensor_rgb_0_255_nchw(tiny: Image.Image) -> None:
    tensor = to_tensor(tiny, spec_for(Resize.STRETCH, bgr=False, scale=1.0))
    pixels = np.asarray(tiny)
    assert tensor.shape == (1, 3, 2, 3) and tensor.dtype == np.float32
    for y in range(2):
        for x in range(3):
            for c in range(3):
                assert tensor[0, c, y, x] == float(pixels[y, x, c])


def test_tensor_bgr_swaps_channels(tiny: Image.Image) -> None:
    tensor = to_tensor(tiny, spec_for(Resize.STRETCH, bgr=True, scale=1.0))
    pixels = np.asarray(tiny).astype(np.float32)
    assert np.array_equal(tensor[0, 0], pixels[..., 2])  # B first
    assert np.array_equal(tensor[0, 1], pixels[..., 1])
    assert np.array_equal(tensor[0, 2], pixels[..., 0])


def test_tensor_0_1_range(tiny: Image.Image) -> None:
    tensor = to_tensor(tiny, spec_for(Resize.STRETCH, bgr=False, scale=1 / 255))
    pixels = np.asarray(tiny).astype(np.float32)
    assert np.allclose(tensor[0].transpose(1, 2, 0), pixels / 255.0, atol=1e-7)
    assert tensor.max() <= 1.0


def test_tensor_nhwc_layout(tiny: Image.Image) -> None:
    tensor = to_tensor(tiny, spec_for(Resize.STRETCH, bgr=True, nchw=False))
    assert tensor.shape == (1, 2, 3, 3)
    assert np.array_equal(tensor[0], np.asarray(tiny)[..., ::-1].astype(np.float32))


def test_tensor_float16(tiny: Image.Image) -> None:
    tensor = to_tensor(tiny, spec_for(Resize.STRETCH, float16=True))
    assert tensor.dtype == np.float16
    assert np.array_equal(tensor.astype(np.float32), to_tensor(tiny, spec_for(Resize.STRETCH)))


def test_tensor_mean_std(tiny: Image.Image) -> None:
    spec = spec_for(Resize.STRETCH, mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 5.0))
    tensor = to_tensor(tiny, spec)
    pixels = np.asarray(tiny).astype(np.float32)
    for c, (m, s) in enumerate(((1.0, 2.0), (2.0, 4.0), (3.0, 5.0))):
        assert np.allclose(tensor[0, c], (pixels[..., c] - m) / s)


def test_preprocess_is_resize_then_tensor(photo: Image.Image) -> None:
    spec = spec_for(Resize.SHORTER_SIDE_TO_INPUT, target=(224, 224), bgr=True)
    tensor = preprocess(photo, spec)
    assert tensor.shape == (1, 3, 224, 224)
    assert np.array_equal(tensor, to_tensor(resize_for(photo, spec), spec))


# ------------------------------------------------------------------- colour order / range: the model decides


def _probe_export(root: Path, name: str, model_metadata: dict[str, str] | None) -> Path:
    return synthetic.write_export(
        root / name,
        synthetic.probe_model(16, model_metadata),
        ("c0", "c1", "c2"),
        # The sidecar always says Rgb8 / Normalized_0_1, like every real export's JSON.
        metadata=synthetic.classification_sidecar(),
    )


@pytest.mark.parametrize(
    ("model_metadata", "bgr", "scale"),
    [
        (synthetic.BGR_255, True, 1.0),
        ({"Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "Normalized_0_1"}, True, 1 / 255),
        ({"Image.BitmapPixelFormat": "Rgb8", "Image.NominalPixelRange": "NominalRange_0_255"}, False, 1.0),
        (None, False, 1 / 255),  # official samples' rule for classification: RGB, 0..1 unless told otherwise
        ({"Image.BitmapPixelFormat": "Bgr8"}, True, 1 / 255),
    ],
)
def test_colour_and_range_come_from_model_metadata(
    tmp_path: Path, model_metadata: dict[str, str] | None, bgr: bool, scale: float
) -> None:
    spec = load_spec(_probe_export(tmp_path, "probe", model_metadata))
    assert spec.preprocess.bgr is bgr
    assert spec.preprocess.scale == pytest.approx(scale)
    assert any("metadata_properties.json" in note and "not" in note for note in spec.notes)


@pytest.mark.parametrize(
    ("model_metadata", "expected"),
    [
        # solid (R, G, B) = (200, 100, 50): the probe returns the mean of each input channel
        (synthetic.BGR_255, [50.0, 100.0, 200.0]),
        (
            {"Image.BitmapPixelFormat": "Rgb8", "Image.NominalPixelRange": "NominalRange_0_255"},
            [200.0, 100.0, 50.0],
        ),
        (None, [200 / 255, 100 / 255, 50 / 255]),
    ],
)
def test_model_receives_the_colour_order_it_declares(
    tmp_path: Path, model_metadata: dict[str, str] | None, expected: list[float]
) -> None:
    predictor = Predictor.load(_probe_export(tmp_path, "probe", model_metadata), cpu_options())
    image = Image.new("RGB", (40, 30), (200, 100, 50))
    raw = predictor.backend.run(preprocess(image, predictor.spec.preprocess))
    assert np.allclose(np.asarray(raw["model_output"]).reshape(-1), expected, rtol=1e-6)


def test_probe_through_predict_bytes(tmp_path: Path) -> None:
    metadata = {"Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "Normalized_0_1"}
    predictor = Predictor.load(_probe_export(tmp_path, "probe", metadata), cpu_options())
    result = predictor.predict_bytes(encode(Image.new("RGB", (40, 30), (200, 100, 50)), "PNG"))
    # Values inside [0, 1] are passed through as probabilities, labels.txt order.
    assert [p.tag_name for p in result.predictions] == ["c0", "c1", "c2"]
    assert [p.probability for p in result.predictions] == pytest.approx(
        [50 / 255, 100 / 255, 200 / 255], abs=1e-6
    )


@pytest.mark.shared
def test_meter_fixture_takes_bgr_0_255_from_the_model_not_the_sidecar(meter_dir: Path) -> None:
    sidecar = (meter_dir / "metadata_properties.json").read_text()
    assert (
        '"Rgb8"' in sidecar and '"Normalized_0_1"' in sidecar
    )  # the contradiction the fixture keeps on purpose
    spec = load_spec(meter_dir, LoadOptions())
    assert spec.metadata_props["Image.BitmapPixelFormat"] == "Bgr8"
    assert spec.preprocess.bgr is True
    assert spec.preprocess.scale == 1.0
    assert spec.preprocess.nchw is True
    assert spec.preprocess.resize is Resize.SHORTER_SIDE_TO_INPUT
    assert spec.preprocess.input_size == (224, 224)
    assert spec.preprocess.resize_target == (224, 224)
    assert spec.preprocess.resample is Resample.BILINEAR


@pytest.mark.shared
def test_meter_sidecar_recipe_option(meter_dir: Path) -> None:
    spec = load_spec(meter_dir, LoadOptions(resize=Resize.SHORTER_SIDE_THEN_CROP))
    assert spec.preprocess.resize is Resize.SHORTER_SIDE_THEN_CROP
    assert spec.preprocess.resize_target == (256, 256)
    assert spec.preprocess.input_size == (224, 224)
