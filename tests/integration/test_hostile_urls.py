"""Hostile /url requests over real TCP: hostile JSON bodies, hostile URLs and redirects to hostile
URLs are 400 (BadRequestImageUrl), and an allow-listed image answers as /image does.

The server and the checks after each burst: tests/hostile_server.py.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import hostile
import hostile_server
import pytest
from aiohttp import web
from hostile_server import (
    SEED,
    URL_CODES,
    URL_PATHS,
    Sent,
    Server,
    answer_problems,
    post,
    report,
    send_all,
    url_body,
)

pytestmark = pytest.mark.slow

# One `edge-runtime serve` process (the meter classifier) for the whole file: tests/hostile_server.py.
server = hostile_server.server


async def test_hostile_json_on_url_is_400(server: Server) -> None:
    rng = random.Random(SEED + 8)
    bodies = hostile.hostile_json_bodies(rng)
    cases = [
        Sent(name, post(rng.choice(URL_PATHS), body, [("Content-Type", "application/json")]))
        for name, body in bodies.items()
    ]
    answers = await send_all(server.port, cases)
    problems = [
        p
        for case, a in zip(cases, answers, strict=True)
        for p in answer_problems(case.name, a, {400}, URL_CODES)
    ]
    report(problems + await server.after_burst("hostile JSON"))


async def test_hostile_urls_are_400_url(server: Server) -> None:
    rng = random.Random(SEED + 9)
    urls = hostile.hostile_urls()
    cases = [
        Sent(
            f"{name} {url[:80]!r}",
            post(rng.choice(URL_PATHS), url_body(url), [("Content-Type", "application/json")]),
        )
        for name, url in urls.items()
    ]
    answers = await send_all(server.port, cases)
    problems = [
        p
        for case, a in zip(cases, answers, strict=True)
        for p in answer_problems(case.name, a, {400, 413} if "huge" in case.name else {400}, URL_CODES)
    ]
    problems += [
        f"{c.name}: took {a.seconds:.1f} s" for c, a in zip(cases, answers, strict=True) if a.seconds > 5
    ]
    report(problems + await server.after_burst("hostile URLs"))


@contextlib.asynccontextmanager
async def image_host(image: bytes) -> Any:
    """An allow-listed image server on 127.0.0.1: /ok.jpg, /loop, and /to?n=<index of HOSTILE_REDIRECTS>."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=image, content_type="image/jpeg")

    async def redirect(request: web.Request) -> web.Response:
        target = hostile.HOSTILE_REDIRECTS[int(request.query["n"])]
        # the Location header is written as given (aiohttp would refuse some of these as a URL)
        return web.Response(status=302, headers={"Location": target})

    async def loop(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/loop"})

    app = web.Application()
    app.router.add_get("/ok.jpg", ok)
    app.router.add_get("/to", redirect)
    app.router.add_get("/loop", loop)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_redirects_to_hostile_urls_are_400_url(server: Server) -> None:
    async with image_host(server.image) as host:
        cases = [Sent("allow-listed image", post("/url", url_body(f"{host}/ok.jpg")))]
        cases += [
            Sent(f"redirect to {target[:60]!r}", post("/url", url_body(f"{host}/to?n={n}")))
            for n, target in enumerate(hostile.HOSTILE_REDIRECTS)
        ]
        cases.append(Sent("redirect loop", post("/url", url_body(f"{host}/loop"))))
        answers = await send_all(server.port, cases)
    problems = answer_problems(cases[0].name, answers[0], {200})
    if answers[0].status == 200 and not server.same_as_reference(answers[0]):
        problems.append(f"/url answered differently from /image: {answers[0]}")
    problems += [
        p
        for case, a in zip(cases[1:], answers[1:], strict=True)
        for p in answer_problems(case.name, a, {400}, {"BadRequestImageUrl"})
    ]
    report(problems + await server.after_burst("hostile redirects"))
