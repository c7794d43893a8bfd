"""Odd headers and wrong methods over real TCP: Expect, huge or malformed header lines, bad
Content-Length and Transfer-Encoding framing are 4xx, never 5xx; wrong methods are JSON 405s; no answer
names a server version.

The server and the checks after each burst: tests/hostile_server.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import hostile_server
import pytest
from hostile import http_request
from hostile_server import (
    IMAGE_PATHS,
    URL_CODES,
    Sent,
    Server,
    answer_problems,
    post,
    report,
    send_all,
)

pytestmark = pytest.mark.slow

# One `edge-runtime serve` process (the meter classifier) for the whole file: tests/hostile_server.py.
server = hostile_server.server


def _raw_post(path: str, head: Sequence[bytes], body: bytes) -> bytes:
    """A POST with exactly these header lines (no Content-Length added)."""
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close", *head]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Odd:
    """A request with odd headers and what may answer it."""

    name: str
    head: tuple[bytes, ...]  # header lines after Host and Connection, exactly as sent
    statuses: frozenset[int]
    json_errors: bool = True  # False: the HTTP parser refuses it before any route (4xx, not JSON)
    codes: frozenset[str] | None = None
    body: bytes | None = None  # None: the meter image
    path: str = "/image"


CLIENT_ERROR = frozenset(range(400, 500))
SERVED_OR_CLIENT_ERROR = CLIENT_ERROR | {200}
SERVED_OR_417 = frozenset({200, 417})
EXPECTATION = frozenset({"ExpectationFailed"})


def odd_header_cases(image_length: int) -> list[Odd]:
    cl = b"Content-Length: %d" % image_length
    te = b"Transfer-Encoding: chunked"
    return [
        Odd("Expect 100-continue", (cl, b"Expect: 100-continue"), frozenset({200})),
        Odd("Expect non-UTF-8", (cl, b"Expect: \xff\xfe100-continue"), SERVED_OR_417, codes=EXPECTATION),
        Odd(
            "Expect 100-continue + byte", (cl, b"Expect: 100-continue\xc3"), SERVED_OR_417, codes=EXPECTATION
        ),
        Odd("Expect unknown", (cl, b"Expect: the-unexpected"), SERVED_OR_417, codes=EXPECTATION),
        Odd("Expect empty", (cl, b"Expect: "), SERVED_OR_417, codes=EXPECTATION),
        Odd(
            "Expect non-UTF-8 on /url",
            (b"Content-Length: 2", b"Expect: \xff"),
            frozenset({400, 417}),
            codes=EXPECTATION | URL_CODES,
            body=b"{}",
            path="/url",
        ),
        Odd("huge header 100k", (cl, b"X-Big: " + b"a" * 100_000), CLIENT_ERROR, json_errors=False),
        Odd("header name 20k", (cl, b"X" * 20_000 + b": a"), CLIENT_ERROR, json_errors=False),
        Odd("2000 headers", (cl, *(b"X-H%d: v" % n for n in range(2000))), SERVED_OR_CLIENT_ERROR, False),
        Odd("Content-Length -1", (b"Content-Length: -1",), CLIENT_ERROR, json_errors=False),
        Odd("Content-Length abc", (b"Content-Length: abc",), CLIENT_ERROR, json_errors=False),
        Odd("Content-Length 1.5", (b"Content-Length: 1.5",), CLIENT_ERROR, json_errors=False),
        Odd("Content-Length +10", (b"Content-Length: +10",), CLIENT_ERROR, json_errors=False),
        Odd("Content-Length 0x10", (b"Content-Length: 0x10",), CLIENT_ERROR, json_errors=False),
        Odd("Content-Length 2^70", (b"Content-Length: %d" % 2**70,), CLIENT_ERROR, json_errors=False),
        Odd("two Content-Lengths", (cl, b"Content-Length: 5"), CLIENT_ERROR, json_errors=False),
        # the rest of the body is read as a next request, after Connection: close: the parser's 400
        Odd("Content-Length shorter than body", (b"Content-Length: 10",), CLIENT_ERROR, json_errors=False),
        Odd("Content-Length and chunked", (cl, te), CLIENT_ERROR, json_errors=False),
        Odd("bad chunk size", (te,), CLIENT_ERROR, json_errors=False, body=b"zz\r\nabc\r\n0\r\n\r\n"),
        Odd("huge chunk size", (te,), CLIENT_ERROR, json_errors=False, body=b"f" * 40 + b"\r\nabc\r\n"),
        Odd("unknown transfer coding", (b"Transfer-Encoding: hostile",), CLIENT_ERROR, json_errors=False),
        Odd("NUL in a header", (cl, b"X-A: a\x00b"), CLIENT_ERROR, json_errors=False),
        Odd("header line without colon", (cl, b"no colon here"), CLIENT_ERROR, json_errors=False),
        Odd("space in a header name", (cl, b"X A: b"), CLIENT_ERROR, json_errors=False),
        # A raw body is read whatever its content type (the container's rule): 200 is right for these.
        Odd("Content-Type non-UTF-8", (cl, b"Content-Type: image/\xff\xfe"), SERVED_OR_CLIENT_ERROR),
        Odd("Content-Type ;;;", (cl, b"Content-Type: ;;;"), SERVED_OR_CLIENT_ERROR),
        Odd("Content-Type 7k", (cl, b"Content-Type: image/" + b"j" * 7000), SERVED_OR_CLIENT_ERROR),
        Odd(
            "Content-Type urlencoded",
            (cl, b"Content-Type: application/x-www-form-urlencoded"),
            SERVED_OR_CLIENT_ERROR,
        ),
        Odd("Content-Type multipart/", (cl, b"Content-Type: multipart/"), CLIENT_ERROR),
        Odd("Prediction-Key non-UTF-8", (cl, b"Prediction-Key: \xff\xfe"), frozenset({200})),
    ]


async def test_odd_headers_are_4xx_never_5xx(server: Server) -> None:
    cases = odd_header_cases(len(server.image))
    answers = await send_all(
        server.port,
        [Sent(c.name, _raw_post(c.path, c.head, server.image if c.body is None else c.body)) for c in cases],
    )
    problems = []
    for case, answer in zip(cases, answers, strict=True):
        problems += answer_problems(
            case.name, answer, case.statuses, case.codes, json_errors=case.json_errors
        )
        if answer.status == 200 and not server.same_as_reference(answer):
            problems.append(f"{case.name}: answered differently from the plain request: {answer}")
    report(problems + await server.after_burst("odd headers"))


async def test_wrong_methods_are_json_and_no_answer_names_a_version(server: Server) -> None:
    cases = [
        Sent("GET /image", http_request("GET", "/image")),
        Sent("GET cloud image", http_request("GET", IMAGE_PATHS[-1])),
        Sent("PUT /url", http_request("PUT", "/url", body=b"{}")),
        Sent("DELETE /proj/image", http_request("DELETE", "/proj/image")),
    ]
    others = [
        Sent("banner", http_request("GET", "/")),
        Sent("ready", http_request("GET", "/health/ready")),
        Sent("metrics", http_request("GET", "/metrics")),
        Sent("unknown route", http_request("GET", "/no/such/route")),
        Sent("prediction", post("/image", server.image)),
    ]
    answers = await send_all(server.port, cases + others)
    problems = []
    for case, answer in zip(cases, answers[: len(cases)], strict=True):
        problems += answer_problems(case.name, answer, {405})
    for case, answer in zip(others, answers[len(cases) :], strict=True):
        problems += answer_problems(case.name, answer, {200, 404}, json_errors=False)
    report(problems + await server.after_burst("wrong methods"))
