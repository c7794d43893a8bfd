"""Request bodies, read whole before a request may take an inference slot, and parsed without surprises.

A body is read under three bounds: its size (the whole body however it is sent — chunked, multipart with
extra fields, or compressed, counted after decompression), its time (a total deadline and an idle
timeout, so a stalled or trickling client is cut off), and one shared budget of bytes held by all
bodies at once (so many full-size uploads cannot exhaust memory). Only then is the image taken out of
it: a small strict multipart parser (every malformed form is a 400, never an exception escaping) and a
JSON reader that survives deep nesting and huge numbers.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from edge_runtime.api import errors
from edge_runtime.settings import ServerSettings

IMAGE_FIELD = b"imageData"
MAX_PART_HEADER_BYTES = 8192
MAX_PARTS = 64
# RFC 2046 allows 70 characters of a small set; clients in the field send more (Android's "*****",
# "Boundary_#123"), so any printable ASCII up to 200 characters, not ending in a space (as werkzeug).
_BOUNDARY = re.compile(r"^[ -~]{0,199}[!-~]$")
MAX_DISPOSITION_CHARS = 1024  # parsing it is Python work on the event loop: keep it small


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int
    timeout_s: float
    idle_timeout_s: float

    @classmethod
    def of(cls, server: ServerSettings) -> BodyLimits:
        return cls(server.max_body_bytes, server.body_timeout_s, server.body_idle_timeout_s)


class BodyBudget:
    """Bytes held by request bodies at once, across all clients. Touched only on the event loop."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.max_bytes:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class _Decoder:
    """Undoes the body's Content-Encoding as it arrives, never making more than the limit allows (a gzip
    bomb stops at the limit). Done here, not by aiohttp, so that every failure is our JSON answer."""

    def __init__(self, header: str) -> None:
        codings = [c.strip().lower() for c in header.split(",") if c.strip().lower() not in ("", "identity")]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise errors.unsupported_encoding(
                f"Content-Encoding {header[:64]!r} is not supported: send gzip, deflate or identity"
            )
        self.coding = codings[0] if codings else None
        self._z: Any = None
        self._head = b""

    def feed(self, data: bytes, room: int) -> bytes:
        """Decoded bytes of `data`; more than `room` of them means the body is over the limit."""
        if self.coding is None:
            return data
        if self._z is None:
            self._head += data
            if len(self._head) < 2:  # the framing is told apart by the first two bytes
                return b""
            data, self._head = self._head, b""
            self._z = zlib.decompressobj(self._wbits(data))
        if self._z.eof:
            raise errors.bad_request(f"data after the end of the {self.coding} body")
        try:
            out = bytes(self._z.decompress(data, room + 1))
        except zlib.error as exc:
            raise errors.bad_request(f"the body is not valid {self.coding} data: {exc}") from exc
        if self._z.eof and self._z.unused_data:  # another gzip member, or junk: neither is an image's
            raise errors.bad_request(f"data after the end of the {self.coding} body")
        return out

    def finish(self) -> None:
        if self.coding is not None and (self._z is None or not self._z.eof):
            raise errors.bad_request(f"the {self.coding} body is truncated")

    def _wbits(self, first: bytes) -> int:
        if self.coding != "deflate":
            return 16 + zlib.MAX_WBITS  # gzip framing
        # "deflate" is zlib-wrapped by the standard, raw in some clients: tell them apart by the header.
        zlib_header = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


@asynccontextmanager
async def received_body(request: web.Request, limits: BodyLimits, budget: BodyBudget) -> AsyncIterator[bytes]:
    """The whole body, decoded, held against `budget` until the block ends (the request is answered).
    The application must leave decoding to us: `handler_args={"auto_decompress": False}`."""
    declared = request.content_length
    if declared is not None and declared > limits.max_bytes:
        raise errors.image_too_big(f"the body is {declared} bytes, more than {limits.max_bytes}")
    decoder = _Decoder(request.headers.get("Content-Encoding", ""))
    held = 0
    try:
        chunks: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.timeout_s
        received = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise errors.body_timeout(f"the body took longer than {limits.timeout_s:g} s")
            try:
                async with asyncio.timeout(min(limits.idle_timeout_s, remaining)):
                    raw = await request.content.readany()
            except TimeoutError as exc:
                raise errors.body_timeout(
                    f"the body stalled: nothing arrived for {limits.idle_timeout_s:g} s"
                    if remaining > limits.idle_timeout_s
                    else f"the body took longer than {limits.timeout_s:g} s"
                ) from exc
            except (RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
                # A broken chunked encoding, or the client gone mid-body (nobody will read this answer).
                raise errors.bad_request(f"the body could not be read: {_reason(exc)}") from exc
            if not raw:
                decoder.finish()
                break
            received += len(raw)
            chunk = decoder.feed(raw, limits.max_bytes - held)
            if received > limits.max_bytes or held + len(chunk) > limits.max_bytes:
                raise errors.image_too_big(f"the body is more than {limits.max_bytes} bytes")
            if not budget.take(len(chunk)):
                raise errors.busy(retry_after_s=1, what="request bodies held in memory are at their limit")
            held += len(chunk)
            chunks.append(chunk)
        body = b"".join(chunks)
        chunks.clear()  # one copy held while the request runs, the one the budget counts
        yield body
    finally:
        budget.give(held)


async def expect_continue(request: web.Request) -> None:
    """`Expect: 100-continue` gets its interim answer; any other expectation is refused (417, JSON) by
    _observe, so that answer is counted like every other (aiohttp's own handler fails on non-ASCII)."""
    if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


def _reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())


def image_from_body(body: bytes, content_type_header: str) -> bytes:
    """The container's order: multipart file or field `imageData`, a urlencoded `imageData`, the raw body."""
    mime, params = _content_type(content_type_header)
    if mime.startswith("multipart/"):
        return _multipart_image(body, params.get("boundary"))
    if mime == "application/x-www-form-urlencoded" and body.startswith(IMAGE_FIELD + b"="):
        body = unquote_to_bytes(body[len(IMAGE_FIELD) + 1 :].split(b"&")[0].replace(b"+", b" "))
    if not body:
        raise errors.no_image("no image in the request: send it as the body or as multipart field imageData")
    return body


def _content_type(header: str) -> tuple[str, dict[str, str]]:
    message = Message()
    try:
        message["content-type"] = header
        params = {str(k).lower(): collapse_rfc2231_value(v) for k, v in message.get_params(failobj=[])[1:]}
        return message.get_content_type(), params
    except (ValueError, TypeError, IndexError) as exc:  # the email parser's failures on odd bytes
        raise errors.bad_request("the Content-Type header cannot be parsed") from exc


def _multipart_image(body: bytes, boundary: str | None) -> bytes:
    """The raw bytes of the first non-empty `imageData` part (file or plain field, any content type)."""
    if not boundary or not _BOUNDARY.match(boundary):
        raise errors.bad_request("the multipart body has no valid boundary (1-200 printable characters)")
    delimiter = b"--" + boundary.encode("latin-1")
    start = 0 if body.startswith(delimiter) else body.find(b"\r\n" + delimiter)
    if start < 0:
        raise errors.bad_request("the multipart body does not contain its boundary")
    position = body.index(delimiter, start) + len(delimiter)
    for count in range(MAX_PARTS + 1):
        if body.startswith(b"--", position):
            raise errors.no_image("the multipart form has no imageData field")
        if count == MAX_PARTS:
            break
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise errors.bad_request("the multipart body is truncated or malformed after a boundary")
        next_delimiter = body.find(b"\r\n" + delimiter, line_end)
        if next_delimiter < 0:
            raise errors.bad_request("the multipart body is truncated: a part has no closing boundary")
        name, content = _part(body[line_end + 2 : next_delimiter])
        if name == IMAGE_FIELD and content:
            return content
        position = next_delimiter + 2 + len(delimiter)
    raise errors.bad_request(f"the multipart form has more than {MAX_PARTS} parts")


def _part(raw: bytes) -> tuple[bytes | None, bytes]:
    """(form field name, content) of one part."""
    header_end = raw.find(b"\r\n\r\n")
    if raw.startswith(b"\r\n"):
        header_block, content = b"", raw[2:]
    elif header_end < 0:
        raise errors.bad_request("a multipart part has no blank line after its headers")
    else:
        header_block, content = raw[:header_end], raw[header_end + 4 :]
    if len(header_block) > MAX_PART_HEADER_BYTES:
        raise errors.bad_request(f"a multipart part's headers are longer than {MAX_PART_HEADER_BYTES} bytes")
    name = None
    for line in header_block.split(b"\r\n") if header_block else []:
        key, colon, value = line.partition(b":")
        if not colon or not key.strip():
            raise errors.bad_request("a multipart part has a header line without a name and colon")
        field = key.strip().lower()
        if field == b"content-disposition":
            name = _disposition_name(value.decode("latin-1"))
        elif field == b"content-type" and value.strip().lower().startswith(b"multipart/"):
            # RFC 7578 4.3: nested multipart is not used in forms; what would its image be?
            raise errors.bad_request("a multipart part is itself multipart: send the image as the part")
    return name, content


def _disposition_name(value: str) -> bytes | None:
    if len(value) > MAX_DISPOSITION_CHARS:
        raise errors.bad_request(f"a part's Content-Disposition is longer than {MAX_DISPOSITION_CHARS}")
    message = Message()
    try:
        message["content-disposition"] = value
        name = message.get_param("name", header="content-disposition")
    except (ValueError, TypeError, IndexError) as exc:  # RFC 2231 continuations the parser cannot sort
        raise errors.bad_request("a part's Content-Disposition cannot be parsed") from exc
    if isinstance(name, tuple):  # RFC 2231 form: (charset, language, value)
        name = name[2]
    return name.encode("latin-1", "replace") if isinstance(name, str) else None


def parse_json(raw: bytes) -> Any:
    """JSON from a client: any failure (syntax, encoding, nesting, a number too long) is a ValueError."""
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError as exc:
        raise ValueError("the JSON is nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"the JSON is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except ValueError as exc:  # JSONDecodeError, and the int-digits limit of int()
        raise ValueError(f"the body is not valid JSON: {exc}") from exc
