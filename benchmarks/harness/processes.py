"""The processes a benchmark starts: a server answering the runtime's HTTP API, and mosquitto.

Both reuse the tests' helpers (tests/processes.py: free_port, wait_ready; tests/mosquitto.py: Broker) so
that a change to how a server is started or found ready is made once. The benchmarks are run as modules
from the repository root (`python -m benchmarks.http_bench`), which puts `tests` on the import path.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from tests.mosquitto import MOSQUITTO, mosquitto_available
from tests.mosquitto import Broker as TestBroker
from tests.processes import free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]

__all__ = [
    "MOSQUITTO",
    "REPO",
    "Broker",
    "ServeProcess",
    "exit_on_signals",
    "free_port",
    "mosquitto_available",
    "mosquitto_version",
    "serve_command",
]


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP raise SystemExit, so `finally` blocks stop the servers and brokers (the default
    action ends the process at once and they would outlive it); SIGINT raises KeyboardInterrupt even when
    a script started us in the background with it ignored."""

    def _exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def end_process(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM, `grace_s` to exit, then SIGKILL; nothing if it has exited already."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_command(model: Path, port: int, extra: Sequence[str] = ()) -> list[str]:
    """`python -m edge_runtime serve` on loopback with the model on the CPU, warnings and errors only."""
    return [
        *(sys.executable, "-m", "edge_runtime", "--log-level", "WARNING", "serve"),
        *("--host", "127.0.0.1", "--port", str(port), "--model", str(model), "--device", "cpu"),
        *extra,
    ]


class ServeProcess:
    """A server on a free loopback port in its own process (started from the repository root), its
    output in a temporary log file; stopped with SIGTERM, then SIGKILL after 15 s.

        with ServeProcess(lambda port: serve_command(model, port)) as server:
            ready = server.wait_ready()          # the body of GET /health/ready
    """

    def __init__(self, command: Callable[[int], Sequence[str]]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = list(command(self.port))
        self._dir = tempfile.TemporaryDirectory(prefix="bench-serve-")
        self.log_path = Path(self._dir.name) / "server.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> dict[str, object]:
        """Until GET /health/ready answers 200 (see tests/processes.py), then that answer's body."""
        wait_ready(self.base, self.proc, self.log_path, timeout)
        with urllib.request.urlopen(self.base + "/health/ready", timeout=10) as response:
            body = json.load(response)
        return dict(body) if isinstance(body, dict) else {}

    def stop(self) -> None:
        end_process(self.proc, grace_s=15)
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Broker(TestBroker):
    """tests/mosquitto.py's broker (a free loopback port, anonymous, no persistence, SIGKILL to stop,
    restartable on the same port) with mosquitto's default log types: the tests' `log_type all` writes
    a line per packet, CPU and disk the broker would spend in every measurement. (Its start() checks the
    port every 20 ms; delivery_bench's own copy checked every 5 ms, so the backlog drain's times "from
    broker start" may begin up to 15 ms later than they used to.)"""

    def _write_config(self, hashed_here: bool) -> None:
        lines = [
            "user root",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")


def mosquitto_version() -> str:
    """The version `mosquitto -h` names in its first line, or "?"."""
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip().removeprefix("mosquitto version ") if first else "?"
