"""The built-in demo end to end: synthetic conveyor camera -> demo detector -> rules -> JSONL + snapshots.

The conveyor's defects pass at known moments of its 12 s cycle (stain in [2, 5) s, glare in [7, 9) s
from the reader's start), so the events, their order and their times are known in advance.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.app import create_app, wait_until_loaded
from edge_runtime.demo.camera import DEMO_CAMERA
from edge_runtime.demo.model import build_demo_export
from edge_runtime.events.ids import EVENT_ID_PATTERN
from edge_runtime.settings import build_settings
from edge_runtime.sources.readers import ConveyorReader

pytestmark = pytest.mark.slow

CAMERA = "demo-conveyor"
EARLY = 0.25  # clock slack: an event can't precede its window by more than this
LATE = 1.5  # k-of-n start / clear_after end latency at 5 fps, with a margin
# (tag, kind) -> window of its expected capture time, seconds after the reader's start (first cycle)
EXPECTED = [
    (("stain", "started"), (ConveyorReader.STAIN_WINDOW[0] - EARLY, ConveyorReader.STAIN_WINDOW[0] + LATE)),
    (("stain", "ended"), (ConveyorReader.STAIN_WINDOW[1] - EARLY, ConveyorReader.STAIN_WINDOW[1] + LATE)),
    (("glare", "started"), (ConveyorReader.GLARE_WINDOW[0] - EARLY, ConveyorReader.GLARE_WINDOW[0] + LATE)),
    (("glare", "ended"), (ConveyorReader.GLARE_WINDOW[1] - EARLY, ConveyorReader.GLARE_WINDOW[1] + LATE)),
]


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def captured_at(event: dict[str, Any]) -> float:
    return _dt(event["captured_at"])


def _dt(text: str) -> float:
    from datetime import datetime

    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    return parsed.timestamp()


def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def decode_jpeg(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable image"
    return np.asarray(image)


@pytest.fixture
def reader_starts(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Wall-clock time at which each ConveyorReader starts its cycle (frames carry time.time())."""
    starts: list[float] = []
    original = ConveyorReader.__init__

    def init(self: ConveyorReader, fps: float = 10.0, start: float | None = None) -> None:
        original(self, fps, start)
        starts.append(time.time() - (time.monotonic() - self._start))

    monkeypatch.setattr(ConveyorReader, "__init__", init)
    return starts


async def test_demo_pipeline_end_to_end(tmp_path: Path, reader_starts: list[float]) -> None:
    jsonl = tmp_path / "events.jsonl"
    camera = {**DEMO_CAMERA.model_dump(), "fps": 5}
    settings = build_settings(
        {
            "server": {"inference_workers": 2},
            "model": {"device": "cpu"},
            "events": {
                "jsonl_path": jsonl,
                "snapshot_dir": tmp_path / "snaps",
                "outbox_path": tmp_path / "outbox.sqlite3",
            },
            "cameras": [camera],
        }
    )
    app = create_app(settings, build_demo_export(tmp_path / "model"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
            async with client.get(f"{base}/metrics") as response:
                metrics_before = await response.text()
            await wait_until_loaded(app, 30)
            assert len(reader_starts) == 1, "one conveyor reader for the one camera"
            start = reader_starts[0]

            # Wait for the first cycle's last expected event (glare ended, ~9.6 s after the start).
            deadline = start + EXPECTED[-1][1][1] + 2.0
            while time.time() < deadline:
                events = read_events(jsonl)
                if any((e["tag"], e["kind"]) == ("glare", "ended") for e in events):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # anything that should not be there gets a chance to show up
            events = read_events(jsonl)
            # Exactly the four events of the first cycle, in order, at the known moments.
            relative = [round(captured_at(e) - start, 2) for e in events]
            assert [(e["tag"], e["kind"]) for e in events] == [key for key, _ in EXPECTED], (events, relative)
            for event, t, ((tag, kind), (low, high)) in zip(events, relative, EXPECTED, strict=True):
                assert low <= t <= high, f"{tag} {kind} at {t} s, expected within [{low}, {high}]"
                assert event["camera"] == CAMERA and event["roi"] == "full"
                assert event["model"]["id"] == "edge-runtime-demo"
                assert len(event["model"]["sha1"]) == 40
                assert event["probability"] >= 0.5
                assert EVENT_ID_PATTERN.fullmatch(event["id"])
                assert event["boxes"], "a detection event has boxes"
                for box in event["boxes"]:  # on the belt band where the defects pass (rows 180..276)
                    cy = box["top"] + box["height"] / 2
                    cx = box["left"] + box["width"] / 2
                    assert 0.3 <= cy <= 0.65 and 0.25 <= cx <= 0.85, box
            assert [e["id"] for e in events] == sorted(e["id"] for e in events), "ids sort by time"
            assert time.time() - start < ConveyorReader.CYCLE_S + ConveyorReader.STAIN_WINDOW[0] - EARLY, (
                "read into the second cycle"
            )
            assert relative == sorted(relative)
            # No stain outside the stain window, no glare outside the glare window.
            for event, t in zip(events, relative, strict=True):
                window = (
                    ConveyorReader.STAIN_WINDOW if event["tag"] == "stain" else ConveyorReader.GLARE_WINDOW
                )
                assert window[0] - EARLY <= t <= window[1] + LATE, (event["tag"], t)

            # Every event's snapshot is served as a JPEG; started ones show the boxes in red.
            for event in events:
                assert event["snapshot"] == f"/snapshots/{event['id']}.jpg"
                async with client.get(base + event["snapshot"]) as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == "image/jpeg"
                    image = decode_jpeg(await response.read())
                assert image.shape == (ConveyorReader.HEIGHT, ConveyorReader.WIDTH, 3)
                if event["kind"] == "started":
                    b, g, r = (image[..., i].astype(int) for i in range(3))
                    assert ((r > 180) & (r - g > 80) & (r - b > 80)).sum() > 50, "no red box drawn"
            async with client.get(f"{base}/snapshots/{'0' * 26}.jpg") as response:
                assert response.status == 404
            async with client.get(f"{base}/snapshots/..%2Fevents.jpg") as response:
                assert response.status == 404

            # Health lists the camera as streaming.
            async with client.get(f"{base}/health/ready") as response:
                assert response.status == 200
                ready = await response.json()
            assert ready["status"] == "ready"
            assert ready["cameras"][CAMERA]["state"] == "streaming"
            assert ready["cameras"][CAMERA]["url"] == "synthetic://conveyor"
            assert ready["cameras"][CAMERA]["frames"] > 0
            # ...with its newest frame's age as of the request (the conveyor makes ~10 frames a second;
            # the status board's copy of the counters may be up to a second old).
            ages = []
            for _ in range(5):
                async with client.get(f"{base}/health/ready") as response:
                    ages.append((await response.json())["cameras"][CAMERA]["last_frame_age_s"])
                await asyncio.sleep(0.25)
            assert max(ages) < 0.6, ages

            # Metrics: the events counted per camera / tag / kind, frame ages observed.
            async with client.get(f"{base}/metrics") as response:
                assert response.status == 200
                metrics_after = await response.text()
            counted_before = metric_samples(metrics_before, "edge_runtime_events_total")
            counted = metric_samples(metrics_after, "edge_runtime_events_total")
            for tag in ("stain", "glare"):
                for kind in ("started", "ended"):
                    key = (("camera", CAMERA), ("kind", kind), ("tag", tag))
                    assert counted.get(key, 0) - counted_before.get(key, 0) == 1, (tag, kind, counted)
            ages_before = metric_samples(metrics_before, "edge_runtime_frame_age_seconds_count")
            ages = metric_samples(metrics_after, "edge_runtime_frame_age_seconds_count")
            key = (("camera", CAMERA),)
            sampled = ages.get(key, 0) - ages_before.get(key, 0)
            assert sampled >= 20, f"only {sampled} frames sampled in ~10 s at 5 fps"
            buckets = metric_samples(metrics_after, "edge_runtime_frame_age_seconds_bucket")
            assert buckets[(("camera", CAMERA), ("le", "+Inf"))] == ages[key]
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def test_cli_serve_without_model_or_camera_runs_the_demo(tmp_path: Path) -> None:
    port = free_port()
    temp = tmp_path / "tmp"  # where the CLI writes the demo model
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
    env["TMPDIR"] = str(temp)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            events_path = tmp_path / "var" / "events.jsonl"
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not read_events(events_path):
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.2)
            events = read_events(events_path)
            assert events, f"no event within 15 s:\n{log_path.read_text()}"
            assert events[0]["camera"] == CAMERA and events[0]["kind"] == "started"
            snapshot = tmp_path / "var" / "snapshots" / f"{events[0]['id']}.jpg"
            assert snapshot.is_file()

            status, body = http_get(f"http://127.0.0.1:{port}/health/ready")
            assert status == 200, body
            ready = json.loads(body)
            assert ready["status"] == "ready"
            assert ready["cameras"][CAMERA]["state"] == "streaming"
            assert ready["model"]["id"] == "edge-runtime-demo"
            status, body = http_get(f"http://127.0.0.1:{port}{events[0]['snapshot']}")
            assert status == 200 and body[:3] == b"\xff\xd8\xff"
            assert (temp / "edge-runtime-demo" / "model" / "model.onnx").is_file()

            # The demo's station judges a part (README: the first trigger a new user sends).
            trigger = urllib.request.Request(
                f"http://127.0.0.1:{port}/stations/demo/trigger", data=b'{"partId": "p1"}', method="POST"
            )
            with urllib.request.urlopen(trigger, timeout=10) as response:
                verdict = json.loads(response.read())
            assert verdict["station"] == "demo" and verdict["part_id"] == "p1"
            assert verdict["verdict"] in ("pass", "fail") and len(verdict["frames"]) == 2

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    log_text = log_path.read_text()
    assert "running the built-in demo" in log_text
    assert "Traceback" not in log_text, log_text
