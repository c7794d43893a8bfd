"""Hostile input over real TCP: the server survives, refuses cleanly, and keeps serving everyone else.

One `edge-runtime serve` subprocess (the meter classifier) serves the whole module; the tests are
black-box: raw HTTP/1.1 bytes over asyncio sockets (aiohttp's client would normalise headers and
framing), the server's answers, GET /metrics, its log file and its /proc/<pid>/status.

After each burst of a class of inputs (tests/hostile.py generates them from SEED) the suite checks:
the process is alive; no 5xx other than the documented ones; every 4xx on a prediction route is JSON
with a "code"; VmRSS and VmHWM (peak) stay under the RSS after warm-up + RSS_BOUND; no Traceback in the
log; and the meter test image right after the burst answers exactly as before (every field but
`created`). Slow clients are checked not to deny service to others.

The server runs with short body timeouts (1 s idle, 3 s total) and max_inflight 4 so the slow-client
tests are quick; bursts are sent at most MAX_INFLIGHT at a time (503 TooManyRequests is retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hostile
import pytest
from aiohttp import web
from hostile import Header, http_request
from PIL import Image
from processes import free_port, wait_ready

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = 20261124
METER_IMAGE = "test-dog1.jpg"

MiB = 1024 * 1024
# Memory: the server's VmRSS, and its peak VmHWM, must stay under (VmRSS after warm-up + RSS_BOUND).
# Legitimate work here is small images and at most MAX_INFLIGHT 4 MiB bodies at once (~20 MiB); a
# decoded bomb, a thin image's resize or a progressive JPEG's coefficient buffer would take
# hundreds of MiB to GiBs.
RSS_BOUND = 300 * MiB
# Defence in depth for the machine running the tests: a server that does try to resize a thin image
# to billions of pixels fails with MemoryError instead of taking the host's memory.
SERVER_ADDRESS_SPACE = 8 * 1024 * MiB  # its VmSize is ~0.7 GiB

# A burst of 1,000 malformed requests (10 kinds) may add at most this many lines to the server's
# output: client mistakes are logged at most once per kind per interval.
LOG_LINES_BOUND = 50

MAX_BODY_BYTES = 4 * MiB  # server.max_body_bytes default (the container's)
MAX_JPEG_SCANS = 100  # server.max_jpeg_scans default
MAX_INFLIGHT = 4
BODY_IDLE_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 3.0
# Bombs, thin images and the scan bomb must be refused from their headers, before any decoding: each
# is answered within QUICK_S (the refusal itself takes milliseconds; decoding them takes 0.5 s to
# minutes) and the server's peak RSS while answering it grows by at most EARLY_BOUND.
QUICK_S = 0.5
EARLY_BOUND = 64 * MiB

# The only 5xx the contract allows.
ALLOWED_5XX = {(503, "TooManyRequests"), (503, "ModelNotReady"), (500, "ModelInferenceFailed")}
IMAGE_CODES = {"BadRequestImageFormat", "BadRequestImageDimensions"}
URL_CODES = {"BadRequestImageUrl", "BadRequest"}
PREDICTION_KEYS = {"created", "id", "iteration", "predictions", "project"}
VERSION_IN_SERVER = re.compile(r"(aiohttp|python)/\d", re.IGNORECASE)

IMAGE_PATHS = (
    "/image",
    "/proj/image",
    "/proj/image/nostore",
    "/proj/classify/iterations/it1/image",
    "/proj/detect/iterations/it1/image/nostore",
    "/customvision/v3.0/Prediction/abc/classify/iterations/it1/image",
    "/customvision/v3.1/Prediction/abc/detect/iterations/it1/image/nostore",
)
URL_PATHS = tuple(path.removesuffix("/nostore").removesuffix("image") + "url" for path in IMAGE_PATHS)


# --------------------------------------------------------------------------------------------------
# Raw HTTP


@dataclass
class Answer:
    status: int | None  # None: the connection closed (or timed out) without an answer
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; repeated ones joined by ", "
    body: bytes = b""
    seconds: float = 0.0
    error: str = ""  # why status is None
    attempts: int = 1  # send_all: answers received for this case (503 TooManyRequests is retried)

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def code(self) -> str | None:
        payload = self.json
        code = payload.get("code") if isinstance(payload, dict) else None
        return code if isinstance(code, str) else None

    def __str__(self) -> str:
        if self.status is None:
            return f"no answer ({self.error}) after {self.seconds:.2f} s"
        return f"{self.status} {self.body[:200]!r} in {self.seconds:.2f} s"


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        if ":" in line:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(status_line.split()[1]), headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            out += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")  # no trailers are expected
        return out
    return await reader.read()


async def exchange(
    port: int,
    request: bytes,
    *,
    timeout: float = 20.0,
    then: Sequence[tuple[float, bytes]] = (),
    half_close: bool = False,
) -> Answer:
    """Send `request` (then each `(delay, bytes)` of `then`), read one final answer (1xx skipped).

    The writer runs beside the reader, so an early answer (413 before the whole body was sent) is read.
    """
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    except OSError as exc:
        return Answer(None, error=f"connect: {exc!r}")

    async def write() -> None:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write(request)
            await writer.drain()
            for delay, data in then:
                await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
            if half_close and writer.can_write_eof():
                writer.write_eof()

    async def read() -> Answer:
        status, headers = await _read_head(reader)
        while 100 <= status < 200:
            status, headers = await _read_head(reader)
        body = await _read_body(reader, headers)
        return Answer(status, headers, body)

    sender = asyncio.create_task(write())
    try:
        answer = await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        answer = Answer(None, error="timeout")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
        answer = Answer(None, error=repr(exc)[:200])
    finally:
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    answer.seconds = time.monotonic() - start
    return answer


@dataclass(frozen=True)
class Sent:
    name: str
    request: bytes


async def send_all(port: int, cases: Sequence[Sent], concurrency: int = MAX_INFLIGHT) -> list[Answer]:
    """Every case, `concurrency` at a time; a 503 TooManyRequests is retried (it is not the answer under
    test: admission is not what these bursts are about)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(case: Sent) -> Answer:
        async with gate:
            for attempt in range(1, 21):
                answer = await exchange(port, case.request)
                answer.attempts = attempt
                if not (answer.status == 503 and answer.code == "TooManyRequests"):
                    break
                await asyncio.sleep(0.05)
            return answer

    return list(await asyncio.gather(*(one(case) for case in cases)))


def post(path: str, body: bytes, headers: Sequence[Header] = (), **kwargs: Any) -> bytes:
    return http_request("POST", path, headers, body, **kwargs)


def url_body(url: str) -> bytes:
    return json.dumps({"url": url}).encode()


# --------------------------------------------------------------------------------------------------
# Checks


def answer_problems(
    name: str,
    answer: Answer,
    statuses: set[int] | range,
    codes: set[str] | None = None,
    *,
    json_errors: bool = True,
    server_header: bool = True,
) -> list[str]:
    """What is wrong with `answer` (empty: nothing). `statuses` are the acceptable ones; `codes` the
    acceptable JSON codes of a 4xx; `json_errors=False` for requests the HTTP parser must refuse before
    any route sees them (their 4xx comes from the HTTP layer, so only "4xx, not 5xx" is asked);
    `server_header=False` skips the check that the Server header names no version."""
    if answer.status is None:
        return [f"{name}: {answer}"]
    problems = []
    server = answer.headers.get("server", "")
    if server_header and VERSION_IN_SERVER.search(server):
        problems.append(f"{name}: Server header {server!r} carries a version")
    if answer.status >= 500 and (answer.status, answer.code) not in ALLOWED_5XX:
        problems.append(f"{name}: undocumented 5xx: {answer}")
    elif answer.status not in statuses:
        problems.append(f"{name}: status {answer} not in {sorted(statuses)}")
    if 400 <= answer.status < 500 and json_errors:
        if not answer.headers.get("content-type", "").startswith("application/json") or answer.code is None:
            problems.append(f"{name}: 4xx without a JSON code: {answer}")
        elif codes is not None and answer.code not in codes:
            problems.append(f"{name}: code {answer.code!r} not in {sorted(codes)}: {answer}")
    return problems


def container_problems(name: str, answer: Answer) -> list[str]:
    """A 200 must be the container's answer shape."""
    payload = answer.json
    if not isinstance(payload, dict) or set(payload) != PREDICTION_KEYS:
        return [f"{name}: 200 that is not a prediction: {answer}"]
    return []


def status_file(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


# --------------------------------------------------------------------------------------------------
# The server


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, image: bytes) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.image = image  # the meter test image
        self.reference: dict[str, Any] = {}
        self.rss_after_warmup = 0
        self._log_checked = 0  # characters of the log already searched for tracebacks
        self._peak_reported = 0

    def reset_peak(self) -> None:
        """Reset the server's VmHWM (Linux: "5" > /proc/<pid>/clear_refs)."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            self._peak_reported = 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def same_as_reference(self, answer: Answer) -> bool:
        payload = answer.json
        return (
            isinstance(payload, dict)
            and {k: v for k, v in payload.items() if k != "created"} == self.reference
        )

    async def predict_reference(self) -> tuple[Answer, list[str]]:
        answer = await exchange(self.port, post("/image", self.image))
        # (the Server header is judged on the bursts' answers, not once more here)
        problems = answer_problems("reference image", answer, {200}, server_header=False)
        if answer.status == 200:
            body = answer.json
            if not isinstance(body, dict):
                problems.append(f"reference image: not JSON: {answer}")
            else:
                body.pop("created", None)
                if self.reference and body != self.reference:
                    problems.append(f"reference image answers differently: {body} != {self.reference}")
        return answer, problems

    async def after_burst(self, what: str) -> list[str]:
        """Alive, memory bounded, no traceback, and the reference image answers exactly as before."""
        if self.proc.poll() is not None:
            return [f"after {what}: the server exited with {self.proc.returncode}: {self.log_text()[-3000:]}"]
        problems = []
        memory = status_file(self.proc.pid)
        limit = self.rss_after_warmup + RSS_BOUND
        for key in ("VmRSS", "VmHWM"):
            # VmHWM is the peak since the last reset: each burst is judged on its own peak (where the
            # reset is refused, a peak is only reported by the burst that raised it).
            if memory[key] > limit and (key == "VmRSS" or memory[key] > self._peak_reported):
                problems.append(
                    f"after {what}: {key} {memory[key] / MiB:.0f} MiB > warm-up RSS "
                    f"{self.rss_after_warmup / MiB:.0f} MiB + {RSS_BOUND / MiB:.0f} MiB"
                )
        self._peak_reported = max(self._peak_reported, memory["VmHWM"])
        self.reset_peak()
        text = self.log_text()
        new, self._log_checked = text[self._log_checked :], len(text)
        if "Traceback" in new:
            problems.append(
                f"after {what}: Traceback in the server log:\n{new[new.index('Traceback') - 300 :][:3000]}"
            )
        problems += [f"after {what}: {p}" for p in (await self.predict_reference())[1]]
        return problems

    async def metric_total(self) -> float:
        """Sum of edge_runtime_http_requests_total over every series except /metrics' own."""
        answer = await exchange(self.port, http_request("GET", "/metrics"))
        assert answer.status == 200, answer
        total = 0.0
        for line in answer.body.decode().splitlines():
            if line.startswith("edge_runtime_http_requests_total{") and "metrics" not in line.split("}")[0]:
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def server(meter_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
    env |= {
        "TMPDIR": str(tmp),
        "EDGE_RUNTIME_MODEL__PATH": str(meter_dir),
        "EDGE_RUNTIME_MODEL__DEVICE": "cpu",
        "EDGE_RUNTIME_EVENTS__JSONL_PATH": str(tmp / "events.jsonl"),
        "EDGE_RUNTIME_EVENTS__SNAPSHOT_DIR": str(tmp / "snapshots"),
        "EDGE_RUNTIME_EVENTS__OUTBOX_PATH": str(tmp / "outbox.sqlite3"),
        "EDGE_RUNTIME_SERVER__INFERENCE_WORKERS": "2",
        "EDGE_RUNTIME_SERVER__MAX_INFLIGHT": str(MAX_INFLIGHT),
        "EDGE_RUNTIME_SERVER__BODY_IDLE_TIMEOUT_S": str(BODY_IDLE_TIMEOUT_S),
        "EDGE_RUNTIME_SERVER__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "EDGE_RUNTIME_URL_FETCH__ALLOW": "127.0.0.1",
        "EDGE_RUNTIME_URL_FETCH__CONNECT_TIMEOUT_S": "2",
        "EDGE_RUNTIME_URL_FETCH__READ_TIMEOUT_S": "2",
    }
    log = tmp / "serve.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (SERVER_ADDRESS_SPACE, SERVER_ADDRESS_SPACE))
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        srv = Server(proc, port, log, (meter_dir / METER_IMAGE).read_bytes())

        async def warm_up() -> None:
            for _ in range(5):
                answer, problems = await srv.predict_reference()
                assert not problems, problems
            srv.reference = {k: v for k, v in answer.json.items() if k != "created"}

        asyncio.run(warm_up())
        srv.rss_after_warmup = status_file(proc.pid)["VmRSS"]
        srv.reset_peak()
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def rng_images() -> dict[str, bytes]:
    return hostile.valid_images(random.Random(SEED))


def _report(problems: list[str]) -> None:
    """Fail with every problem; a Server header naming a version is listed once, not once per answer."""
    server = [p for p in problems if "Server header" in p]
    shown = [p for p in problems if "Server header" not in p]
    if server:
        shown.append(f"{server[0]} (and {len(server) - 1} more answers)" if len(server) > 1 else server[0])
    assert not shown, f"{len(problems)} problem(s):\n" + "\n".join(shown[:60])


# --------------------------------------------------------------------------------------------------
# Images


async def test_reference_answer_is_the_containers(server: Server, meter_jpeg_expected: list[float]) -> None:
    probabilities = [p["probability"] for p in server.reference["predictions"]]
    assert probabilities == pytest.approx(meter_jpeg_expected, abs=1e-4)
    _report(await server.after_burst("nothing"))


async def test_truncated_images_are_400(server: Server, rng_images: dict[str, bytes]) -> None:
    rng = random.Random(SEED + 1)
    sources = {**rng_images, "meter-JPEG": server.image}
    cases = [
        Sent(f"{fmt} cut at {len(cut)} of {len(data)}", post(rng.choice(IMAGE_PATHS), cut))
        for fmt, data in sources.items()
        for cut in hostile.truncations(data, rng, 10)
    ]
    assert len(cases) >= 80  # 10 cuts of each valid image
    answers = await send_all(server.port, cases)
    problems = [
        p
        for case, a in zip(cases, answers, strict=True)
        for p in answer_problems(case.name, a, {400}, IMAGE_CODES)
    ]
    _report(problems + await server.after_burst("truncated images"))


async def test_bit_flipped_images_are_predicted_or_400(server: Server, rng_images: dict[str, bytes]) -> None:
    rng = random.Random(SEED + 2)
    sources = {**rng_images, "meter-JPEG": server.image}
    cases = [
        Sent(f"{fmt} flip #{n}", post(rng.choice(IMAGE_PATHS), data))
        for fmt, source in sources.items()
        for n, data in enumerate(hostile.bit_flips(source, rng, 12))
    ]
    answers = await send_all(server.port, cases)
    problems = []
    for case, answer in zip(cases, answers, strict=True):
        problems += answer_problems(case.name, answer, {200, 400}, IMAGE_CODES)
        if answer.status == 200:
            problems += container_problems(case.name, answer)
    _report(problems + await server.after_burst("bit flips"))


async def test_bodies_that_are_not_images_are_400_format(server: Server) -> None:
    rng = random.Random(SEED + 3)
    cases = [
        Sent(name, post(rng.choice(IMAGE_PATHS), data)) for name, data in hostile.not_images(rng).items()
    ]
    answers = await send_all(server.port, cases)
    problems = [
        p
        for case, a in zip(cases, answers, strict=True)
        for p in answer_problems(case.name, a, {400}, {"BadRequestImageFormat"})
    ]
    _report(problems + await server.after_burst("not images"))


async def test_formats_outside_image_formats_are_400_format(server: Server) -> None:
    rng = random.Random(SEED + 4)
    cases = [
        Sent(f"{fmt} file", post(rng.choice(IMAGE_PATHS), data))
        for fmt, data in hostile.foreign_formats(rng).items()
    ]
    answers = await send_all(server.port, cases)
    problems = [
        p
        for case, a in zip(cases, answers, strict=True)
        for p in answer_problems(case.name, a, {400}, {"BadRequestImageFormat"})
    ]
    _report(problems + await server.after_burst("foreign formats"))


async def refused_early(server: Server, name: str, request: bytes) -> list[str]:
    """Send one input that must be refused from its headers: 400 BadRequestImageDimensions within
    QUICK_S, the server's peak RSS during it at most EARLY_BOUND above its RSS before it."""
    server.reset_peak()
    before = status_file(server.proc.pid)["VmRSS"]
    answer = await exchange(server.port, request, timeout=60)
    problems = answer_problems(name, answer, {400}, {"BadRequestImageDimensions"})
    if answer.seconds > QUICK_S:
        problems.append(f"{name}: took {answer.seconds:.2f} s (at most {QUICK_S} s)")
    if server.proc.poll() is None:
        peak = status_file(server.proc.pid)["VmHWM"] - before
        if peak > EARLY_BOUND:
            problems.append(
                f"{name}: the server's RSS grew by {peak / MiB:.0f} MiB (at most {EARLY_BOUND / MiB:.0f})"
            )
    return problems


async def test_decompression_bombs_are_400_dimensions_quickly(server: Server) -> None:
    rng = random.Random(SEED + 5)
    bombs = hostile.bombs(rng)
    assert {name.split("-")[0] for name in bombs} == set(hostile.ALLOWED_FORMATS)
    problems = []
    for name, data in bombs.items():  # one at a time: each is timed and its memory measured
        problems += await refused_early(server, f"{name} bomb", post(rng.choice(IMAGE_PATHS), data))
    _report(problems + await server.after_burst("decompression bombs"))


async def test_thin_images_are_400_dimensions_quickly_without_memory_growth(server: Server) -> None:
    rng = random.Random(SEED + 6)
    problems = []
    for width, height in hostile.THIN_SIZES:
        request = post(rng.choice(IMAGE_PATHS), hostile.thin_png(width, height))
        problems += await refused_early(server, f"thin PNG {width}x{height}", request)
        if server.proc.poll() is not None:
            break
    _report(problems + await server.after_burst("thin images"))


async def test_progressive_jpeg_scan_bomb_is_400_dimensions_quickly(server: Server) -> None:
    bomb = hostile.progressive_scan_bomb()  # PIL alone needs > 1 s: tests/unit/test_hostile_generators.py
    assert hostile.count_scans(bomb) > 10_000
    problems = []
    for path in ("/image", IMAGE_PATHS[-1]):
        problems += await refused_early(server, f"scan bomb on {path}", post(path, bomb))
    _report(problems + await server.after_burst("progressive scan bomb"))


async def test_jpeg_scan_limit_is_exact(server: Server) -> None:
    """max_jpeg_scans scans are served; one more is refused."""
    with Image.open(io.BytesIO(server.image)) as image:
        progressive = hostile.encode(image.convert("RGB"), "JPEG", quality=95, progressive=True)
    scans = hostile.count_scans(progressive)
    at_limit = hostile.with_extra_scans(progressive, MAX_JPEG_SCANS - scans)
    over = hostile.with_extra_scans(progressive, MAX_JPEG_SCANS + 1 - scans)
    answers = await send_all(
        server.port, [Sent("at", post("/image", at_limit)), Sent("over", post("/image", over))]
    )
    problems = answer_problems(f"{MAX_JPEG_SCANS} scans", answers[0], {200})
    problems += answer_problems(
        f"{MAX_JPEG_SCANS + 1} scans", answers[1], {400}, {"BadRequestImageDimensions"}
    )
    _report(problems + await server.after_burst("scan limit"))


# --------------------------------------------------------------------------------------------------
# Bodies: multipart, encodings, size however sent


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
    _report(problems + await server.after_burst("malformed multipart"))


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
    _report(problems + await server.after_burst("content encodings"))


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
    _report(problems + await server.after_burst("bodies over max_body_bytes"))


# --------------------------------------------------------------------------------------------------
# Slow clients


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
    _report(problems + await server.after_burst("slow bodies"))


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
    _report(problems + await server.after_burst(f"{slow_clients} slow clients"))


# --------------------------------------------------------------------------------------------------
# /url


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
    _report(problems + await server.after_burst("hostile JSON"))


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
    _report(problems + await server.after_burst("hostile URLs"))


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
    _report(problems + await server.after_burst("hostile redirects"))


# --------------------------------------------------------------------------------------------------
# Headers


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
    _report(problems + await server.after_burst("odd headers"))


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
    _report(problems + await server.after_burst("wrong methods"))


# --------------------------------------------------------------------------------------------------
# Accounting: metrics count every answer, logs stay quiet


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
    _report(problems + await server.after_burst("1000 malformed requests"))


def test_server_log_has_no_traceback(server: Server) -> None:
    """The whole module's log, once more (after_burst checks each burst's part)."""
    assert server.proc.poll() is None, server.log_text()[-3000:]
    text = server.log_text()
    assert "Traceback" not in text, text[text.index("Traceback") - 300 :][:3000]
