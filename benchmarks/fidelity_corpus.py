"""The fidelity corpus (issue 17): a named, reproducible set of images to measure preprocessing on.

`corpus(seed=17)` returns, in this order:

1. **The fixtures** (kind "fixture"): every `test-*.jpg` under `../shared/customvision-models` (the images
   the golden tests predict and the container's answers in `container_outputs.json` are for), each once
   (they are copied between folders; de-duplicated by content, in file-name order): test-cat.jpg (570x428,
   progressive), test-cheesecake-2730999.jpg (384x512), test-dog.jpg and test-dog1.jpg (224x224),
   test-donuts-3291252.jpg and test-fries-2846809.jpg (512x512), all RGB 4:2:0. None when the folder is
   absent (`fixtures_found()` says where it looked).
2. **The synthetic images** (kind "synthetic"): every size of `SIZES` in every encoding of `ENCODINGS`,
   15 x 14 = 210 images, size-major (image `i` has size `SIZES[i // 14]` and encoding `ENCODINGS[i % 14]`).

   Sizes (stored width x height): 160x120, 320x240, 640x480, 641x479 (odd), 597x447 and 598x448 (either
   side of twice a 224 network input's shorter side), 800x600, 1280x720, 1279x721 (odd), 1920x1080,
   2592x1944 (5 MP), 480x640 and 1080x1920 (portrait), 2000x120 and 112x1600 (thin strips).

   Encodings: JPEG RGB at quality 70, 80, 90 with 4:2:0 chroma subsampling and at 85, 95 with 4:4:4; a
   progressive JPEG (q85, 4:2:0); a greyscale JPEG (mode L, q85); JPEGs carrying EXIF orientation 3
   (q85 4:2:0), 6 (q90 4:2:0) and 8 (q80 4:4:4) (the pixels are stored as rendered, the tag says how to
   turn them); PNG RGB; PNG RGBA (an alpha ramp over a band, transparent holes and a transparent
   border: colour is kept under zero alpha, as a cut-out tool leaves it); palette PNG (256 colours, fast
   octree, dithered) without and with a transparent index (`tRNS`: the runtime turns it into RGBA).

   Content, like a line camera sees it, drawn with numpy and Pillow only: a light conveyor belt (grey
   140..195 with a small tint, fine ridges across the belt, low-frequency blotches, a seam), uneven
   lighting (a linear gradient and vignetting), 0..6 parts (rotated boxes, discs, rings with holes,
   brackets) with outlines, drop shadows, scratches and printed bar-code-like labels, 0..3 dark blurred
   stains and 0..3 blown-out glare spots, an optional Gaussian blur (out of focus, 30 % of images),
   then Gaussian sensor noise (sigma 1..6 per channel). Each image's random numbers come from
   `numpy.random.default_rng([seed, i])` alone, so one image can be rebuilt without the others
   (`synthetic_image(seed, i)`).

The bytes are a function of the seed, numpy's PCG64 streams and the Pillow build's encoders (zlib and
libjpeg-turbo): the same on one environment, and so `corpus_digest` printed with a benchmark's results
names the exact set measured. `python -m benchmarks.fidelity_corpus [--seed N] [--out DIR]` lists the
corpus with its digest (and writes the files to DIR).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
SHARED_CANDIDATES = (REPO.parent / "shared" / "customvision-models", Path("/work/shared/customvision-models"))
DEFAULT_SEED = 17

SIZES: tuple[tuple[int, int], ...] = (
    (160, 120),
    (320, 240),
    (640, 480),
    (641, 479),
    (597, 447),
    (598, 448),
    (800, 600),
    (1280, 720),
    (1279, 721),
    (1920, 1080),
    (2592, 1944),
    (480, 640),
    (1080, 1920),
    (2000, 120),
    (112, 1600),
)


@dataclass(frozen=True, slots=True)
class Encoding:
    name: str
    format: str  # "JPEG" or "PNG"
    mode: str  # the stored mode: RGB, L, RGBA, P
    quality: int = 0  # JPEG
    subsampling: int = 2  # JPEG: Pillow's 0 = 4:4:4, 2 = 4:2:0
    progressive: bool = False
    orientation: int = 0  # EXIF 0x0112; 0 = no EXIF block
    transparency: bool = False  # P: a transparent palette index


ENCODINGS: tuple[Encoding, ...] = (
    Encoding("jpeg-q70-420", "JPEG", "RGB", 70, 2),
    Encoding("jpeg-q80-420", "JPEG", "RGB", 80, 2),
    Encoding("jpeg-q90-420", "JPEG", "RGB", 90, 2),
    Encoding("jpeg-q85-444", "JPEG", "RGB", 85, 0),
    Encoding("jpeg-q95-444", "JPEG", "RGB", 95, 0),
    Encoding("jpeg-q85-420-progressive", "JPEG", "RGB", 85, 2, progressive=True),
    Encoding("jpeg-grey-q85", "JPEG", "L", 85),
    Encoding("jpeg-q85-420-exif3", "JPEG", "RGB", 85, 2, orientation=3),
    Encoding("jpeg-q90-420-exif6", "JPEG", "RGB", 90, 2, orientation=6),
    Encoding("jpeg-q80-444-exif8", "JPEG", "RGB", 80, 0, orientation=8),
    Encoding("png-rgb", "PNG", "RGB"),
    Encoding("png-rgba", "PNG", "RGBA"),
    Encoding("png-palette", "PNG", "P"),
    Encoding("png-palette-trns", "PNG", "P", transparency=True),
)
SYNTHETIC_COUNT = len(SIZES) * len(ENCODINGS)


@dataclass(frozen=True, slots=True)
class CorpusImage:
    name: str  # unique in the corpus: the fixture's file name, or syn<seed>-<i>-<w>x<h>-<encoding>
    data: bytes  # the encoded file
    kind: str  # "fixture" or "synthetic"
    size: tuple[int, int] = (0, 0)  # stored width x height (before any EXIF turn)
    encoding: str = ""  # an ENCODINGS name; "jpeg" for the fixtures

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# ------------------------------------------------------------------------------------------------ fixtures


def fixtures_found() -> Path | None:
    """The shared fixtures folder, or None (looked in SHARED_CANDIDATES)."""
    for candidate in SHARED_CANDIDATES:
        if (candidate / "onnx-converted-meter-compact").is_dir():
            return candidate.resolve()
    return None


def fixture_images(root: Path | None = None) -> list[CorpusImage]:
    """Every test-*.jpg under the shared folder once, by file name (the folders hold copies)."""
    root = root or fixtures_found()
    if root is None:
        return []
    seen: dict[str, CorpusImage] = {}
    for path in sorted(root.glob("*/test-*.jpg"), key=lambda p: (p.name, str(p))):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            continue
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
        seen[digest] = CorpusImage(path.name, data, "fixture", size, "jpeg")
    return sorted(seen.values(), key=lambda c: c.name)


# ----------------------------------------------------------------------------------------------- synthetic


def _field(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """Smooth noise (about -1..1) varying over `cell` pixels: a small random grid upscaled bicubically."""
    small = rng.standard_normal((max(2, height // cell + 2), max(2, width // cell + 2)), np.float32)
    field: np.ndarray = np.asarray(
        Image.fromarray(small, "F").resize((width, height), Image.Resampling.BICUBIC)
    )
    return field


def _belt(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """H x W x 3 float32: the belt, its texture and the lighting."""
    grey = rng.uniform(140, 195)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    period, phase = rng.uniform(3, 9), rng.uniform(0, 2 * math.pi)
    ridges = rng.uniform(1, 6) * np.sin(2 * math.pi * xs / period + phase)  # across the belt's travel
    gx, gy = rng.uniform(-25, 25, 2)
    lighting = gx * (xs / width - 0.5) + gy * (ys / height - 0.5)
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    radius2 = float(width * width + height * height) / 4
    vignette = -rng.uniform(0, 40) * (((xs - cx) ** 2) / radius2 + ((ys - cy) ** 2) / radius2)
    luma = grey + ridges + lighting + vignette + rng.uniform(3, 12) * _field(rng, width, height, 48)
    if rng.random() < 0.5:  # a seam across the belt
        x = int(rng.uniform(0.1, 0.9) * width)
        luma[:, x : x + max(1, width // 200)] -= rng.uniform(20, 50)
    tint = rng.normal(0, 5, 3).astype(np.float32)
    scene: np.ndarray = luma[..., None] + tint
    return scene


def _rotated_box(cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    corners = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    if rng.random() < 0.6:  # metal or dark plastic
        v = int(rng.uniform(40, 235))
        return (v, v + int(rng.integers(-6, 7)), v + int(rng.integers(-10, 11)))
    return tuple(int(c) for c in rng.integers(20, 240, 3))  # type: ignore[return-value]


def _parts(rng: np.random.Generator, image: Image.Image) -> None:
    width, height = image.size
    draw = ImageDraw.Draw(image)
    unit = min(width, height)
    for _ in range(int(rng.integers(0, 7))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.08, 0.6) * unit, rng.uniform(0.08, 0.6) * unit
        angle = rng.uniform(0, math.pi)
        fill, outline = _colour(rng), (int(rng.integers(0, 60)),) * 3
        edge = int(rng.integers(1, 5))
        shadow = (int(rng.integers(50, 110)),) * 3
        dx, dy = rng.uniform(2, 0.03 * unit + 3, 2)
        shape = int(rng.integers(0, 4))
        if shape == 0:  # a rotated box
            draw.polygon(_rotated_box(cx + dx, cy + dy, w, h, angle), fill=shadow)
            draw.polygon(_rotated_box(cx, cy, w, h, angle), fill=fill, outline=outline, width=edge)
        elif shape in (1, 2):  # a disc, or a ring with its hole showing the belt
            r = min(w, h) / 2
            draw.ellipse((cx - r + dx, cy - r + dy, cx + r + dx, cy + r + dy), fill=shadow)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=edge)
            if shape == 2:
                hole = r * rng.uniform(0.2, 0.6)
                belt = image.getpixel((int(min(width - 1, max(0, cx + r + 2))), int(cy) % height))
                draw.ellipse((cx - hole, cy - hole, cx + hole, cy + hole), fill=belt, outline=outline)
        else:  # a bracket: a thick polyline
            points = _rotated_box(cx, cy, w, h, angle)[:3]
            draw.line(points, fill=fill, width=max(2, int(min(w, h) / 6)), joint="curve")
        if rng.random() < 0.5 and min(w, h) > 32:  # a printed label with bars
            lx, ly = cx - w / 4, cy - h / 8
            draw.rectangle((lx, ly, lx + w / 2, ly + h / 4), fill=(235, 235, 228))
            x = lx + 2
            while x < lx + w / 2 - 2:
                bar = float(rng.uniform(1, 4))
                draw.rectangle((x, ly + 2, x + bar - 1, ly + h / 4 - 2), fill=(15, 15, 15))
                x += bar + float(rng.uniform(1, 4))
    for _ in range(int(rng.integers(0, 4))):  # scratches
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        length, angle = rng.uniform(0.05, 0.4) * unit, rng.uniform(0, 2 * math.pi)
        tone = (int(rng.uniform(200, 255)),) * 3
        draw.line((x0, y0, x0 + length * math.cos(angle), y0 + length * math.sin(angle)), fill=tone, width=1)


def _blobs(
    rng: np.random.Generator, image: Image.Image, count: int, colour: tuple[int, int, int], size: float
) -> Image.Image:
    """Blurred ellipses of `colour` composited over the image (stains when dark, glare when bright)."""
    if count == 0:
        return image
    width, height = image.size
    scale = 4
    mask = Image.new("L", (max(1, width // scale), max(1, height // scale)), 0)
    draw = ImageDraw.Draw(mask)
    unit = min(mask.size)
    for _ in range(count):
        cx, cy = rng.uniform(0, mask.width), rng.uniform(0, mask.height)
        rx, ry = rng.uniform(0.02, size) * unit + 1, rng.uniform(0.02, size) * unit + 1
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=int(rng.integers(160, 256)))
    mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3))).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return Image.composite(Image.new("RGB", (width, height), colour), image, mask)


def _alpha(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    alpha = np.full((height, width), 255, np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    band = (rng.uniform(0.2, 0.5) * height, rng.uniform(0.6, 0.9) * height)
    ramp = np.clip((ys - band[0]) / max(1.0, band[1] - band[0]), 0, 1)
    alpha = alpha * (1 - 0.8 * ramp * (ys < band[1]))
    border = int(rng.integers(0, max(1, min(width, height) // 8)))
    if border:
        alpha[:border] = alpha[-border:] = 0
        alpha[:, :border] = alpha[:, -border:] = 0
    mask = Image.fromarray(np.round(alpha).astype(np.uint8), "L")
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy, r = (
            rng.uniform(0, width),
            rng.uniform(0, height),
            rng.uniform(0.03, 0.15) * min(width, height),
        )
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=0)
    return mask


def render(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """One camera-like RGB scene."""
    base = _belt(rng, width, height)
    np.rint(base, out=base)
    np.clip(base, 0, 255, out=base)
    image = Image.fromarray(base.astype(np.uint8), "RGB")
    _parts(rng, image)
    dark = float(rng.uniform(35, 90))
    image = _blobs(rng, image, int(rng.integers(0, 4)), (int(dark), int(dark * 0.9), int(dark * 0.8)), 0.12)
    image = _blobs(rng, image, int(rng.integers(0, 4)), (255, 255, 250), 0.05)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 2.5)))
    sigma = np.float32(rng.uniform(1, 6))
    noisy = rng.standard_normal((height, width, 3), np.float32)  # computed in place: 5 MP images
    noisy *= sigma
    noisy += np.asarray(image)
    np.rint(noisy, out=noisy)
    np.clip(noisy, 0, 255, out=noisy)
    return Image.fromarray(noisy.astype(np.uint8), "RGB")


def encode(image: Image.Image, encoding: Encoding, rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    if encoding.format == "JPEG":
        picture = image.convert("L") if encoding.mode == "L" else image
        params: dict[str, object] = {"quality": encoding.quality, "progressive": encoding.progressive}
        if encoding.mode != "L":
            params["subsampling"] = encoding.subsampling
        if encoding.orientation:
            exif = Image.Exif()
            exif[0x0112] = encoding.orientation
            exif[0x010F] = "fidelity-corpus"  # Make
            params["exif"] = exif.tobytes()
        picture.save(out, "JPEG", **params)
        return out.getvalue()
    if encoding.mode == "RGBA":
        picture = image.copy()
        picture.putalpha(_alpha(rng, *image.size))
        picture.save(out, "PNG", compress_level=1)
    elif encoding.mode == "P":
        picture = image.quantize(256, method=Image.Quantize.FASTOCTREE)
        params = {"compress_level": 1}
        if encoding.transparency:
            params["transparency"] = int(rng.integers(0, 256))
        picture.save(out, "PNG", **params)
    else:
        image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def plan(seed: int = DEFAULT_SEED) -> list[tuple[str, tuple[int, int], Encoding]]:
    """(name, size, encoding) of every synthetic image, without rendering any."""
    return [
        (
            f"syn{seed}-{i:03d}-{SIZES[i // len(ENCODINGS)][0]}x{SIZES[i // len(ENCODINGS)][1]}-"
            f"{ENCODINGS[i % len(ENCODINGS)].name}",
            SIZES[i // len(ENCODINGS)],
            ENCODINGS[i % len(ENCODINGS)],
        )
        for i in range(SYNTHETIC_COUNT)
    ]


def synthetic_image(seed: int, index: int) -> CorpusImage:
    """Synthetic image `index` of the corpus of `seed`, alone."""
    name, (width, height), encoding = plan(seed)[index]
    rng = np.random.default_rng([seed, index])
    data = encode(render(rng, width, height), encoding, rng)
    return CorpusImage(name, data, "synthetic", (width, height), encoding.name)


def corpus(seed: int = DEFAULT_SEED, *, fixtures: bool = True, limit: int | None = None) -> list[CorpusImage]:
    """The fixtures, then the synthetic images (all of them, or every k-th so that about `limit` remain,
    spread over sizes and encodings)."""
    indices = list(range(SYNTHETIC_COUNT))
    if limit is not None and limit < SYNTHETIC_COUNT:
        indices = quick_indices(limit)
    return (fixture_images() if fixtures else []) + [synthetic_image(seed, i) for i in indices]


def quick_indices(limit: int) -> list[int]:
    """About `limit` synthetic indices spread over every size and encoding (a step co-prime with the
    encodings' count, so that consecutive picks change encoding)."""
    step = max(1, SYNTHETIC_COUNT // max(1, limit))
    while math.gcd(step, len(ENCODINGS)) != 1:
        step += 1
    return sorted({(k * step) % SYNTHETIC_COUNT for k in range(min(limit, SYNTHETIC_COUNT))})


def corpus_digest(images: Sequence[CorpusImage]) -> str:
    """sha256 over the names and bytes, in order: names the exact set measured."""
    h = hashlib.sha256()
    for image in images:
        h.update(image.name.encode() + b"\0" + hashlib.sha256(image.data).digest())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fidelity_corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, help="write the files to this folder")
    args = parser.parse_args(argv)
    images = corpus(args.seed)
    for image in images:
        print(f"{image.name:48} {image.kind:9} {image.size[0]:>5}x{image.size[1]:<5} {len(image.data):>9} B")
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            suffix = ".png" if image.encoding.startswith("png") else ".jpg"
            (args.out / (image.name if image.kind == "fixture" else image.name + suffix)).write_bytes(
                image.data
            )
    print(f"fidelity corpus seed {args.seed}: {len(images)} images, sha256 {corpus_digest(images)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
