"""Exact fidelity (issue 17): whatever makes preprocessing faster, `model.fidelity: exact` (the default)
must give the tensor a plain Pillow pipeline gives, bit for bit, on the fidelity corpus
(benchmarks/fidelity_corpus.py: the fixtures and seeded camera-like images of many sizes and modes).

The REFERENCE below is written from the recipes' documentation, not from the runtime's code: Image.open,
ImageOps.exif_transpose, the runtime's documented mode rule (RGB, RGBA, L and LA kept; a palette with a
transparent index becomes RGBA; anything else RGB), each Resize recipe's arithmetic with Pillow's
BILINEAR or BICUBIC in the image's own mode, then convert("RGB"), float32, BGR and NCHW as the spec says.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageOps
from synthetic import cpu_options

from edge_runtime.demo.model import build_demo_export
from edge_runtime.engine import Predictor
from edge_runtime.model.imaging import decode_image, image_from_bgr
from edge_runtime.model.loader import load_spec
from edge_runtime.model.postprocess import postprocess
from edge_runtime.model.preprocess import prepare
from edge_runtime.model.spec import Fidelity, PreprocessSpec, Resample, Resize

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a package at the repository root
    sys.path.insert(0, str(REPO))

from benchmarks.fidelity_corpus import (  # noqa: E402
    ENCODINGS,
    SIZES,
    SYNTHETIC_COUNT,
    CorpusImage,
    fixture_images,
    plan,
    synthetic_image,
)

SEED = 17
KEPT_MODES = {"RGB", "RGBA", "L", "LA"}
FILTERS = {Resample.BILINEAR: Image.Resampling.BILINEAR, Resample.BICUBIC: Image.Resampling.BICUBIC}


EVERY_ENCODING = ((160, 120), (320, 240), (641, 479), (597, 447), (2000, 120), (112, 1600))


def subset_indices() -> list[int]:
    """Every encoding at the sizes of EVERY_ENCODING (small, odd, thin strips), each other size in two
    encodings, 1080p and larger in one: 99 of the 210 synthetic images."""
    per = len(ENCODINGS)
    chosen = [SIZES.index(size) * per + e for size in EVERY_ENCODING for e in range(per)]
    for s, (w, h) in enumerate(SIZES):
        if (w, h) not in EVERY_ENCODING:
            chosen += [s * per + (s * 5) % per] + ([s * per + (s * 5 + 7) % per] if w * h < 2_000_000 else [])
    return sorted(chosen)


# ------------------------------------------------------------------------------------------ the reference


def reference_decode(data: bytes) -> Image.Image:
    image: Image.Image = Image.open(io.BytesIO(data))
    image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode in KEPT_MODES:
        return image
    return image.convert("RGBA" if image.mode == "P" and "transparency" in image.info else "RGB")


def shorter_side(width: int, height: int, side: int) -> tuple[int, int]:
    # The recipe's arithmetic as documented: aspect = w / h, the other side round()ed.
    aspect = width / height
    return (side, round(side / aspect)) if width < height else (round(side * aspect), side)


def crop_centre(image: Image.Image, w: int, h: int) -> Image.Image:
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return image.crop((left, top, left + w, top + h))


def reference_resize(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    f = FILTERS[spec.resample]
    width, height = image.size
    if spec.resize is Resize.SHORTER_SIDE_TO_INPUT:
        assert spec.input_size is not None
        out = image.resize(shorter_side(width, height, max(spec.input_size)), f)
        out = crop_centre(out, *spec.input_size)
    elif spec.resize is Resize.SHORTER_SIDE_THEN_CROP:
        out = image.resize(shorter_side(width, height, spec.resize_target[0]), f)
        out = crop_centre(out, *spec.input_size) if spec.input_size else out
    elif spec.resize is Resize.CENTRE_SQUARE_THEN_CROP:
        if max(width, height) > 1600:
            scale = 1600 / max(width, height)
            image = image.resize((round(width * scale), round(height * scale)), f)
        side = min(image.size)
        out = crop_centre(image, side, side).resize(spec.resize_target, f)
        out = crop_centre(out, *spec.input_size) if spec.input_size else out
    elif spec.resize is Resize.STRETCH:
        out = image.resize(spec.resize_target, f)
    elif spec.resize is Resize.PIXEL_COUNT_ALIGN32:
        ratio = math.sqrt(spec.resize_target[0] * spec.resize_target[1] / (width * height))
        size = (32 * math.ceil(int(width * ratio) / 32), 32 * math.ceil(int(height * ratio) / 32))
        out = image.resize(size, f)
    elif spec.resize is Resize.TORCHVISION_CROP:
        side = spec.resize_target[0]
        size = (side, int(side * height / width)) if width <= height else (int(side * width / height), side)
        out = image.resize(size, f)
        if spec.input_size:
            w, h = spec.input_size
            left, top = round((out.width - w) / 2.0), round((out.height - h) / 2.0)
            out = out.crop((left, top, left + w, top + h))
    else:
        raise AssertionError(f"no reference for {spec.resize}")
    return out.convert("RGB")


def reference_tensor(image: Image.Image, spec: PreprocessSpec) -> NDArray[np.float32]:
    pixels = np.array(reference_resize(image, spec), dtype=np.float32)  # H x W x 3, RGB
    if spec.bgr:
        pixels = pixels[..., ::-1]
    if spec.nchw:
        pixels = pixels.transpose(2, 0, 1)
    pixels = pixels * np.float32(spec.scale)
    if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
        shape = (3, 1, 1) if spec.nchw else (1, 1, 3)
        pixels = (pixels - np.array(spec.mean, np.float32).reshape(shape)) / np.array(
            spec.std, np.float32
        ).reshape(shape)
    return np.ascontiguousarray(pixels[None], dtype=np.float32)


# ---------------------------------------------------------------------------------------------- fixtures


@dataclasses.dataclass(frozen=True)
class Case:
    item: CorpusImage
    runtime: Image.Image  # decode_image's (exact: no shrink)
    reference: Image.Image


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    items = fixture_images() + [synthetic_image(SEED, i) for i in subset_indices()]
    return [Case(c, decode_image(c.data), reference_decode(c.data)) for c in items]


@pytest.fixture(scope="module")
def demo_predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.load(build_demo_export(tmp_path_factory.mktemp("demo") / "export"), cpu_options())


@pytest.fixture(scope="module")
def meter_predictor(meter_dir: Path) -> Predictor:
    return Predictor.load(meter_dir, cpu_options())


METER = PreprocessSpec(  # what the loader makes of the meter fixture (checked below)
    resize=Resize.SHORTER_SIDE_TO_INPUT,
    input_size=(224, 224),
    resize_target=(224, 224),
    resample=Resample.BILINEAR,
    bgr=True,
    scale=1.0,
)
DEMO = PreprocessSpec(  # the built-in demo detector's (checked below)
    resize=Resize.PIXEL_COUNT_ALIGN32,
    input_size=None,
    resize_target=(512, 512),
    resample=Resample.BICUBIC,
    bgr=True,
    scale=1.0,
)
SPECS = {
    "meter-container": METER,
    "meter-sidecar": dataclasses.replace(
        METER, resize=Resize.SHORTER_SIDE_THEN_CROP, resize_target=(256, 256)
    ),
    "legacy2018-227": dataclasses.replace(
        METER, resize=Resize.CENTRE_SQUARE_THEN_CROP, resize_target=(256, 256), input_size=(227, 227)
    ),
    "s1-stretch-rgb-0-1-bicubic": dataclasses.replace(
        METER,
        resize=Resize.STRETCH,
        resize_target=(300, 300),
        input_size=(300, 300),
        resample=Resample.BICUBIC,
        bgr=False,
        scale=1 / 255,
    ),
    "demo-align32": DEMO,
    "align32-bilinear-nhwc": dataclasses.replace(DEMO, resample=Resample.BILINEAR, nchw=False),
    "torchvision-mean-std": dataclasses.replace(
        METER,
        resize=Resize.TORCHVISION_CROP,
        resize_target=(256, 256),
        bgr=False,
        scale=1 / 255,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    ),
}


# ------------------------------------------------------------------------------------------------- tests


def test_the_corpus_is_named_and_reproducible() -> None:
    names = [name for name, _, _ in plan(SEED)]
    assert len(names) == SYNTHETIC_COUNT >= 200
    assert len(set(names)) == len(names)
    picks = [0, 13, 20, 27, 41, 55, 97, 181, 195, 209]  # every corner of the plan, small sizes mostly
    first = [hashlib.sha256(synthetic_image(SEED, i).data).hexdigest() for i in picks]
    again = [hashlib.sha256(synthetic_image(SEED, i).data).hexdigest() for i in picks]
    assert first == again
    other = [hashlib.sha256(synthetic_image(SEED + 1, i).data).hexdigest() for i in picks[:3]]
    assert not set(other) & set(first)


def test_the_corpus_has_the_sizes_and_modes_it_names(cases: list[Case]) -> None:
    seen = {(c.item.encoding, c.reference.mode) for c in cases if c.item.kind == "synthetic"}
    modes = {mode for _, mode in seen}
    assert modes == {"RGB", "L", "RGBA"}  # palette PNGs: RGB, or RGBA with a transparent index
    assert ("png-palette-trns", "RGBA") in seen and ("png-palette", "RGB") in seen
    for c in cases:
        w, h = c.item.size
        turned = c.item.encoding.endswith(("exif6", "exif8"))
        assert c.reference.size == ((h, w) if turned else (w, h)), c.item.name


@pytest.mark.shared
def test_the_fixtures_are_in_the_corpus(shared_models: Path) -> None:
    golden = {p.name for p in shared_models.glob("*/test-*.jpg")}
    assert {c.name for c in fixture_images(shared_models)} == golden
    assert len(golden) == 6


def test_exact_decode_is_the_reference_decode(cases: list[Case]) -> None:
    wrong = [
        c.item.name
        for c in cases
        if (c.runtime.mode, c.runtime.size) != (c.reference.mode, c.reference.size)
        or c.runtime.tobytes() != c.reference.tobytes()
    ]
    assert not wrong


@pytest.mark.parametrize("name", list(SPECS))
def test_exact_tensor_is_the_reference_tensor(cases: list[Case], name: str) -> None:
    spec = SPECS[name]
    assert spec.fidelity is Fidelity.EXACT
    wrong = []
    for c in cases:
        tensor, _ = prepare(c.runtime, spec)
        expected = reference_tensor(c.reference, spec)
        if tensor.dtype != np.float32 or not np.array_equal(tensor, expected):
            same_shape = tensor.shape == expected.shape
            worst = float(np.abs(tensor.astype(np.float64) - expected).max()) if same_shape else None
            wrong.append(f"{c.item.name}: {tensor.shape} vs {expected.shape}, max |diff| {worst}")
    assert not wrong, wrong


@pytest.mark.shared
def test_meter_spec_is_the_loaders(meter_dir: Path) -> None:
    assert load_spec(meter_dir).preprocess == METER


def test_demo_spec_is_the_loaders(demo_predictor: Predictor) -> None:
    assert demo_predictor.spec.preprocess == DEMO


def _reference_result(predictor: Predictor, image: Image.Image) -> tuple[Any, ...]:
    spec = predictor.spec
    tensor = reference_tensor(image, spec.preprocess)
    geometry = None  # the fixed-input recipes fill the input; align32's input follows the picture
    return tuple(postprocess(predictor.backend.run(tensor), spec, geometry))


@pytest.mark.shared
def test_meter_predict_bytes_is_the_reference_through_the_same_backend(
    cases: list[Case], meter_predictor: Predictor
) -> None:
    assert meter_predictor.spec.preprocess.fidelity is Fidelity.EXACT
    for c in cases:
        got = meter_predictor.predict_bytes(c.item.data)
        assert got.predictions == _reference_result(meter_predictor, c.reference), c.item.name
        assert got.image_size == c.reference.size


def test_demo_predict_bytes_is_the_reference_through_the_same_backend(
    cases: list[Case], demo_predictor: Predictor
) -> None:
    found = 0
    for c in cases:
        got = demo_predictor.predict_bytes(c.item.data)
        expected = _reference_result(demo_predictor, c.reference)
        assert got.predictions == expected, c.item.name
        found += len(expected)
    assert found > 0  # the corpus has stains and glare the demo detector reports


@pytest.mark.shared
def test_meter_predict_frame_is_the_reference(cases: list[Case], meter_predictor: Predictor) -> None:
    for c in cases[:: max(1, len(cases) // 12)]:
        rgb = c.reference.convert("RGB")
        frame = np.ascontiguousarray(np.asarray(rgb)[..., ::-1])  # what OpenCV hands a camera source
        assert image_from_bgr(frame).tobytes() == rgb.tobytes()
        got = meter_predictor.predict_frame(frame)
        assert got.predictions == _reference_result(meter_predictor, rgb), c.item.name
