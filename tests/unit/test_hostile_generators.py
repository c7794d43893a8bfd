"""tests/hostile.py makes what its names say: otherwise a green hostile-input run would mean nothing.

Each generator is checked against PIL, zlib and json directly (no server): bombs really claim their
dimensions, truncations really are broken, foreign formats really are recognised as those formats,
thin images are real PNGs of their sizes, the scan bomb really is slow for PIL, and the same seed
gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import hostile
import pytest
from PIL import Image

MAX_BODY = 4 * 1024 * 1024


def open_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from PIL's header parse, with PIL's own bomb guard off."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return str(image.format), image.width, image.height
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def test_the_same_seed_gives_the_same_bytes() -> None:
    def everything(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        images = hostile.valid_images(rng)
        out = list(images.values())
        out += hostile.truncations(images["PNG"], rng, 5) + hostile.bit_flips(images["JPEG"], rng, 5)
        out += list(hostile.not_images(rng).values()) + list(hostile.foreign_formats(rng).values())
        out += list(hostile.bombs(rng).values()) + list(hostile.hostile_json_bodies(rng).values())
        out += [b.body for b in hostile.malformed_multipart(images["JPEG"], rng, MAX_BODY)]
        out.append(hostile.tiff_corrupt_strip(rng))
        return out

    assert everything(7) == everything(7)
    assert everything(7) != everything(8)


def test_valid_images_are_valid_in_their_formats() -> None:
    for name, data in hostile.valid_images(random.Random(1)).items():
        assert hostile.pil_loads(data), name
        assert open_size(data)[0] == name.split("-")[0]


@pytest.mark.parametrize("fmt", list(hostile.valid_images(random.Random(0))))
def test_truncations_are_broken_prefixes(fmt: str) -> None:
    data = hostile.valid_images(random.Random(2))[fmt]
    cuts = hostile.truncations(data, random.Random(3), 10)
    assert len(cuts) == 10 and len(set(cuts)) == 10
    for cut in cuts:
        assert 0 < len(cut) < len(data) and data.startswith(cut)
        assert not hostile.pil_loads(cut)


def test_bit_flips_change_a_few_bits() -> None:
    data = hostile.valid_images(random.Random(4))["PNG"]
    for flipped in hostile.bit_flips(data, random.Random(5), 20, max_flips=4):
        assert len(flipped) == len(data)
        changed = sum(bin(a ^ b).count("1") for a, b in zip(data, flipped, strict=True))
        assert 1 <= changed <= 4


def test_not_images_are_not_images() -> None:
    for name, data in hostile.not_images(random.Random(6)).items():
        assert data, name
        assert not hostile.pil_loads(data), name


def test_foreign_formats_are_recognised_by_pil_as_those_formats() -> None:
    formats = hostile.foreign_formats(random.Random(7))
    assert not set(formats) & set(hostile.ALLOWED_FORMATS)
    for name, data in formats.items():
        assert open_size(data)[0] == name


def test_bombs_claim_huge_dimensions_in_small_files() -> None:
    bombs = hostile.bombs(random.Random(8))
    assert {name.split("-")[0] for name in bombs} == set(hostile.ALLOWED_FORMATS)
    for name, data in bombs.items():
        fmt, width, height = open_size(data)
        assert fmt == name.split("-")[0], name
        assert width * height >= hostile.BOMB_PIXELS, (name, width, height)
        assert len(data) < 100_000, name


def test_the_real_png_bomb_is_a_complete_stream() -> None:
    data = hostile.png_flat(8_000, 80_000)
    idat_start = data.index(b"IDAT") + 4
    idat_length = int.from_bytes(data[idat_start - 8 : idat_start - 4], "big")
    raw = zlib.decompress(data[idat_start : idat_start + idat_length])
    assert raw == bytes(80_000 * (1 + 1000))


@pytest.mark.parametrize(("width", "height"), hostile.THIN_SIZES)
def test_thin_pngs_are_real_images_of_their_size(width: int, height: int) -> None:
    data = hostile.thin_png(width, height)
    assert open_size(data) == ("PNG", width, height)
    assert width * height <= hostile.MAX_IMAGE_PIXELS  # under the pixel limit: only the resize is too big
    if width * height <= 1_000_000:
        assert hostile.pil_loads(data)


def test_tiff_with_a_corrupt_strip_has_a_good_header_and_bad_data() -> None:
    data = hostile.tiff_corrupt_strip(random.Random(9))
    assert open_size(data) == ("TIFF", 48, 32)
    assert not hostile.pil_loads(data)


def test_extra_scans_are_counted() -> None:
    image = hostile.sample_image(random.Random(10), 64, 64)
    progressive = hostile.encode(image, "JPEG", progressive=True)
    base = hostile.count_scans(progressive)
    assert base > 1
    padded = hostile.with_extra_scans(progressive, 100 - base)
    assert hostile.count_scans(padded) == 100
    assert hostile.pil_loads(padded)  # empty scans are warnings to libjpeg, not errors


def test_scan_bomb_is_under_the_pixel_limit_and_small() -> None:
    bomb = hostile.progressive_scan_bomb()
    fmt, width, height = open_size(bomb)
    assert fmt == "JPEG" and width * height <= hostile.MAX_IMAGE_PIXELS
    assert hostile.count_scans(bomb) > 10_000
    assert len(bomb) < 500_000


@pytest.mark.slow
def test_scan_bomb_takes_pil_more_than_a_second(tmp_path: Path) -> None:
    """The point of the bomb: decoding it costs seconds (about 20 s here) though it is 290 KB."""
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(hostile.progressive_scan_bomb())
    script = textwrap.dedent(
        f"""
        from PIL import Image
        Image.open({str(bomb)!r}).load()
        """
    )
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", script], timeout=1.5, capture_output=True)


def test_malformed_multipart_cases() -> None:
    image = hostile.valid_images(random.Random(11))["JPEG"]
    bodies = hostile.malformed_multipart(image, random.Random(12), MAX_BODY)
    names = [b.name for b in bodies]
    assert len(names) == len(set(names))
    for body in bodies:
        assert any(str(k).lower() == "content-type" for k, _ in body.headers), body.name
    too_large = [b for b in bodies if b.extra.get("too_large")]
    assert len(too_large) == 1 and len(too_large[0].body) > MAX_BODY
    assert all(len(b.body) < MAX_BODY for b in bodies if not b.extra.get("too_large"))


def test_encoded_bodies_decode_as_announced() -> None:
    image = hostile.valid_images(random.Random(13))["JPEG"]
    for body in hostile.encoded_bodies(image, MAX_BODY):
        coding = dict(body.headers)["Content-Encoding"]
        data = body.body
        if ("Transfer-Encoding", "chunked") in body.headers:
            data = b"".join(data[i:j] for i, j in _chunks(data))  # the coding is on the payload
        decoded: bytes | None
        try:
            decoded = {"gzip": gzip.decompress, "deflate": zlib.decompress}.get(coding, lambda d: d)(data)
        except (OSError, EOFError, zlib.error):
            decoded = None
        expect = body.extra["expect"]
        if expect == "ok":
            assert decoded == image, body.name
        elif expect == "too_large":
            assert decoded is not None and len(decoded) > MAX_BODY, body.name
        else:  # undecodable, unsupported, or decoding to something that is not the image
            assert coding not in ("gzip", "deflate") or decoded != image, body.name


def _chunks(framed: bytes) -> list[tuple[int, int]]:
    spans, at = [], 0
    while True:
        line_end = framed.index(b"\r\n", at)
        size = int(framed[at:line_end], 16)
        if size == 0:
            return spans
        spans.append((line_end + 2, line_end + 2 + size))
        at = line_end + 2 + size + 2


def test_hostile_json_bodies_carry_no_usable_url() -> None:
    for name, body in hostile.hostile_json_bodies(random.Random(14)).items():
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            continue
        url = payload.get("url") if isinstance(payload, dict) else None
        # lone surrogates and NUL are not printable: such a "url" cannot be fetched either
        assert not (isinstance(url, str) and url.startswith("http") and url.isprintable()), name


def test_http_request_is_framed_exactly() -> None:
    raw = hostile.http_request("POST", "/image", [("X-A", b"\xff")], b"abc")
    assert raw == b"POST /image HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-A: \xff\r\n" + (
        b"Content-Length: 3\r\n\r\nabc"
    )
    chunked = hostile.http_request("POST", "/", [("Transfer-Encoding", "chunked")], hostile.chunked(b"x" * 5))
    assert b"Content-Length" not in chunked and chunked.endswith(b"5\r\nxxxxx\r\n0\r\n\r\n")
