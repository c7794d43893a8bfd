"""Helpers for the real-RTSP camera tests: start/kill/hang the test server, decode frame time stamps,
and a second client that keeps a shared stream playing and sees its keyframes pass (`StreamWatcher`).

The server (tests/rtsp_server.py) is gst-rtsp-server through python3-gi, which exists only for the
system interpreter, so it runs as a `/usr/bin/python3` subprocess. Its stdout goes to a file (never a
pipe nobody reads), and every server is killed in the fixture teardown, hung ones included.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_runtime.settings import CameraSettings
from edge_runtime.sources.capture import Capture

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"
MOUNT = "/test"

# Must match tests/rtsp_server.py: 32 blocks of 10x16 px, MSB first, complement in the next 16 rows.
BITS, BLOCK_W, BLOCK_H = 32, 10, 16
STAMP_MODULO = 2**BITS

_PROBE = (
    "import gi\n"
    "gi.require_version('Gst', '1.0'); gi.require_version('GstApp', '1.0')\n"
    "gi.require_version('GstRtspServer', '1.0')\n"
    "from gi.repository import Gst, GstApp, GstRtspServer\n"
    "Gst.init(None)\n"
    "needed = ('appsrc', 'videoconvert', 'x264enc', 'rtph264pay')\n"
    "missing = [e for e in needed if not Gst.ElementFactory.find(e)]\n"
    "assert not missing, f'missing GStreamer elements: {missing}'\n"
)


def gst_rtsp_unavailable() -> str | None:
    """Why the test server cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} not found (the RTSP test server needs the system Python with python3-gi)"
    try:
        probe = subprocess.run(
            [SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot probe {SYSTEM_PYTHON} for GStreamer: {exc}"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"{SYSTEM_PYTHON} cannot run gst-rtsp-server ({last}); install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,ugly}"
        )
    return None


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released: connecting to it is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RtspServer:
    """One test-server process; `restart()` brings a new one up on the same port.

    `keyframe_s`: seconds between keyframes (default: one a second). `auth`: (user, password) the
    server demands (HTTP Basic; anything else is answered 401)."""

    def __init__(
        self,
        log_dir: Path,
        fps: float = 25,
        keyframe_s: float | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.fps = fps
        self.keyframe_s = keyframe_s
        self.auth = auth
        self.port = 0
        self._log_dir = log_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        """The stream's URL, with the server's credentials when it demands some."""
        return self.url_as(*self.auth) if self.auth is not None else f"rtsp://127.0.0.1:{self.port}{MOUNT}"

    def url_as(self, user: str, password: str, path: str = MOUNT) -> str:
        return f"rtsp://{user}:{password}@127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "server not running"
        return self._proc.pid

    def start(self, timeout: float = 15.0) -> RtspServer:
        """Start on `self.port` (0: any free port) and wait for READY; retries while the port is busy."""
        deadline = time.monotonic() + timeout
        while True:
            self._starts += 1
            log = self._log_dir / f"rtsp-server-{self._starts}.log"
            with log.open("wb") as out:
                args = [str(self.port), f"{self.fps:g}"]
                if self.keyframe_s is not None:
                    args += ["--keyframe-s", f"{self.keyframe_s:g}"]
                if self.auth is not None:
                    args += ["--auth", ":".join(self.auth)]
                self._proc = subprocess.Popen(
                    [SYSTEM_PYTHON, str(SERVER_SCRIPT), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace")
                for line in text.splitlines():
                    if line.startswith("READY "):
                        self.port = int(line.split()[1])
                        return self
                if self._proc.poll() is not None:
                    break
                time.sleep(0.05)
            self.kill()
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"RTSP test server did not become ready: {log.read_text(errors='replace')}"
                )
            time.sleep(0.2)  # e.g. the old server's port not free yet: try again

    def kill(self) -> None:
        """SIGKILL (a crash: sockets close at once) and reap; also ends a SIGSTOPped server."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()  # a no-op once it has been reaped
        proc.wait(timeout=10)

    def restart(self) -> RtspServer:
        assert self.port, "restart() needs a server that was started once"
        self.kill()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the TCP connection stays up but nothing more is sent (a hung camera)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


class StreamWatcher:
    """A second RTSP client (PyAV, in a thread) that keeps a shared stream playing and notes when its
    keyframes pass. The test server encodes for its first client: a camera that joins while a watcher
    plays starts mid-GOP, like a camera that joins a real, always-running one."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        import av

        self._container = av.open(url, options={"rtsp_transport": "tcp"}, timeout=(timeout, timeout))
        self.keyframes: list[float] = []  # monotonic times
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="stream-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for packet in self._container.demux(self._container.streams.video[0]):
                if packet.is_keyframe and packet.size:
                    with self._new:
                        self.keyframes.append(time.monotonic())
                        self._new.notify_all()
                if self._stop.is_set():
                    break
        except Exception as exc:  # reported by wait_keyframes()
            self.error = exc
        finally:
            self._container.close()

    def wait_keyframes(self, count: int, timeout: float) -> float:
        """Wait until `count` keyframes have passed since the watcher opened; the last one's monotonic
        time (the first one's is late by FFmpeg's probing: it came with the open)."""
        with self._new:
            if not self._new.wait_for(
                lambda: len(self.keyframes) >= count or self.error is not None, timeout
            ):
                raise AssertionError(f"{len(self.keyframes)} keyframes, not {count}, within {timeout:g} s")
        if self.error is not None:
            raise AssertionError(f"the watcher's stream failed: {self.error!r}")
        return self.keyframes[-1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def decode_stamp(image: NDArray[np.uint8]) -> int | None:
    """The server's wall time stamp (ms mod 2**32) from a decoded frame, or None when it is damaged.

    Each bit is the majority of the block's inner pixels thresholded at 128 (the block edges blur in
    H.264); the complement row must disagree on every bit, so a misread never passes as a value.
    """
    gray = image if image.ndim == 2 else image.mean(axis=2)
    value = 0
    for i in range(BITS):
        x0, x1 = i * BLOCK_W + 2, (i + 1) * BLOCK_W - 2
        bit = (gray[3 : BLOCK_H - 3, x0:x1] >= 128).mean() > 0.5
        check = (gray[BLOCK_H + 3 : 2 * BLOCK_H - 3, x0:x1] >= 128).mean() > 0.5
        if bit == check:
            return None
        value = (value << 1) | int(bit)
    return value


def age_ms(stamp: int, now: float | None = None) -> int:
    """How old a stamped frame is, in ms of wall time (the stamp wraps every ~49.7 days)."""
    now_ms = int((time.time() if now is None else now) * 1000)
    return (now_ms - stamp) % STAMP_MODULO


def offset_ms(stamp: int, at: float) -> int:
    """`at` (a wall time) minus the stamp, in ms, signed: negative when `at` is before the stamp."""
    half = STAMP_MODULO // 2
    return (int(at * 1000) - stamp + half) % STAMP_MODULO - half


def wait_until(
    condition: Callable[[], bool], timeout: float, tick: Callable[[], None] | None = None, every: float = 0.05
) -> float | None:
    """Poll `condition` (calling `tick` first each round) until true; seconds it took, or None on timeout."""
    start = time.monotonic()
    while True:
        if tick is not None:
            tick()
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(every)


OpenCamera = Callable[..., Capture]


@contextmanager
def captures(prefix: str, **defaults: object) -> Iterator[OpenCamera]:
    """open(url, **overrides) starts a Capture (ids <prefix>0, <prefix>1, ...) with `defaults` for quick
    test timings; every one is stopped on exit."""
    cameras: list[Capture] = []

    def open_(url: str, **overrides: object) -> Capture:
        fields: dict[str, object] = {"id": f"{prefix}{len(cameras)}", "url": url, **defaults, **overrides}
        camera = Capture(CameraSettings.model_validate(fields))
        cameras.append(camera)
        camera.start()
        return camera

    try:
        yield open_
    finally:
        for camera in cameras:
            camera.stop(timeout=15)
