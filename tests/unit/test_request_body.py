"""Request bodies: the strict multipart parser, safe JSON, reading a body under size/time/budget bounds."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from edge_runtime.api.body import (
    MAX_PART_HEADER_BYTES,
    MAX_PARTS,
    BodyBudget,
    BodyLimits,
    image_from_body,
    parse_json,
    received_body,
)
from edge_runtime.api.errors import ApiError

IMAGE = b"\xff\xd8\xff\xe0 not a real jpeg\r\n--almost a boundary\r\n\x00\xff\xd9"
B = "----edgeBoundary7MA4YWxk"
FORM = f"multipart/form-data; boundary={B}"
NOT_PROVIDED = "BadRequestImageNotProvided"
ODD_CONTENT_TYPES = (
    *("", ";", "\x00", "multipart/", "a" * 100_000, "\u2603/\u2603", "text/plain; charset=\udcff"),
    *("\udcff/\udcff; \udcff=\udcff", 'image/jpeg; q="open', 'multipart/form-data; boundary="open'),
    *("multipart/form-data; boundary*0=ab; boundary*1=cd", "multipart/form-data;;;boundary=a;boundary=b"),
    *('multipart/form-data; boundary="a\\"b"', f"MULTIPART/FORM-DATA; BOUNDARY={B}"),
)


def part(name: str | None, content: bytes) -> bytes:
    """A form part named `name` (None: a part without headers)."""
    return (f'Content-Disposition: form-data; name="{name}"\r\n' if name else "").encode() + b"\r\n" + content


def form(*parts: bytes, boundary: str = B, padding: bytes = b"") -> bytes:
    delimiter = b"--" + boundary.encode()
    return b"".join(delimiter + padding + b"\r\n" + p + b"\r\n" for p in parts) + delimiter + b"--\r\n"


def refused(body: bytes, content_type: str = FORM, code: str = "BadRequest") -> ApiError:
    with pytest.raises(ApiError) as info:
        image_from_body(body, content_type)
    assert (info.value.status, info.value.code) == (400, code), info.value.message
    return info.value


# ---------------------------------------------------------------------------------------------- multipart


@pytest.mark.parametrize(
    "headers",
    [
        'Content-Disposition: form-data; name="imageData"',
        'Content-Disposition: form-data; name="imageData"; filename="a.jpg"\r\nContent-Type: image/jpeg',
        "content-disposition: form-data; filename=a.bin; name=imageData\r\nContent-Type: application/x-what",
        'Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: form-data; name="imageData"',
        "Content-Disposition: form-data; name*=utf-8''imageData",
    ],
)
def test_image_data_as_file_or_field_with_any_content_type(headers: str) -> None:
    body = form(part("other", b"x"), headers.encode() + b"\r\n\r\n" + IMAGE, part("after", b"y"))
    assert image_from_body(body, FORM) == IMAGE


def test_the_first_non_empty_image_data_part_wins() -> None:
    parts = (
        part("imageData", b""),
        part(None, b"headerless"),
        part("imageData", IMAGE),
        part("imageData", b"2"),
    )
    assert image_from_body(form(*parts), FORM) == IMAGE


def test_preamble_padding_quoted_and_longest_boundary() -> None:
    boundary = "a b:c'(+_,-./=?)"
    body = b"preamble\r\n" + form(part("imageData", IMAGE), boundary=boundary, padding=b" \t ")
    assert image_from_body(body, f'multipart/form-data; boundary="{boundary}"') == IMAGE
    longest = form(part("imageData", IMAGE), boundary="x" * 70)
    assert image_from_body(longest, f"multipart/form-data; boundary={'x' * 70}") == IMAGE


@pytest.mark.parametrize(
    "content_type",
    [
        *(
            "multipart/form-data",
            "multipart/form-data; boundary=",
            f"multipart/form-data; boundary={'x' * 71}",
        ),
        *('multipart/form-data; boundary="space "', "multipart/form-data; boundary=caf\u00e9"),
        *("multipart/form-data; boundary=\udcff\udcfe", "multipart/form-data; boundary=notInTheBody"),
    ],
)
def test_missing_invalid_or_absent_boundary(content_type: str) -> None:
    refused(form(part("imageData", IMAGE)), content_type)


def test_every_truncation_is_a_400_never_a_partial_image() -> None:
    body = form(
        b'Content-Disposition: form-data; name="imageData"; filename="a"\r\n\r\n' + IMAGE, part("b", b"c")
    )
    image_end = body.index(b"\r\n--" + B.encode(), len(B)) + 4 + len(B)  # the image part's closing delimiter
    for offset in range(len(body)):
        try:
            got = image_from_body(body[:offset], FORM)
        except ApiError as exc:
            assert exc.status == 400 and offset < image_end, (offset, exc.message)
        else:
            assert got == IMAGE and offset >= image_end, offset


def test_malformed_parts() -> None:
    refused(form(b"Content-Disposition form-data\r\n\r\n" + IMAGE))  # a header line without a colon
    refused(form(b": no name\r\n\r\n" + IMAGE))
    refused(form(b'Content-Disposition: form-data; name="imageData"\r\n' + IMAGE))  # no blank line
    long_header = b"X-Pad: " + b"a" * MAX_PART_HEADER_BYTES + b"\r\n"
    assert "longer than 8192" in refused(form(long_header + part("imageData", IMAGE))).message
    refused(f"--{B}\r\n--{B}--\r\n".encode())  # an empty part: not even a blank line
    refused(f"--{B}junk\r\n".encode() + part("imageData", IMAGE) + f"\r\n--{B}--".encode())


def test_forms_without_the_field() -> None:
    refused(form(part("other", b"x"), part(None, IMAGE)), code=NOT_PROVIDED)
    refused(form(part("imageData", b"")), code=NOT_PROVIDED)
    refused(f"--{B}--\r\n".encode(), code=NOT_PROVIDED)
    refused(b"junk" + form(part("imageData", IMAGE)), code=NOT_PROVIDED)  # not at a line start: preamble


def test_part_count_limit() -> None:
    filler = [part("x", b"1")] * (MAX_PARTS - 1)
    assert image_from_body(form(*filler, part("imageData", IMAGE)), FORM) == IMAGE  # the 64th part
    assert "more than 64 parts" in refused(form(*filler, part("x", b"1"), part("imageData", IMAGE))).message


def test_exactly_max_parts_without_the_field_is_not_provided() -> None:
    # 64 parts are within the limit: the answer should say the field is missing, not "more than 64 parts".
    refused(form(*[part("x", b"1")] * MAX_PARTS), code=NOT_PROVIDED)


def test_rfc2231_boundary_parameter() -> None:
    # RFC 2231 is decoded for the part's name*=, but boundary*= reaches the parser as "('utf-8', '', 'abc')".
    body = form(part("imageData", IMAGE), boundary="abc")
    assert image_from_body(body, "multipart/form-data; boundary*=utf-8''abc") == IMAGE


# ------------------------------------------------------------------------------------ urlencoded, raw, odd


def test_urlencoded_and_raw_bodies() -> None:
    urlencoded = "application/x-www-form-urlencoded"
    assert image_from_body(b"imageData=%FF%D8+x%2B&next=1", urlencoded) == b"\xff\xd8 x+"
    refused(b"imageData=&next=1", urlencoded, code=NOT_PROVIDED)
    assert image_from_body(IMAGE, "image/jpeg") == image_from_body(IMAGE, "") == IMAGE
    refused(b"", "application/octet-stream", code=NOT_PROVIDED)
    refused(b"", FORM)


@pytest.mark.parametrize("content_type", ODD_CONTENT_TYPES)
def test_odd_content_types_give_the_body_or_a_400(content_type: str) -> None:
    body = form(part("imageData", IMAGE))
    try:
        assert image_from_body(body, content_type) in (IMAGE, body)
    except ApiError as exc:
        assert exc.status == 400


def test_parse_json() -> None:
    assert parse_json(b'{"url": "u", "n": [1, 2.5, null]}') == {"url": "u", "n": [1, 2.5, None]}
    assert math.isnan(parse_json(b"NaN"))  # Python's json takes it; callers check the types they need


@pytest.mark.parametrize(
    ("raw", "reason"), [(b"[" * 100_000, "nested"), (b"1" * 100_000, "not valid"), (b'"\xff"', "not UTF-8")]
)
def test_parse_json_failures_are_value_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_json(raw)


# ------------------------------------------------------------------------------ reading the body (a server)


@dataclass
class Server:
    limits: BodyLimits
    budget: BodyBudget
    port: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held_after: list[int] = field(default_factory=list)  # the budget's bytes after each request

    async def handle(self, request: web.Request) -> web.Response:
        try:
            async with received_body(request, self.limits, self.budget) as body:
                await self.release.wait()
                return web.Response(text=str(len(body)))
        except ApiError as exc:
            return exc.response()
        finally:
            self.held_after.append(self.budget.held)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server(BodyLimits(max_bytes=1000, timeout_s=5.0, idle_timeout_s=5.0), BodyBudget(10_000))
    srv.release.set()
    app = web.Application(handler_args={"auto_decompress": False})  # as create_app: body.py decodes
    app.router.add_post("/", srv.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    srv.port = runner.addresses[0][1]
    yield srv
    await runner.cleanup()


Answer = tuple[int, dict[str, str], bytes]


async def post(port: int, headers: dict[str, str], chunks: Iterable[bytes], pause: float = 0.0) -> Answer:
    """A raw HTTP/1.1 POST whose body is sent chunk by chunk (then the client stalls); returns the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "POST / HTTP/1.1\r\nHost: t\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    async def send() -> None:
        writer.write(head.encode() + b"\r\n")
        for chunk in chunks:
            await asyncio.sleep(pause)
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(5):
            status = int((await reader.readline()).split()[1])
            answer: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                answer[key.strip().lower()] = value.strip()
            return status, answer, await reader.readexactly(int(answer["content-length"]))
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


def chunked(*sizes: int) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (n, b"z" * n) for n in sizes] + [b"0\r\n\r\n"]


async def test_a_body_within_bounds(server: Server) -> None:
    assert (await post(server.port, {"Content-Length": "1000"}, [b"a" * 600, b"b" * 400]))[2] == b"1000"
    assert (await post(server.port, {"Transfer-Encoding": "chunked"}, chunked(500, 500)))[2] == b"1000"
    assert server.held_after == [0, 0]


async def test_declared_length_over_the_limit_is_refused_before_reading(server: Server) -> None:
    start = time.monotonic()
    status, _, body = await post(server.port, {"Content-Length": "1001"}, [])  # no byte of the body is sent
    assert status == 413 and b"BadRequestImageSizeBytes" in body
    assert time.monotonic() - start < 2  # not after the 5 s idle timeout


async def test_bodies_over_the_limit_however_sent(server: Server) -> None:
    bomb = gzip.compress(b"\0" * 50_000)  # 100 bytes on the wire, 50 kB decoded
    for headers, chunks in [
        ({"Transfer-Encoding": "chunked"}, chunked(600, 600)),
        ({"Content-Encoding": "gzip", "Content-Length": str(len(bomb))}, [bomb]),
    ]:
        status, _, body = await post(server.port, headers, chunks)
        assert status == 413 and b"BadRequestImageSizeBytes" in body
    assert server.held_after == [0, 0]


async def test_undecodable_gzip_is_a_400(server: Server) -> None:
    junk = b"\x1f\x8b\x08\x00 this is not deflate data at all"
    headers = {"Content-Encoding": "gzip", "Content-Length": str(len(junk))}
    status, _, body = await post(server.port, headers, [junk])
    assert status == 400 and b'"BadRequest"' in body
    assert server.held_after == [0]


async def test_a_stalled_body_times_out(server: Server) -> None:
    server.limits = BodyLimits(max_bytes=1000, timeout_s=5.0, idle_timeout_s=0.2)
    status, headers, body = await post(server.port, {"Content-Length": "100"}, [b"x" * 10])
    assert status == 408 and b"stalled" in body and headers["connection"] == "close"
    assert server.held_after == [0]


async def test_a_trickling_body_hits_the_total_deadline(server: Server) -> None:
    server.limits = BodyLimits(max_bytes=1000, timeout_s=0.5, idle_timeout_s=0.3)
    start = time.monotonic()
    status, _, body = await post(server.port, {"Content-Length": "1000"}, itertools.repeat(b"x"), pause=0.05)
    assert status == 408 and b"took longer than 0.5 s" in body
    assert 0.45 < time.monotonic() - start < 2
    assert server.held_after == [0]


async def test_the_shared_budget(server: Server) -> None:
    server.budget = BodyBudget(150)
    server.release.clear()
    first = asyncio.create_task(post(server.port, {"Content-Length": "100"}, [b"a" * 100]))
    async with asyncio.timeout(5):
        while server.budget.held < 100:  # the first body is in, held until released
            await asyncio.sleep(0.01)
    status, headers, body = await post(server.port, {"Content-Length": "100"}, [b"b" * 100])
    assert status == 503 and b"TooManyRequests" in body and headers["retry-after"] == "1"
    assert server.held_after == [100]  # the refused one gave its bytes back; the first still holds its own
    server.release.set()
    assert (await first)[0] == 200
    assert server.budget.held == 0 and server.held_after == [100, 0]
