"""Accounting under hostile input: GET /metrics counts every answer to a burst of 1,000 malformed
requests, the server log stays quiet (client mistakes are not logged line by line), and the log has no
traceback.

The server and the checks after each burst: tests/hostile_server.py.
"""

from __future__ import annotations

import random
import re
from collections import Counter

import hostile
import hostile_server
import pytest
from hostile import http_request
from hostile_server import (
    IMAGE_PATHS,
    SEED,
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

# A burst of 1,000 malformed requests (10 kinds) may add at most this many lines to the server's
# output: client mistakes are logged at most once per kind per interval.
LOG_LINES_BOUND = 50


def _malformed_burst(rng: random.Random, count: int) -> list[Sent]:
    """`count` cheap malformed requests of 10 kinds that reach the routes (each gets a 4xx from the
    application), broken TIFFs among them (refused by format: libtiff would print its errors on stderr)."""
    tiff = hostile.encode(hostile.sample_image(rng), "TIFF", compression="tiff_deflate")
    tiff_cuts = hostile.truncations(tiff, rng, 30)
    kinds = [
        lambda: post(rng.choice(IMAGE_PATHS), rng.randbytes(rng.randrange(1, 300))),
        lambda: post(rng.choice(IMAGE_PATHS), b""),
        lambda: post(
            rng.choice(IMAGE_PATHS), b"--x\r\n", [("Content-Type", "multipart/form-data; boundary=y")]
        ),
        lambda: post(rng.choice(URL_PATHS), b"[" * rng.randrange(1, 3000)),
        lambda: post(rng.choice(URL_PATHS), url_body("ftp://example.com/a.jpg")),
        lambda: post(rng.choice(URL_PATHS), url_body("http://[::1")),
        lambda: http_request("GET", rng.choice(IMAGE_PATHS)),
        lambda: post(rng.choice(IMAGE_PATHS), hostile.MAGIC["PNG"] + rng.randbytes(100)),
        lambda: post(rng.choice(IMAGE_PATHS), rng.choice(tiff_cuts)),
        lambda: post(rng.choice(IMAGE_PATHS), hostile.tiff_corrupt_strip(rng)),
    ]
    return [Sent(f"malformed #{n}", rng.choice(kinds)()) for n in range(count)]


def _most_common_lines(text: str, top: int = 8) -> str:
    shapes = Counter(re.sub(r"\d+", "N", line)[:160] for line in text.splitlines())
    return "\n".join(f"{n:5d} x {line}" for line, n in shapes.most_common(top))


async def test_malformed_burst_is_counted_and_not_logged_line_by_line(server: Server) -> None:
    burst = _malformed_burst(random.Random(SEED + 10), 1000)
    log_before = len(server.log_text())
    counted_before = await server.metric_total()
    answers = await send_all(server.port, burst)
    counted = await server.metric_total() - counted_before
    logged = server.log_text()[log_before:]
    problems = [
        p
        for case, a in zip(burst, answers, strict=True)
        for p in answer_problems(case.name, a, range(400, 500))
    ]
    answered = sum(a.attempts for a in answers)  # a retried 503 is an answer too
    if counted != answered:
        problems.append(
            f"edge_runtime_http_requests_total grew by {counted:.0f}; {answered} answers were sent"
        )
    lines = len(logged.splitlines())
    if lines > LOG_LINES_BOUND:
        problems.append(
            f"{len(burst)} malformed requests wrote {lines} log lines (at most {LOG_LINES_BOUND}); "
            f"the most frequent:\n{_most_common_lines(logged)}"
        )
    report(problems + await server.after_burst("1000 malformed requests"))


def test_server_log_has_no_traceback(server: Server) -> None:
    """The whole module's log, once more (after_burst checks each burst's part)."""
    assert server.proc.poll() is None, server.log_text()[-3000:]
    text = server.log_text()
    assert "Traceback" not in text, text[text.index("Traceback") - 300 :][:3000]
