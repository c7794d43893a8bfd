"""Slow clients over real TCP: stalled, trickled and half-closed bodies get 408 (or a 4xx) at their
timeouts, and slow clients do not deny service to normal requests.

The server (1 s idle and 3 s total body timeouts, max_inflight 4) and the checks after each burst:
tests/hostile_server.py.
"""

from __future__ import annotations

import asyncio

import hostile_server
import pytest
from hostile import http_request
from hostile_server import (
    BODY_IDLE_TIMEOUT_S,
    BODY_TIMEOUT_S,
    MAX_INFLIGHT,
    Server,
    answer_problems,
    exchange,
    post,
    report,
)

pytestmark = pytest.mark.slow

# One `edge-runtime serve` process (the meter classifier) for the whole file: tests/hostile_server.py.
server = hostile_server.server


def _stalled_head(path: str = "/image", length: int = 100_000) -> bytes:
    return http_request("POST", path, [("Content-Length", str(length))]) + b"0123456789"


async def test_slow_bodies_get_408(server: Server) -> None:
    trickle = [(0.3, b"x")] * 30  # never idle for 1 s, but longer than the 3 s body timeout
    stalled, trickled, half_closed = await asyncio.gather(
        exchange(server.port, _stalled_head(), timeout=BODY_IDLE_TIMEOUT_S + 5),
        exchange(server.port, _stalled_head(), then=trickle, timeout=BODY_TIMEOUT_S + 5),
        exchange(server.port, _stalled_head(length=1000), half_close=True, timeout=BODY_IDLE_TIMEOUT_S + 5),
    )
    problems = []
    for name, answer, limit in (
        ("stalled body", stalled, BODY_IDLE_TIMEOUT_S),
        ("trickled body", trickled, BODY_TIMEOUT_S),
    ):
        if answer.status is None and answer.error == "timeout":
            problems.append(f"{name}: still open after {answer.seconds:.1f} s")
        elif answer.status is not None:
            problems += answer_problems(name, answer, {408}, {"RequestTimeout"})
        if answer.seconds > limit + 1.5:
            problems.append(f"{name}: ended after {answer.seconds:.1f} s, limit {limit} s")
        if answer.seconds < limit * 0.8:
            problems.append(f"{name}: ended after {answer.seconds:.1f} s, before its {limit} s timeout")
    # a body cut short by the client (EOF after 10 of 1000 bytes): 400 or closed, never 5xx or a hang
    if half_closed.status is not None:
        problems += answer_problems("half-closed body", half_closed, range(400, 500))
    elif half_closed.error == "timeout":
        problems.append(f"half-closed body: still open after {half_closed.seconds:.1f} s")
    report(problems + await server.after_burst("slow bodies"))


@pytest.mark.parametrize("slow_clients", [MAX_INFLIGHT, 20])
async def test_slow_clients_do_not_deny_service(server: Server, slow_clients: int) -> None:
    """While `slow_clients` bodies trickle in (never idle, not yet over the body timeout), normal
    requests are answered at once: bodies are read before an inference slot is taken."""
    trickle = [(0.4, b"x")] * 6  # ~2.4 s of trickling, inside the 3 s body timeout
    slow = [
        asyncio.create_task(exchange(server.port, _stalled_head(), then=trickle, timeout=BODY_TIMEOUT_S + 5))
        for _ in range(slow_clients)
    ]
    problems = []
    try:
        await asyncio.sleep(0.3)
        for n in range(4):  # during the trickle: t = 0.3 s .. ~2 s
            answer = await exchange(server.port, post("/image", server.image), timeout=5)
            problems += answer_problems(
                f"normal request #{n} beside {slow_clients} slow clients", answer, {200}
            )
            if answer.seconds > 1.0:
                problems.append(
                    f"normal request #{n} took {answer.seconds:.2f} s beside {slow_clients} slow ones"
                )
            elif answer.status == 200 and not server.same_as_reference(answer):
                problems.append(f"normal request #{n} answered differently: {answer}")
            await asyncio.sleep(0.3)
    finally:
        answers = await asyncio.gather(*slow)
    for n, answer in enumerate(answers):
        if answer.status is not None:
            problems += answer_problems(f"slow client #{n}", answer, {408}, {"RequestTimeout"})
        elif answer.error == "timeout":
            problems.append(f"slow client #{n}: still open after {answer.seconds:.1f} s")
    report(problems + await server.after_burst(f"{slow_clients} slow clients"))
