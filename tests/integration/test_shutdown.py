"""SIGTERM while busy: the process exits within 10 s and no queued event is lost.

`serve` runs the demo (camera + detector) with an MQTT sink whose broker is down and a client that
keeps POSTing /image. After SIGTERM the process must be gone within 10 s with exit code 0, every event
it produced must still be in the outbox, and once a broker is up a restarted runtime delivers them all.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mosquitto import Broker, Observer, mosquitto_available
from processes import free_port, wait_ready

from edge_runtime.demo.model import build_demo_export

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
PREFIX = "shutdown-test"


def start_serve(
    tmp_path: Path, http_port: int, env: dict[str, str], log_name: str = "serve.log"
) -> subprocess.Popen[bytes]:
    """`python -m edge_runtime serve` with events under tmp_path, plus `env`."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
    child |= {
        "TMPDIR": str(tmp_path),
        "EDGE_RUNTIME_EVENTS__JSONL_PATH": str(tmp_path / "events.jsonl"),
        "EDGE_RUNTIME_EVENTS__SNAPSHOT_DIR": str(tmp_path / "snapshots"),
        "EDGE_RUNTIME_EVENTS__OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
        **env,
    }
    with (tmp_path / log_name).open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "serve", "--host", "127.0.0.1", "--port", str(http_port)],
            cwd=REPO,
            env=child,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def mqtt_env(mqtt_port: int) -> dict[str, str]:
    return {
        "EDGE_RUNTIME_SINKS__MQTT__HOST": "127.0.0.1",
        "EDGE_RUNTIME_SINKS__MQTT__PORT": str(mqtt_port),
        "EDGE_RUNTIME_SINKS__MQTT__TOPIC_PREFIX": PREFIX,
        "EDGE_RUNTIME_SINKS__MQTT__RECONNECT_MAX_S": "2",
        "EDGE_RUNTIME_SERVER__INFERENCE_WORKERS": "2",
    }


def jsonl_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def outbox_ids(path: Path, sink: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT id FROM outbox WHERE sink = ?", (sink,))}


def busy_client(url: str, jpeg: bytes, stop: threading.Event, answers: list[int]) -> None:
    while not stop.is_set():
        request = urllib.request.Request(url + "/image", data=jpeg)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answers.append(response.status)
        except urllib.error.HTTPError as exc:
            with exc:
                answers.append(exc.code)
        except OSError:
            return  # the server is going away


def test_sigterm_while_busy_exits_fast_and_loses_no_event(tmp_path: Path, meter_jpeg: bytes) -> None:
    http_port, mqtt_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    proc = start_serve(tmp_path, http_port, mqtt_env(mqtt_port), "serve-1.log")
    stop = threading.Event()
    answers: list[int] = []
    try:
        wait_ready(url, proc)
        client = threading.Thread(target=busy_client, args=(url, meter_jpeg, stop, answers), daemon=True)
        client.start()
        deadline = time.monotonic() + 30
        while len(jsonl_ids(tmp_path / "events.jsonl")) < 2:  # the demo's stain started + ended
            assert time.monotonic() < deadline, (tmp_path / "serve-1.log").read_text()
            time.sleep(0.2)
        assert answers and set(answers) == {200}

        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
        took = time.monotonic() - began
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert rc == 0, (tmp_path / "serve-1.log").read_text()[-3000:]
    assert took < 10.0, f"exit took {took:.1f} s"

    produced = jsonl_ids(tmp_path / "events.jsonl")
    assert len(produced) == len(set(produced)) >= 2
    waiting = outbox_ids(tmp_path / "outbox.sqlite3", "mqtt")
    assert set(produced) <= waiting, "events produced before SIGTERM are missing from the outbox"

    # a broker at last, and the runtime again: everything that waited arrives
    broker = Broker(tmp_path / "broker", port=mqtt_port).start()
    observer = Observer(broker, [f"{PREFIX}/+/events"]).start()
    observer.wait_subscribed(1)
    again = start_serve(tmp_path, free_port(), mqtt_env(mqtt_port), "serve-2.log")
    try:
        observer.wait_for(
            lambda: (
                set(produced)
                <= {json.loads(m.payload)["id"] for m in observer.on(f"{PREFIX}/demo-conveyor/events")}
            ),
            timeout=30,
            what="every event produced before the SIGTERM",
        )
        received = observer.on(f"{PREFIX}/demo-conveyor/events")
        assert all(m.qos == 1 for m in received)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(15)
        observer.close()
        broker.stop()


def test_sigterm_exits_fast_while_the_hub_is_a_black_hole(tmp_path: Path) -> None:
    """edgeHub accepts TCP but never answers TLS: the SDK's connect hangs ~60 s; the exit must not."""
    import base64
    import socket

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", 8883))  # the SDK's hard-coded MQTT port
    except OSError:
        listener.close()
        pytest.skip("port 8883 is in use on this machine")
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accept, then say nothing
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    key = base64.b64encode(os.urandom(32)).decode()
    connection = (
        f"HostName=h.example;DeviceId=d;ModuleId=edgeRuntime;SharedAccessKey={key};GatewayHostName=127.0.0.1"
    )
    http_port = free_port()
    env = {
        "EDGE_RUNTIME_HUB__CONNECTION_STRING": connection,
        "EDGE_RUNTIME_SINKS__IOTHUB__OUTPUT": "defects",
        "EDGE_RUNTIME_MODEL__PATH": str(build_demo_export(tmp_path / "model")),
    }
    proc = start_serve(tmp_path, http_port, env)
    try:
        wait_ready(f"http://127.0.0.1:{http_port}", proc)
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:  # the SDK is inside its handshake
            time.sleep(0.1)
        assert held, "the SDK never connected to the black hole"
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stop.set()
        acceptor.join(5)
        for conn in held:
            conn.close()
        listener.close()
    assert rc == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert took < 10.0, f"exit took {took:.1f} s"


def test_sigterm_ends_open_live_pages_at_once(tmp_path: Path) -> None:
    """An operator page's live stream (SSE) never ends by itself: SIGTERM must end it, not wait out
    server.shutdown_timeout_s for it."""
    http_port = free_port()
    env = {
        "EDGE_RUNTIME_SERVER__SHUTDOWN_TIMEOUT_S": "30",
        "EDGE_RUNTIME_EVENTS__HISTORY_PATH": str(tmp_path / "history.sqlite3"),
    }
    proc = start_serve(tmp_path, http_port, env)
    try:
        wait_ready(f"http://127.0.0.1:{http_port}", proc)
        live = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ui/api/live", timeout=10)
        assert live.readline().startswith(b"event: ")  # streaming (a loopback viewer needs no key)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(40)
        took = time.monotonic() - began
        assert live.read() is not None  # the stream ended (EOF), it was not left hanging
        live.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert rc == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert took < 10, f"exit took {took:.1f} s with a live page open"
