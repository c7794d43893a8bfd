"""The `edge-runtime serve` process under hostile input, and how the hostile-input tests judge it.

The tests in tests/integration/test_hostile_*.py are black-box: raw HTTP/1.1 bytes over asyncio sockets
(aiohttp's client would normalise headers and framing), the server's answers, GET /metrics, its log file
and its /proc/<pid>/status. Each test file takes the module-scoped `server` fixture (`server =
hostile_server.server`): one subprocess (the meter classifier) serves the whole test file.

After each burst of a class of inputs (tests/hostile.py generates them from SEED) the tests check:
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
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hostile import Header, http_request
from processes import free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]
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

MAX_BODY_BYTES = 4 * MiB  # server.max_body_bytes default (the container's)
MAX_JPEG_SCANS = 100  # server.max_jpeg_scans default
MAX_INFLIGHT = 4
BODY_IDLE_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 3.0

# The only 5xx the contract allows.
ALLOWED_5XX = {(503, "TooManyRequests"), (503, "ModelNotReady"), (500, "ModelInferenceFailed")}
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


def report(problems: list[str]) -> None:
    """Fail with every problem; a Server header naming a version is listed once, not once per answer."""
    server = [p for p in problems if "Server header" in p]
    shown = [p for p in problems if "Server header" not in p]
    if server:
        shown.append(f"{server[0]} (and {len(server) - 1} more answers)" if len(server) > 1 else server[0])
    assert not shown, f"{len(problems)} problem(s):\n" + "\n".join(shown[:60])


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
    """The meter classifier served by `edge-runtime serve`, warmed up, for every test of one test file."""
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
