"""Hostile request bodies over real TCP: malformed multipart, content encodings, and bodies over
max_body_bytes however they are sent (Content-Length, declared only, chunked, multipart, /url).

The server and the checks after each burst: tests/hostile_server.py.
"""

from __future__ import annotations

import random

import hostile
import hostile_server
import pytest
from hostile_server import (
    IMAGE_PATHS,
    MAX_BODY_BYTES,
    SEED,
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


async def test_malformed_multipart_is_400(server: Server) -> None:
    rng = random.Random(SEED + 7)
    bodies = hostile.malformed_multipart(server.image, rng, MAX_BODY_BYTES)
    cases = [Sent(b.name, post(rng.choice(IMAGE_PATHS), b.body, b.headers)) for b in bodies]
    answers = await send_all(server.port, cases)
    problems = []
    for body, case, answer in zip(bodies, cases, answers, strict=True):
        if body.extra.get("too_large"):
            problems += answer_problems(case.name, answer, {413}, {"BadRequestImageSizeBytes"})
        else:
            problems += answer_problems(case.name, answer, {400})
            if answer.code is not None and not answer.code.startswith("BadRequest"):
                problems.append(f"{case.name}: code {answer.code!r} is not BadRequest*")
    report(problems + await server.after_burst("malformed multipart"))


async def test_content_encodings(server: Server) -> None:
    bodies = hostile.encoded_bodies(server.image, MAX_BODY_BYTES)
    cases = [Sent(b.name, post("/image", b.body, b.headers)) for b in bodies]
    answers = await send_all(server.port, cases)
    problems = []
    for body, case, answer in zip(bodies, cases, answers, strict=True):
        expect = body.extra["expect"]
        if expect == "ok":
            problems += answer_problems(case.name, answer, {200})
            if answer.status == 200 and not server.same_as_reference(answer):
                problems.append(f"{case.name}: decoded body predicted differently: {answer}")
        elif expect == "unsupported":
            problems += answer_problems(case.name, answer, {415}, {"UnsupportedMediaType"})
        elif expect == "bad":
            problems += answer_problems(case.name, answer, {400})
            if answer.code is not None and not answer.code.startswith("BadRequest"):
                problems.append(f"{case.name}: code {answer.code!r} is not BadRequest*")
        else:
            problems += answer_problems(case.name, answer, {413}, {"BadRequestImageSizeBytes"})
    report(problems + await server.after_burst("content encodings"))


async def test_body_over_max_body_bytes_is_413_however_sent(server: Server) -> None:
    over = server.image + bytes(MAX_BODY_BYTES + 1 - len(server.image))
    form = hostile.multipart_body([hostile.image_part(over)], b"xyz")
    cases = [
        Sent("content-length", post("/image", over)),
        Sent("declared only", post("/image", b"", [("Content-Length", str(50 * MAX_BODY_BYTES))])),
        Sent("chunked", post("/image", hostile.chunked(over), [("Transfer-Encoding", "chunked")])),
        Sent("multipart", post("/image", form, [("Content-Type", "multipart/form-data; boundary=xyz")])),
        Sent("url body", post("/url", b'{"url": "' + b"a" * MAX_BODY_BYTES + b'"}')),
    ]
    answers = await send_all(server.port, cases)
    problems = [
        p
        for case, a in zip(cases, answers, strict=True)
        for p in answer_problems(case.name, a, {413}, {"BadRequestImageSizeBytes"})
    ]
    report(problems + await server.after_burst("bodies over max_body_bytes"))
