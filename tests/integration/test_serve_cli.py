"""`python -m edge_runtime serve` as a real process: settings sources, readiness, SIGTERM drain."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import yaml
from PIL import Image
from processes import free_port

pytestmark = pytest.mark.slow

REQUESTS = 8
REPO = Path(__file__).resolve().parents[2]


def events_env(tmp_path: Path) -> dict[str, str]:
    """Keep each test's events, snapshots and outbox out of the repository's var/."""
    return {
        "EDGE_RUNTIME_EVENTS__JSONL_PATH": str(tmp_path / "events.jsonl"),
        "EDGE_RUNTIME_EVENTS__SNAPSHOT_DIR": str(tmp_path / "snapshots"),
        "EDGE_RUNTIME_EVENTS__OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
    }


class ServeProcess:
    def __init__(self, args: Sequence[str], tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = tmp_path / "serve.log"
        self._log = self.log_path.open("wb")
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
        child_env["TMPDIR"] = str(tmp_path)  # the built-in demo model is written under the temp dir
        for name, value in events_env(tmp_path).items():
            child_env.setdefault(name, value)
        child_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "serve", *args],
            cwd=REPO,
            env=child_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, base: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}:\n{self.log}"
                try:
                    async with session.get(base + "/health/ready") as response:
                        if response.status == 200:
                            return json.loads(await response.text())
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"not ready within {timeout} s:\n{self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    processes: list[ServeProcess] = []

    def start(args: Sequence[str], env: dict[str, str] | None = None) -> ServeProcess:
        process = ServeProcess(args, tmp_path, env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


def big_jpeg() -> bytes:
    """A 4000x3000 JPEG: about 0.3 s of decode + resize per request on one core."""
    ramp = np.add.outer(np.arange(3000) % 256, np.arange(4000) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.stack([ramp, ramp[::-1], 255 - ramp], -1)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


@pytest.mark.shared
async def test_serve_predicts_and_drains_on_sigterm(
    client, serve, meter_dir, meter_jpeg, meter_expected, http
):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--host", "127.0.0.1", "--port", str(port), "--model", str(meter_dir), "--device", "cpu"]
    server = serve([*args, "--workers", "2", "--max-inflight", str(REQUESTS)])
    ready = await server.wait_ready(base)
    assert ready["model"]["device"] == "cpu"
    assert ready["model"]["task"] == "classification"

    labels = (meter_dir / "labels.txt").read_text().split()
    async with client.post(base + "/image", data=meter_jpeg) as response:
        http.check_classification(await http.body_of(response), labels, meter_expected["test-dog1.jpg"])

    image = big_jpeg()
    finished: list[tuple[int, float]] = []
    # One connection per request (no keep-alive): each request either reaches the server or is refused.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as session:

        async def one() -> None:
            async with session.post(base + "/image", data=io.BytesIO(image)) as response:
                text = await response.text()
                finished.append((response.status, time.monotonic()))
                assert response.status == 200, text
                assert len(json.loads(text)["predictions"]) == 3

        in_flight = [asyncio.create_task(one()) for _ in range(REQUESTS)]
        try:
            # When the first answer arrives, every request has been admitted and the rest wait for the
            # two workers (~0.3 s per image each): SIGTERM now, with most of them still in flight.
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            pending = sum(not task.done() for task in in_flight)
            assert pending >= 3, f"only {pending} requests left in flight at SIGTERM: not a drain test"
            sent_at = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*in_flight)  # every admitted request completes with 200
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

        await asyncio.sleep(0.05)
        try:  # a request after SIGTERM: refused cleanly (connection refused or 503), never hanging
            async with session.post(base + "/image", data=meter_jpeg) as response:
                assert response.status == 503, await response.text()
        except aiohttp.ClientConnectorError:
            pass

    assert [status for status, _ in finished] == [200] * REQUESTS
    assert max(at for _, at in finished) > sent_at  # at least one completed during the drain
    rc = await asyncio.to_thread(server.proc.wait, 10)
    assert time.monotonic() - sent_at < 10
    assert rc == 0, server.log


async def test_sigterm_when_idle_exits_promptly(serve, demo_dir):
    port = free_port()
    server = serve(["--host", "127.0.0.1", "--port", str(port), "--model", str(demo_dir), "--device", "cpu"])
    await server.wait_ready(f"http://127.0.0.1:{port}")
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.proc.wait, 10) == 0, server.log
    assert time.monotonic() - start < 5


async def test_port_from_environment(client, serve, http):
    """EDGE_RUNTIME_SERVER__PORT / __HOST are honoured; with no --model the built-in demo is served."""
    port = free_port()
    env = {"EDGE_RUNTIME_SERVER__PORT": str(port), "EDGE_RUNTIME_SERVER__HOST": "127.0.0.1"}
    server = serve(["--device", "cpu"], env=env)
    base = f"http://127.0.0.1:{port}"
    ready = await server.wait_ready(base)
    assert ready["model"]["id"] == "edge-runtime-demo"
    async with client.post(base + "/image", data=http.belt()) as response:
        http.check_detection(await http.body_of(response))


async def test_yaml_config_file(serve, demo_dir, tmp_path, http):
    port = free_port()
    config = tmp_path / "edge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {
                    "host": "127.0.0.1",
                    "port": port,
                    "prediction_key": "from-yaml",
                    "max_body_bytes": 4096,
                },
                "model": {"path": str(demo_dir), "device": "cpu"},
                "log_level": "WARNING",
            }
        )
    )
    server = serve(["--config", str(config)])
    base = f"http://127.0.0.1:{port}"
    await server.wait_ready(base)
    async with aiohttp.ClientSession() as session:
        async with session.post(base + "/image", data=http.png(32, 32)) as response:
            await http.error(response, 401, "Unauthorized")
        headers = {"Prediction-Key": "from-yaml"}
        async with session.post(base + "/image", data=http.png(32, 32), headers=headers) as response:
            await http.body_of(response)
        async with session.post(base + "/image", data=b"\0" * 5000, headers=headers) as response:
            await http.error(response, 413, "BadRequestImageSizeBytes")


async def test_flag_beats_environment_beats_yaml(serve, demo_dir, tmp_path):
    yaml_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({"server": {"host": "127.0.0.1", "port": yaml_port}}))
    env = {"EDGE_RUNTIME_SERVER__PORT": str(env_port), "EDGE_RUNTIME_CONFIG": str(config)}
    server = serve(["--port", str(flag_port), "--model", str(demo_dir), "--device", "cpu"], env=env)
    await server.wait_ready(f"http://127.0.0.1:{flag_port}")
    for port in (yaml_port, env_port):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "quantum"], "device"),
        (["--config", "/nonexistent/edge.yaml"], "/nonexistent/edge.yaml"),
    ],
)
def test_bad_settings_exit_2_with_a_message(serve, args, message):
    server = serve(["--port", str(free_port()), *args])
    assert server.proc.wait(30) == 2
    assert "error:" in server.log and message in server.log


async def test_as_a_module_without_a_model_it_waits_for_the_twin(client, serve):
    """Inside IoT Edge (hub on) with no model: no demo camera (its events would go upstream); readiness
    says what is missing. The hub here is unreachable, which must not matter either."""
    import base64
    import os

    port = free_port()
    key = base64.b64encode(os.urandom(32)).decode()
    env = {
        "EDGE_RUNTIME_HUB__CONNECTION_STRING": (
            f"HostName=h.example;DeviceId=d;ModuleId=edgeRuntime;SharedAccessKey={key};GatewayHostName=127.0.0.9"
        ),
        "EDGE_RUNTIME_HUB__CONNECT_RETRY_MAX_S": "1",
    }
    server = serve(["--host", "127.0.0.1", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert server.proc.poll() is None, server.log
        try:
            async with client.get(base + "/health/ready") as response:
                body = json.loads(await response.text())
                if body.get("status") == "failed":
                    break
        except aiohttp.ClientConnectionError:
            pass
        assert time.monotonic() < deadline, server.log
        await asyncio.sleep(0.1)
    assert response.status == 503
    assert "no model configured" in body["error"]
    assert body["cameras"] == {}
    assert body["sinks"]["hub"]["connected"] is False
    assert key not in server.log
    async with client.get(base + "/health/live") as response:
        assert response.status == 200


async def test_a_port_in_use_is_one_clear_error_and_a_clean_exit(serve, tmp_path):
    """With the MQTT sink and the demo camera configured: one line naming the port, exit code 2, no
    traceback, and nothing started first (a second instance must not take the first's MQTT client id and
    publish its retained 'offline')."""
    from mosquitto import Broker, mosquitto_available

    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    broker = Broker(tmp_path / "broker").start()
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "EDGE_RUNTIME_SINKS__MQTT__HOST": broker.host,
            "EDGE_RUNTIME_SINKS__MQTT__PORT": str(broker.port),
            "EDGE_RUNTIME_SINKS__MQTT__CLIENT_ID": "edge-port-taken",
        }
        server = serve(["--host", "127.0.0.1", "--port", str(port)], env=env)
        rc = await asyncio.to_thread(server.proc.wait, 60)
    finally:
        taken.close()
        broker.stop()
    log = server.log
    assert rc == 2, log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port}: address already in use"], log
    assert "Traceback" not in log and "terminate called" not in log, log
    assert "camera demo-conveyor" not in log, "no camera is started before the port is known to be free"
    assert "edge-port-taken" not in broker.log, "the MQTT sink never connected"
