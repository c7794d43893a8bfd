"""Hostile inputs for the HTTP API, generated from a seed: no stored files, nothing from edge_runtime.

Everything here is pure and deterministic: the same `random.Random(seed)` gives the same bytes. The
integration suite (tests/integration/test_hostile_input.py) sends these over raw TCP; the unit tests
(tests/unit/test_hostile_generators.py) check that each input is what its name says (a bomb really
claims its dimensions, a truncation really is broken for PIL, a foreign format really is recognised by
PIL as that format, the scan bomb really is slow to decode), so a green integration run means something.

Groups:
- images: `valid_images`, `truncations`, `bit_flips`, `not_images`, `foreign_formats`
- size attacks: `bombs` (every allowed format claiming > 50 M pixels in a small file), `thin_png`,
  `progressive_scan_bomb` / `with_extra_scans` (progressive JPEG scan bomb), `png_flat`
- HTTP framing: `http_request`, `multipart_body`, `malformed_multipart`, `encoded_bodies`
- /url: `hostile_json_bodies`, `hostile_urls`
"""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")  # the server's default image_formats
MAX_IMAGE_PIXELS = 50_000_000  # server.max_image_pixels default
BOMB_PIXELS = 5 * MAX_IMAGE_PIXELS  # every bomb claims at least this many pixels (WebP: 16383² at most)

Header = tuple[str | bytes, str | bytes]


# --------------------------------------------------------------------------------------------------
# Valid images


def sample_image(rng: random.Random, width: int = 64, height: int = 48) -> Image.Image:
    """A small colourful RGB image: a gradient with a few random rectangles (compresses like a photo)."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = rng.randrange(x0, width), rng.randrange(y0, height)
        draw.rectangle([x0, y0, x1, y1], fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    return image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def valid_images(rng: random.Random) -> dict[str, bytes]:
    """One small valid image per allowed format (plus a progressive JPEG and a lossless WebP)."""
    image = sample_image(rng)
    return {
        "JPEG": encode(image, "JPEG", quality=90),
        "JPEG-progressive": encode(image, "JPEG", quality=90, progressive=True),
        "PNG": encode(image, "PNG"),
        "BMP": encode(image, "BMP"),
        "GIF": encode(image, "GIF"),
        "WEBP": encode(image, "WEBP", quality=80),
        "WEBP-lossless": encode(image, "WEBP", lossless=True),
    }


def pil_loads(data: bytes) -> bool:
    """True when PIL (strict: truncated images are errors) opens and fully decodes `data`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same answer whether or not pytest turns warnings into errors
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    return False
                image.load()
        except Exception:  # PIL raises many types for broken data; any of them means "broken"
            return False
    return True


def truncations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    """`count` distinct non-empty prefixes of `data` that PIL cannot decode (a truncation PIL still
    decodes fully, e.g. a GIF cut before its trailer byte, is not broken and is skipped)."""
    assert pil_loads(data), "truncate a valid image"
    cuts = {1, 2, 8, 16, 32, len(data) // 2, len(data) - 1}
    while len(cuts) < 4 * count:
        cuts.add(rng.randrange(1, len(data)))
    chosen = sorted(cuts)
    rng.shuffle(chosen)
    out = [data[:cut] for cut in chosen if not pil_loads(data[:cut])]
    return sorted(out[:count], key=len)


def bit_flips(data: bytes, rng: random.Random, count: int, max_flips: int = 4) -> list[bytes]:
    """`count` copies of `data` with 1..max_flips random bits flipped (may still be valid images)."""
    out = []
    for _ in range(count):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, max_flips)):
            bit = rng.randrange(len(flipped) * 8)
            flipped[bit // 8] ^= 1 << (bit % 8)
        out.append(bytes(flipped))
    return out


# Magic numbers of the allowed formats: "looks like X" followed by garbage.
MAGIC = {
    "JPEG": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "PNG": b"\x89PNG\r\n\x1a\n",
    "GIF": b"GIF89a",
    "BMP": b"BM",
    "TIFF": b"II*\x00",
    "WEBP": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
}


def not_images(rng: random.Random) -> dict[str, bytes]:
    """Bodies that are not images at all, or only start like one."""
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr(zipfile.ZipInfo("image.jpg", date_time=(2026, 1, 1, 0, 0, 0)), rng.randbytes(200))
    cases = {
        "one-byte": b"\xff",
        "random-17": rng.randbytes(17),
        "random-1k": rng.randbytes(1000),
        "random-64k": rng.randbytes(65536),
        "zeros-4k": bytes(4096),
        "text": b"this is not an image\n" * 20,
        "json": json.dumps({"url": "http://example.com/a.jpg"}).encode(),
        "html": b"<!doctype html><html><body><img src=x></body></html>",
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        "zip": zipped.getvalue(),
        "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
        "gzip": _gzip(rng.randbytes(500)),
    }
    for fmt, magic in MAGIC.items():
        cases[f"magic-{fmt}"] = magic + rng.randbytes(rng.randrange(10, 3000))
    return cases


def _psd(image: Image.Image) -> bytes:
    """A minimal uncompressed RGB Photoshop file (PIL reads PSD but cannot write it)."""
    rgb = image.convert("RGB")
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, rgb.height, rgb.width, 8, 3)
    planes = b"".join(band.tobytes() for band in rgb.split())
    return head + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + planes


def _eps(image: Image.Image) -> bytes:
    """An EPS header PIL recognises (decoding it would run Ghostscript on the uploaded file)."""
    return (
        f"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 {image.width} {image.height}\n%%EndComments\n"
        "0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
    ).encode()


def foreign_formats(rng: random.Random) -> dict[str, bytes]:
    """Well-formed files PIL recognises, in formats outside the server's default image_formats.

    Keys are PIL's format names (what `Image.open(...).format` says)."""
    image = sample_image(rng, 32, 32)
    return {
        "ICO": encode(image, "ICO", sizes=[(32, 32)]),
        "PPM": encode(image, "PPM"),
        "PSD": _psd(image),
        "TGA": encode(image, "TGA"),
        "PCX": encode(image, "PCX"),
        "SGI": encode(image, "SGI"),
        "QOI": encode(image, "QOI"),
        "DDS": encode(image.convert("RGBA"), "DDS"),
        "XBM": encode(image.convert("1"), "XBM"),
        "EPS": _eps(image),
        "TIFF": encode(image, "TIFF"),  # PIL reads it, but the server's default list leaves it out
    }


# --------------------------------------------------------------------------------------------------
# Decompression bombs: small files claiming huge dimensions


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_flat(width: int, height: int, bit_depth: int = 1) -> bytes:
    """A real, valid grayscale PNG of any size, all black, built without holding its pixels: the raw
    scanlines (filter byte 0 + zero pixels) are all zero bytes, compressed in 1 MiB blocks."""
    row = 1 + (width * bit_depth + 7) // 8
    total = row * height
    compressor = zlib.compressobj(9)
    block = bytes(min(total, 1 << 20))
    parts = []
    left = total
    while left:
        take = min(left, len(block))
        parts.append(compressor.compress(block[:take]))
        left -= take
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def png_claiming(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR rewritten to claim width x height (CRC fixed)."""
    assert png[12:16] == b"IHDR"
    ihdr = png[16:29]
    ihdr = struct.pack(">II", width, height) + ihdr[8:]
    return png[:8] + png_chunk(b"IHDR", ihdr) + png[33:]


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset of 0xFF, offset after the segment header) of each marker segment up to EOI;
    entropy-coded data after SOS is skipped."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    out = []
    i = 2
    while i + 1 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0x00, 0xFF) or 0xD0 <= marker <= 0xD7:
            i += 1
            continue
        if marker == 0xD9:
            out.append((marker, i, i + 2))
            break
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        out.append((marker, i, i + 2 + length))
        i += 2 + length
    return out


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOFn) rewritten to claim width x height (each < 65536)."""
    for marker, start, _ in jpeg_segments(jpeg):
        if marker in _SOF_MARKERS:
            out = bytearray(jpeg)
            struct.pack_into(">HH", out, start + 5, height, width)
            return bytes(out)
    raise ValueError("no SOF marker")


def gif_claiming(gif: bytes, width: int, height: int) -> bytes:
    """The GIF with its logical screen and first image descriptor claiming width x height."""
    out = bytearray(gif)
    struct.pack_into("<HH", out, 6, width, height)
    i = 13
    if out[10] & 0x80:
        i += 3 * (2 << (out[10] & 7))
    while out[i] == 0x21:  # extensions: label, then sub-blocks up to a 0 length
        i += 2
        while out[i]:
            i += out[i] + 1
        i += 1
    assert out[i] == 0x2C, "no image descriptor"
    struct.pack_into("<HH", out, i + 5, width, height)
    return bytes(out)


def bmp_claiming(bmp: bytes, width: int, height: int) -> bytes:
    """The BMP with its BITMAPINFOHEADER claiming width x height (negative height: top-down rows)."""
    out = bytearray(bmp)
    struct.pack_into("<ii", out, 18, width, height)
    return bytes(out)


def tiff_claiming(tiff: bytes, width: int, height: int) -> bytes:
    """The little-endian TIFF with ImageWidth/ImageLength in its first IFD rewritten (as LONGs)."""
    out = bytearray(tiff)
    for tag, (at, _, _) in _tiff_entries(tiff).items():
        if tag in (256, 257):
            struct.pack_into("<HHII", out, at, tag, 4, 1, width if tag == 256 else height)
    return bytes(out)


def _tiff_entries(tiff: bytes) -> dict[int, tuple[int, int, int]]:
    """tag -> (offset of the entry, type, first value) of a little-endian TIFF's first IFD."""
    assert tiff[:4] == b"II*\x00", "little-endian TIFF expected"
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    out = {}
    for n in range(struct.unpack_from("<H", tiff, ifd)[0]):
        at = ifd + 2 + 12 * n
        tag, kind = struct.unpack_from("<HH", tiff, at)
        value = struct.unpack_from("<H" if kind == 3 else "<I", tiff, at + 8)[0]
        out[tag] = (at, kind, value)
    return out


def tiff_corrupt_strip(rng: random.Random, width: int = 48, height: int = 32) -> bytes:
    """A deflate TIFF whose (single) strip is random bytes: the header is fine, libtiff's decoder
    fails (and libtiff reports it on stderr unless its handlers are replaced)."""
    tiff = bytearray(encode(sample_image(rng, width, height), "TIFF", compression="tiff_deflate"))
    entries = _tiff_entries(bytes(tiff))
    offset, count = entries[273][2], entries[279][2]  # StripOffsets, StripByteCounts (one strip)
    tiff[offset : offset + count] = rng.randbytes(count)
    return bytes(tiff)


def webp_claiming(webp: bytes, width: int, height: int) -> bytes:
    """The simple-format WebP (VP8 or VP8L) with its bitstream header claiming width x height
    (at most 16383 x 16383, the format's limit)."""
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    out = bytearray(webp)
    kind = bytes(out[12:16])
    if kind == b"VP8L":
        assert out[20] == 0x2F
        bits = struct.unpack_from("<I", out, 21)[0]
        bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
        struct.pack_into("<I", out, 21, bits)
    elif kind == b"VP8 ":
        assert out[23:26] == b"\x9d\x01\x2a"
        struct.pack_into("<HH", out, 26, width & 0x3FFF, height & 0x3FFF)
    else:
        raise ValueError(f"unsupported WebP chunk {kind!r}")
    return bytes(out)


def webp_vp8x_canvas(webp: bytes, width: int, height: int) -> bytes:
    """A VP8X (extended) WebP declaring a width x height canvas around the simple image's bitstream."""
    body = webp[12:]  # the VP8/VP8L chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    payload = b"WEBP" + vp8x + body
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def bombs(rng: random.Random) -> dict[str, bytes]:
    """One or more small files per allowed format whose headers claim >= BOMB_PIXELS pixels."""
    image = sample_image(rng, 16, 16)
    png = encode(image, "PNG")
    return {
        "PNG-header": png_claiming(png, 100_000, 100_000),
        "PNG-real-8000x80000": png_flat(8_000, 80_000),  # a real 1-bit PNG: 640 M pixels in ~80 KB
        "JPEG-baseline": jpeg_claiming(encode(image, "JPEG"), 65_000, 65_000),
        "JPEG-progressive": jpeg_claiming(encode(image, "JPEG", progressive=True), 65_000, 65_000),
        "GIF": gif_claiming(encode(image, "GIF"), 65_535, 65_535),
        "BMP": bmp_claiming(encode(image, "BMP"), 100_000, 100_000),
        "BMP-top-down": bmp_claiming(encode(image, "BMP"), 100_000, -100_000),
        "WEBP-lossless": webp_claiming(encode(image, "WEBP", lossless=True), 16_383, 16_383),
        "WEBP-lossy": webp_claiming(encode(image, "WEBP", quality=80), 16_383, 16_383),
    }


# Thin images: few pixels, but a recipe that scales the shorter side up to the network input (e.g.
# 224) would make billions (width x height, in pixels; all are real, valid PNGs).
THIN_SIZES = ((1, 20_000), (1, 200_000), (50_000_000, 1), (1, 1_000_000), (20_000, 1))


def thin_png(width: int, height: int) -> bytes:
    return png_flat(width, height)


# --------------------------------------------------------------------------------------------------
# Progressive JPEG scan bomb

# A scan header that codes nothing: one component (id 1, tables 0/0), spectral selection 1..1,
# successive approximation 0/0. Followed directly by the next marker, so its entropy data is empty;
# libjpeg still walks every block of the image for it (a warning, not an error).
EMPTY_SCAN = bytes.fromhex("ffda 0008 01 01 00 01 01 00")


def count_scans(jpeg: bytes) -> int:
    return sum(1 for marker, _, _ in jpeg_segments(jpeg) if marker == 0xDA)


def with_extra_scans(jpeg: bytes, extra: int) -> bytes:
    """The progressive JPEG with `extra` empty scans inserted before its EOI."""
    assert jpeg.endswith(b"\xff\xd9")
    return jpeg[:-2] + EMPTY_SCAN * extra + b"\xff\xd9"


def progressive_scan_bomb(size: int = 7000, extra_scans: int = 10_000) -> bytes:
    """A flat grey size x size progressive JPEG (49 M pixels: under the pixel limit) with `extra_scans`
    empty scans: ~290 KB that libjpeg takes tens of seconds to decode (every scan visits every block)."""
    flat = Image.new("L", (size, size), 128)
    return with_extra_scans(encode(flat, "JPEG", progressive=True, quality=75), extra_scans)


# --------------------------------------------------------------------------------------------------
# HTTP framing


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def http_request(
    method: str,
    path: str,
    headers: Sequence[Header] = (),
    body: bytes = b"",
    *,
    content_length: bool = True,
    host: str = "127.0.0.1",
) -> bytes:
    """One HTTP/1.1 request, byte for byte: request line, Host, Connection: close, `headers` as given,
    then Content-Length (unless `content_length` is False or the headers already frame the body)."""
    names = {_b(name).lower() for name, _ in headers}
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + host.encode(), b"Connection: close"]
    lines += [_b(name) + b": " + _b(value) for name, value in headers]
    framed = b"content-length" in names or b"transfer-encoding" in names
    if content_length and not framed and (body or method == "POST"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(body: bytes, size: int = 65536) -> bytes:
    """`body` in Transfer-Encoding: chunked framing."""
    out = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(out) + b"0\r\n\r\n"


@dataclass(frozen=True)
class Part:
    headers: tuple[Header, ...]
    body: bytes


def image_part(data: bytes, name: str = "imageData") -> Part:
    return Part(
        (
            ("Content-Disposition", f'form-data; name="{name}"; filename="image.jpg"'),
            ("Content-Type", "application/octet-stream"),
        ),
        data,
    )


def multipart_body(parts: Iterable[Part], boundary: bytes, *, close: bool = True) -> bytes:
    out = b""
    for part in parts:
        out += b"--" + boundary + b"\r\n"
        out += b"".join(_b(k) + b": " + _b(v) + b"\r\n" for k, v in part.headers) + b"\r\n"
        out += part.body + b"\r\n"
    if close:
        out += b"--" + boundary + b"--\r\n"
    return out


@dataclass(frozen=True)
class RawBody:
    """A request body with the headers that frame it (Content-Type, Content-Encoding ...)."""

    name: str
    headers: tuple[Header, ...]
    body: bytes
    extra: dict[str, object] = field(default_factory=dict)


def malformed_multipart(image: bytes, rng: random.Random, max_body_bytes: int) -> list[RawBody]:
    """Broken multipart/form-data requests carrying `image` (a valid image) as imageData, plus one
    well-formed form whose extra fields take the whole body over `max_body_bytes` (key "too_large")."""
    good = b"hostile" + rng.randbytes(8).hex().encode()
    ct = f"multipart/form-data; boundary={good.decode()}"
    whole = multipart_body([image_part(image)], good)
    long_boundary = b"b" * 5000
    nested = Part(
        (("Content-Disposition", 'form-data; name="imageData"'), ("Content-Type", "multipart/mixed")),
        image,
    )
    big_header = Part(
        (
            ("Content-Disposition", 'form-data; name="imageData"; filename="a.jpg"'),
            ("X-Padding", "p" * 100_000),
        ),
        image,
    )
    colonless = multipart_body([image_part(image)], good).replace(
        b"Content-Type: application/octet-stream\r\n", b"this line has no colon at all\r\n"
    )
    filler = Part((("Content-Disposition", 'form-data; name="filler"'),), b"f" * (max_body_bytes // 4))
    return [
        RawBody("no-boundary", (("Content-Type", "multipart/form-data"),), whole),
        RawBody("empty-boundary", (("Content-Type", "multipart/form-data; boundary="),), whole),
        RawBody("wrong-boundary", (("Content-Type", "multipart/form-data; boundary=other"),), whole),
        RawBody(
            "unterminated-quoted-boundary", (("Content-Type", 'multipart/form-data; boundary="abc'),), whole
        ),
        RawBody(
            "boundary-5000-chars",
            (("Content-Type", f"multipart/form-data; boundary={long_boundary.decode()}"),),
            multipart_body([image_part(image)], long_boundary),
        ),
        RawBody("part-multipart-mixed-no-boundary", (("Content-Type", ct),), multipart_body([nested], good)),
        RawBody("part-header-100k", (("Content-Type", ct),), multipart_body([big_header], good)),
        RawBody("part-header-without-colon", (("Content-Type", ct),), colonless),
        RawBody("empty-body", (("Content-Type", ct),), b""),
        RawBody("only-opening-boundary", (("Content-Type", ct),), b"--" + good + b"\r\n"),
        RawBody("truncated-mid-image", (("Content-Type", ct),), whole[: len(whole) // 2]),
        RawBody("truncated-in-part-headers", (("Content-Type", ct),), whole[: len(good) + 20]),
        RawBody("garbage-body", (("Content-Type", ct),), rng.randbytes(3000)),
        RawBody(
            "too_large",
            (("Content-Type", ct),),
            multipart_body([filler] * 5 + [image_part(image)], good),
            {"too_large": True},
        ),
    ]


def _gzip(data: bytes) -> bytes:
    """gzip with a fixed header time: the same seed gives the same bytes."""
    return gzip.compress(data, mtime=0)


def encoded_bodies(image: bytes, max_body_bytes: int) -> list[RawBody]:
    """Content-Encoding cases for the raw body; extra["expect"] is "ok" (decodes to `image`), "bad"
    (undecodable), "unsupported" (a coding the server does not take) or "too_large" (decodes to more
    than max_body_bytes)."""
    bomb_size = 4 * max_body_bytes
    gz = _gzip(image)
    return [
        RawBody("gzip-valid", (("Content-Encoding", "gzip"),), gz, {"expect": "ok"}),
        RawBody("deflate-valid", (("Content-Encoding", "deflate"),), zlib.compress(image), {"expect": "ok"}),
        RawBody("identity", (("Content-Encoding", "identity"),), image, {"expect": "ok"}),
        RawBody("gzip-header-on-plain-image", (("Content-Encoding", "gzip"),), image, {"expect": "bad"}),
        RawBody("deflate-on-plain-image", (("Content-Encoding", "deflate"),), image, {"expect": "bad"}),
        RawBody("gzip-truncated", (("Content-Encoding", "gzip"),), gz[: len(gz) // 2], {"expect": "bad"}),
        RawBody("br-on-plain-image", (("Content-Encoding", "br"),), image, {"expect": "unsupported"}),
        RawBody("compress", (("Content-Encoding", "compress"),), image, {"expect": "unsupported"}),
        RawBody("unknown-coding", (("Content-Encoding", "x-hostile"),), image, {"expect": "unsupported"}),
        RawBody("gzip-twice-declared-once", (("Content-Encoding", "gzip"),), _gzip(gz), {"expect": "bad"}),
        RawBody(
            "gzip-bomb",
            (("Content-Encoding", "gzip"),),
            _gzip(bytes(bomb_size)),
            {"expect": "too_large"},
        ),
        RawBody(
            "deflate-bomb",
            (("Content-Encoding", "deflate"),),
            zlib.compress(bytes(bomb_size), 9),
            {"expect": "too_large"},
        ),
        RawBody(
            "gzip-bomb-chunked",
            (("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")),
            chunked(_gzip(bytes(bomb_size))),
            {"expect": "too_large"},
        ),
    ]


# --------------------------------------------------------------------------------------------------
# /url


def hostile_json_bodies(rng: random.Random) -> dict[str, bytes]:
    """/url bodies that are not {"url": "<string>"}: deep, huge, undecodable or of the wrong shape."""
    digits = "1" + "".join(rng.choice("0123456789") for _ in range(99_999))
    return {
        "deep-unterminated": b"[" * 5000,
        "deep-terminated": b"[" * 5000 + b"]" * 5000,
        "deep-objects": b'{"url":' * 5000 + b'"x"' + b"}" * 5000,
        "deep-inside-url": b'{"url": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "number-100000-digits": digits.encode(),
        "url-is-100000-digits": b'{"url": ' + digits.encode() + b"}",
        "invalid-utf8": b'{"url": "http://\xff\xfe.example/a.jpg"}',
        "lone-surrogate-escape": b'{"url": "http://\\ud800.example/"}',
        "nul-in-url": b'{"url": "http://exa\\u0000mple.com/a.jpg"}',
        "array": b'["http://example.com/a.jpg"]',
        "string": b'"http://example.com/a.jpg"',
        "number": b"42",
        "null": b"null",
        "true": b"true",
        "empty": b"",
        "whitespace": b"   \r\n\t ",
        "url-not-string": b'{"url": 12}',
        "url-object": b'{"url": {"url": "http://example.com/"}}',
        "url-nan": b'{"url": NaN}',
        "url-empty": b'{"url": ""}',
        "not-json": b"url=http://example.com/a.jpg",
        "trailing-garbage": b'{"url": "http://example.com/a.jpg"} trailing',
        "random-bytes": rng.randbytes(500),
    }


INTERNAL_URLS = (
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/a.jpg",
    "http://192.168.1.1/a.jpg",
    "http://172.16.0.1/a.jpg",
    "http://127.0.0.2/a.jpg",  # loopback, but not the allow-listed 127.0.0.1
    "http://0.0.0.0/a.jpg",
    "http://[::1]/a.jpg",
    "http://[::ffff:169.254.169.254]/a.jpg",
    "http://[fe80::1]/a.jpg",
    "http://[fc00::1]/a.jpg",
    "http://user:pass@10.1.2.3/a.jpg",
    "http://100.64.0.1/a.jpg",  # carrier-grade NAT
    "http://224.0.0.1/a.jpg",  # multicast
)


def hostile_urls() -> dict[str, str]:
    """URLs /url must refuse without fetching anything (syntax, scheme or internal address)."""
    urls = {
        "unclosed-ipv6": "http://[::1",
        "unclosed-ipv6-path": "http://[::1/a.jpg",
        "double-bracket": "http://[::1]]/a.jpg",
        "empty-label": "http://a..b/",
        "label-64": "http://" + "a" * 64 + ".example.com/a.jpg",
        "host-300": "http://" + ("abcdefghi." * 30) + "com/a.jpg",
        "space-in-host": "http://exa mple.com/a.jpg",
        "bad-port": "http://127.0.0.1:99999/a.jpg",
        "negative-port": "http://127.0.0.1:-1/a.jpg",
        "no-host": "http:///a.jpg",
        "only-scheme": "http://",
        "percent-host": "http://%zz/a.jpg",
        "relative": "/a.jpg",
        "scheme-relative": "//example.com/a.jpg",
        "file": "file:///etc/passwd",
        "ftp": "ftp://example.com/a.jpg",
        "gopher": "gopher://127.0.0.1:70/_x",
        "data": "data:image/png;base64,iVBORw0KGgo=",
        "javascript": "javascript:alert(1)",
        "unix": "unix:///var/run/docker.sock",
        "huge-url": "http://example.com/" + "a" * 1_000_000,
    }
    urls |= {f"internal-{n}": url for n, url in enumerate(INTERNAL_URLS)}
    return urls


# Where a redirect from an allow-listed image server may point: each must end in 400, not a fetch.
HOSTILE_REDIRECTS = (
    "http://[::1",
    "http://a..b/",
    "http://" + "a" * 64 + ".example.com/",
    "file:///etc/passwd",
    "ftp://example.com/a.jpg",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/a.jpg",
    "http://127.0.0.2/a.jpg",
    "http://exa mple.com/",
    "http://127.0.0.1:99999/",
)
