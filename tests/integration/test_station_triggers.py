"""Triggered inspection (stations) with the real parts: the HTTP routes over TCP, a real RTSP camera
whose every frame carries its wall-clock stamp, the real demo detector, a model swap through the admin
API, and the `inspect` direct method through the real azure-iot-device SDK.

What a verdict promises, checked from outside:
- the HTTP contract: 200 with the verdict; 202 + Location when asked not to wait; a repeated part id
  gets the identical verdict and is published once; 404 / 400 / 401 as JSON;
- its frames were captured AFTER the trigger: the camera's own stamps in the pixels of every frame
  the model was given say so, not only the runtime's `captured_at`;
- a camera that stops at the trigger gives no_verdict (camera_stalled) by the deadline, never a pass;
- a burst of 100 parts gets 100 verdicts, each published exactly once;
- a model swap during an inspection: one verdict, all of its frames predicted by the verdict's model.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakehub import SDK_SOCKET_LEAK, FakeHub, collect_sdk_garbage
from rtsp_fixtures import RtspServer, gst_rtsp_unavailable, offset_ms
from station_support import (
    ADMIN_KEY,
    TRIGGER_KEY,
    StampRecorder,
    camera,
    epoch,
    station,
    station_settings,
    verdicts_in,
)
from yarl import URL

from edge_runtime.app_keys import CAMERAS

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TRIGGER_KEY}"}
SYNTHETIC = "synthetic://conveyor"  # 10 frames a second
JsonBody = dict[str, Any]


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[Callable[..., RtspServer]]:
    reason = gst_rtsp_unavailable()
    if reason is not None:
        pytest.skip(reason)
    servers: list[RtspServer] = []

    def start(fps: float = 25) -> RtspServer:
        server = RtspServer(tmp_path, fps=fps)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: object,
    headers: dict[str, str] | None = None,
) -> tuple[int, JsonBody, dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(url, data=data, headers={**AUTH, **(headers or {})}) as response:
        text = await response.text()
        assert response.headers.get("Content-Type") == "application/json", text
        return response.status, json.loads(text), dict(response.headers)


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, JsonBody]:
    async with session.get(url, headers=AUTH) as response:
        text = await response.text()
        assert response.headers.get("Content-Type") == "application/json", text
        return response.status, json.loads(text)


async def first_verdict(
    session: aiohttp.ClientSession, url: str, station_id: str, timeout: float = 20
) -> JsonBody:
    """Trigger warm-up parts until one gets a verdict (the camera is streaming and the model serves)."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        status, body, _ = await post(session, f"{url}/stations/{station_id}/trigger", {"partId": f"warm-{n}"})
        assert status == 200, body
        if body["verdict"] != "no_verdict":
            return body
        assert time.monotonic() < deadline, f"no verdict within {timeout} s: {body}"
        await asyncio.sleep(0.3)


def check_frames(verdict: JsonBody, cameras: list[str], frames: int, min_interval_ms: float) -> None:
    """Every camera's `frames` frames, captured after the trigger, `min_interval_ms` apart."""
    triggered = epoch(verdict["triggered_at"])
    for camera_id in cameras:
        mine = [f for f in verdict["frames"] if f["camera"] == camera_id]
        assert len(mine) == frames, verdict["frames"]
        times = [epoch(f["captured_at"]) for f in mine]
        assert all(t >= triggered for t in times), (times, triggered)
        # ISO times carry ms: allow one ms of rounding on each side
        gaps = [(b - a) * 1000 for a, b in itertools.pairwise(times)]
        assert all(g >= min_interval_ms - 2 for g in gaps), gaps
        assert [f["sequence"] for f in mine] == sorted({f["sequence"] for f in mine})


# --- 1. the HTTP contract ------------------------------------------------------------------------------
async def test_http_trigger_answers_waits_repeats_and_refuses(
    tmp_path: Path, start_server: Any, demo_dir: Path
) -> None:
    settings = station_settings(
        tmp_path,
        cameras=[camera("belt", SYNTHETIC)],
        stations=[
            station("quick", ["belt"], deadline_ms=5000),
            station("slow", ["belt"], frames=3, min_interval_ms=600, deadline_ms=8000),
        ],
        triggers={"key": TRIGGER_KEY},
    )
    server = start_server(demo_dir, settings)
    url, jsonl = server.url, tmp_path / "events.jsonl"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await first_verdict(session, url, "quick")

        # 200 with the verdict
        sent = time.time()
        status, verdict, _ = await post(
            session, f"{url}/stations/quick/trigger", {"partId": "p-1", "metadata": {"line": 3}}
        )
        assert status == 200, verdict
        assert verdict["kind"] == "verdict" and verdict["verdict"] in ("pass", "fail"), verdict
        assert (verdict["station"], verdict["part_id"], verdict["source"]) == ("quick", "p-1", "http")
        assert verdict["reason"] is None and verdict["metadata"] == {"line": "3"}
        assert verdict["model"]["id"] == "edge-runtime-demo"
        assert sent - 0.002 <= epoch(verdict["triggered_at"]) <= epoch(verdict["decided_at"])
        check_frames(verdict, ["belt"], 1, 0)

        # a repeat: the identical verdict (same id), at once
        status, again, _ = await post(session, f"{url}/stations/quick/trigger", {"partId": "p-1"})
        assert status == 200 and again == verdict
        status, remembered = await get(session, f"{url}/stations/quick/parts/p-1")
        assert status == 200 and remembered == verdict

        # 202 + Location when asked not to wait; the location answers 202, then 200
        for part_id, query, headers in (
            ("p-async", "", {"Prefer": "respond-async"}),
            ("p-nowait", "?wait=false", {}),
        ):
            status, pending, response_headers = await post(
                session, f"{url}/stations/slow/trigger{query}", {"partId": part_id}, headers
            )
            assert status == 202, pending
            assert pending == {"station": "slow", "part_id": part_id, "status": "pending"}
            location = response_headers["Location"]
            assert location == f"/stations/slow/parts/{part_id}"
            status, body = await get(session, url + location)
            assert (status, body) == (202, pending)
            # a repeat while pending: pending too, same place
            status, body, repeat_headers = await post(
                session, f"{url}/stations/slow/trigger{query}", {"partId": part_id}, headers
            )
            assert (status, repeat_headers["Location"]) == (202, location)
            deadline = time.monotonic() + 10
            while (answer := await get(session, url + location))[0] == 202:
                assert time.monotonic() < deadline, "still pending after 10 s"
                await asyncio.sleep(0.1)
            status, done = answer
            assert status == 200 and done["part_id"] == part_id and done["verdict"] != "no_verdict", done
            check_frames(done, ["belt"], 3, 600)
            # a waiting repeat now gets the same verdict
            status, same, _ = await post(session, f"{url}/stations/slow/trigger", {"partId": part_id})
            assert status == 200 and same == done

        # refusals, as JSON errors
        status, body, _ = await post(session, f"{url}/stations/nope/trigger", {"partId": "x"})
        assert status == 404 and body["code"] == "UnknownStation" and "quick" in body["message"], body
        for bad in ({"partId": ""}, {"partId": 4711}, {"part": "x"}, {"partId": "a\nb"}):
            status, body, _ = await post(session, f"{url}/stations/quick/trigger", bad)
            assert status == 400 and body["code"] == "BadTrigger", (bad, body)
        for raw in (b"not json", b'["p-2"]'):
            status, body, _ = await post(session, f"{url}/stations/quick/trigger", raw)
            assert status == 400 and body["code"] == "BadRequest", (raw, body)
        status, body = await get(session, f"{url}/stations/quick/parts/never-seen")
        assert status == 404 and body["code"] == "UnknownPart", body
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TRIGGER_KEY}):
            for method, path in (
                ("POST", "/stations/quick/trigger"),
                ("GET", "/stations/quick/parts/p-1"),
                ("GET", "/stations"),
            ):
                async with session.request(
                    method, url + path, data=b'{"partId": "p-9"}', headers=headers
                ) as response:
                    assert response.status == 401, (method, path, headers)
                    assert (await response.json())["code"] == "Unauthorized"

        # the station's counters: repeats are not parts
        status, listed = await get(session, f"{url}/stations")
        assert status == 200
        quick = next(s for s in listed["stations"] if s["station"] == "quick")
        warm = quick["parts"] - 1
        assert quick["pending"] == 0 and warm >= 1 and quick["passes"] + quick["fails"] == quick["parts"]
        assert quick["last"]["id"] == verdict["id"], quick

    # published once per part: p-1 (asked three times) once, with the id it was answered with
    def published(part_id: str) -> list[JsonBody]:
        return [v for v in verdicts_in(jsonl) if v["part_id"] == part_id]

    deadline = time.monotonic() + 10
    while len(published("p-nowait")) < 1:
        assert time.monotonic() < deadline, verdicts_in(jsonl)
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # anything published twice would be there by now
    assert published("p-1") == [verdict]
    assert [v["id"] for v in published("p-async")] == [done["id"] for done in published("p-async")]
    assert len(published("p-async")) == len(published("p-nowait")) == 1
    assert not published("p-9") and not published("x")


# the operator's view of a station: its last verdict is the one the caller was answered with
async def test_station_status_shows_the_last_verdict_as_answered(
    tmp_path: Path, start_server: Any, demo_dir: Path
) -> None:
    settings = station_settings(
        tmp_path,
        cameras=[camera("belt", SYNTHETIC)],
        stations=[station("quick", ["belt"], deadline_ms=5000)],
        triggers={"key": TRIGGER_KEY},
    )
    server = start_server(demo_dir, settings)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        verdict = await first_verdict(session, server.url, "quick")
        assert verdict["snapshot"] is not None and verdict["snapshots"] == [verdict["snapshot"]]
        status, listed = await get(session, f"{server.url}/stations")
    assert status == 200
    assert listed["stations"][0]["last"] == verdict


# --- 2. the frames are captured after the trigger, by the camera's own clock ----------------------------
async def camera_clock(server: Any, camera_id: str) -> str | None:
    """Where the camera's frame times come from now (rtcp | pts | arrival; None before a frame)."""

    async def read() -> str | None:
        stream = server.app[CAMERAS].status(camera_id).stream
        return None if stream is None else str(stream.clock)

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(read(), server.loop))


async def stamped_trigger(
    session: aiohttp.ClientSession, server: Any, recorder: StampRecorder, part_id: str, frames: int
) -> tuple[JsonBody, list[int]]:
    """Trigger one part; its verdict and, per frame the model was given for it, how many ms the
    camera's stamp lies BEFORE the moment the trigger was sent (<= 0: captured after it)."""
    sent = time.time()
    status, verdict, _ = await post(session, f"{server.url}/stations/st/trigger", {"partId": part_id})
    assert status == 200 and verdict["verdict"] != "no_verdict", verdict
    # Exactly the part's frames were predicted since it was sent (`sample: false`, one part at a time).
    predicted = recorder.since(sent)
    assert len(predicted) == frames, predicted
    assert {p.model for p in predicted} == {verdict["model"]["id"]}
    stamps = [p.stamp for p in predicted]
    assert None not in stamps, f"undecodable stamps: {stamps}"
    return verdict, [offset_ms(stamp, sent) for stamp in stamps if stamp is not None]


async def test_verdict_frames_were_captured_after_the_trigger_by_the_camera_stamps(
    tmp_path: Path, start_server: Any, demo_dir: Path, rtsp: Callable[..., RtspServer]
) -> None:
    frames, interval = 3, 120
    camera_server = rtsp(fps=25)
    recorder = StampRecorder()
    settings = station_settings(
        tmp_path,
        cameras=[camera("cam", camera_server.url)],
        stations=[station("st", ["cam"], frames=frames, min_interval_ms=interval, deadline_ms=5000)],
        events={"snapshot_dir": None},
    )
    server = start_server(demo_dir, settings, loader=recorder.load)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await first_verdict(session, server.url, "st")
        # The camera's own wall clock (RTCP sender reports) is known a moment into the session.
        deadline = time.monotonic() + 10
        while await camera_clock(server, "cam") != "rtcp":
            assert time.monotonic() < deadline, "no RTCP clock within 10 s"
            await asyncio.sleep(0.05)
        report = []
        for n, pause in enumerate((0.0, 0.013, 0.031, 0.007, 0.052, 0.021, 0.0, 0.039)):
            await asyncio.sleep(pause)  # triggers at different phases of the 40 ms frame period
            verdict, lead = await stamped_trigger(session, server, recorder, f"s-{n}", frames)
            check_frames(verdict, ["cam"], frames, interval)
            report.append(lead)
        # the camera stamped every frame the model was given at or after the trigger was sent
        assert all(ms <= 0 for lead in report for ms in lead), f"ms stamped before the trigger: {report}"


async def test_frames_taken_before_the_rtcp_clock_are_captured_after_the_trigger(
    tmp_path: Path, start_server: Any, demo_dir: Path, rtsp: Callable[..., RtspServer]
) -> None:
    camera_server = rtsp(fps=25)
    recorder = StampRecorder()
    settings = station_settings(
        tmp_path,
        cameras=[camera("cam", camera_server.url)],
        stations=[station("st", ["cam"], frames=1, deadline_ms=5000)],
        events={"snapshot_dir": None},
    )
    server = start_server(demo_dir, settings, loader=recorder.load)
    report: list[tuple[str | None, list[int]]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        deadline = time.monotonic() + 15
        while await camera_clock(server, "cam") is None:
            assert time.monotonic() < deadline, "the camera never streamed"
            await asyncio.sleep(0.01)
        # A new session starts on the PTS clock (no RTCP report yet): restart the camera to be there
        # (by the time the model has loaded, the first session's clock is usually RTCP already).
        await asyncio.to_thread(camera_server.restart)
        deadline = time.monotonic() + 15
        while await camera_clock(server, "cam") != "pts":
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
        for n in range(12):
            before = await camera_clock(server, "cam")
            if before != "pts":
                break
            _, lead = await stamped_trigger(session, server, recorder, f"pts-{n}", 1)
            report.append((before, lead))
            await asyncio.sleep(0.011)
    if not report:
        pytest.skip("the RTCP clock was known before any trigger could be sent")
    assert all(ms <= 0 for _, lead in report for ms in lead), f"ms stamped before the trigger: {report}"


# --- 3. a camera that stops at the trigger: no_verdict by the deadline, never a pass --------------------
async def test_a_camera_stalled_at_the_trigger_gives_no_verdict_by_the_deadline(
    tmp_path: Path, start_server: Any, demo_dir: Path, rtsp: Callable[..., RtspServer]
) -> None:
    deadline_ms = 1500
    camera_server = rtsp(fps=25)
    settings = station_settings(
        tmp_path,
        cameras=[camera("cam", camera_server.url)],
        stations=[station("st", ["cam"], frames=2, min_interval_ms=100, deadline_ms=deadline_ms)],
        events={"snapshot_dir": None},
    )
    server = start_server(demo_dir, settings)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await first_verdict(session, server.url, "st")
        for n, stop in enumerate((camera_server.pause, camera_server.kill)):
            stop()  # hung (SIGSTOP: the connection stays up) then crashed (SIGKILL)
            began = time.monotonic()
            status, verdict, _ = await post(
                session, f"{server.url}/stations/st/trigger", {"partId": f"stalled-{n}"}
            )
            took = time.monotonic() - began
            assert status == 200, verdict
            assert verdict["verdict"] == "no_verdict", verdict
            assert verdict["reason"] in ("camera_stalled", "camera_stale"), verdict
            assert deadline_ms / 1000 - 0.05 <= took <= deadline_ms / 1000 + 0.5, took
            assert verdict["defects"] == [] and verdict["latency_ms"] <= deadline_ms + 100


# --- 4. a burst of 100 parts: 100 verdicts, each published once ---------------------------------------
async def test_a_burst_of_100_parts_gets_100_verdicts_each_published_once(
    tmp_path: Path, start_server: Any, demo_dir: Path
) -> None:
    settings = station_settings(
        tmp_path,
        cameras=[camera("belt", SYNTHETIC)],
        stations=[station("burst", ["belt"], frames=2, deadline_ms=15000)],
    )
    server = start_server(demo_dir, settings)
    jsonl = tmp_path / "events.jsonl"
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        headers = {"Content-Type": "application/json"}

        async def trigger(part_id: str) -> tuple[int, JsonBody]:
            async with session.post(
                f"{server.url}/stations/burst/trigger", data=json.dumps({"partId": part_id}), headers=headers
            ) as response:
                return response.status, await response.json()

        await first_verdict(session, server.url, "burst")
        parts = [f"b-{i:03d}" for i in range(100)]
        answers = await asyncio.gather(*(trigger(p) for p in parts))
    assert [status for status, _ in answers] == [200] * 100, answers
    verdicts = [body for _, body in answers]
    assert [v["part_id"] for v in verdicts] == parts
    assert len({v["id"] for v in verdicts}) == 100
    kinds = {v["verdict"] for v in verdicts}
    assert "no_verdict" not in kinds, [(v["part_id"], v["reason"], v["detail"]) for v in verdicts]
    for v in verdicts:
        check_frames(v, ["belt"], 2, 0)

    deadline = time.monotonic() + 20
    while len(mine := [v for v in verdicts_in(jsonl, "burst") if v["part_id"].startswith("b-")]) < 100:
        assert time.monotonic() < deadline, f"{len(mine)} of 100 verdicts published"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    mine = [v for v in verdicts_in(jsonl, "burst") if v["part_id"].startswith("b-")]
    assert sorted(v["part_id"] for v in mine) == parts  # each part exactly once
    assert {v["id"] for v in mine} == {v["id"] for v in verdicts}


# --- 5. a model swap during an inspection ----------------------------------------------------------------
async def test_a_model_swap_during_an_inspection_gives_one_verdict_of_one_model(
    tmp_path: Path, start_server: Any, demo_dir: Path, rtsp: Callable[..., RtspServer]
) -> None:
    other = tmp_path / "other-model"
    shutil.copytree(demo_dir, other)
    manifest = json.loads((other / "cvexport.manifest").read_text())
    (other / "cvexport.manifest").write_text(json.dumps({**manifest, "IterationId": "demo-b"}))
    camera_server = rtsp(fps=25)
    recorder = StampRecorder()
    frames, interval = 6, 300
    settings = station_settings(
        tmp_path,
        cameras=[camera("cam", camera_server.url)],
        stations=[station("st", ["cam"], frames=frames, min_interval_ms=interval, deadline_ms=15000)],
        events={"snapshot_dir": None},
    )
    server = start_server(demo_dir, settings, loader=recorder.load)
    jsonl = tmp_path / "events.jsonl"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await first_verdict(session, server.url, "st")
        sent = time.time()
        status, pending, _ = await post(
            session, f"{server.url}/stations/st/trigger?wait=false", {"partId": "swap-1"}
        )
        assert status == 202, pending
        await asyncio.sleep(0.5)  # a frame or two in, the model changes
        async with session.put(
            f"{server.url}/admin/model",
            json={"path": str(other)},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as response:
            assert response.status == 200, await response.text()
        swapped = time.time()  # the new model serves from here on
        status, verdict, _ = await post(session, f"{server.url}/stations/st/trigger", {"partId": "swap-1"})
        assert status == 200, verdict
        # after the swap, a new part is judged by the new model
        status, later, _ = await post(session, f"{server.url}/stations/st/trigger", {"partId": "swap-2"})
        assert status == 200 and later["model"]["id"] == "demo-b", later
    if verdict["verdict"] != "no_verdict":
        assert swapped < epoch(verdict["decided_at"]), "the swap did not happen during the inspection"
        assert verdict["model"]["id"] == "edge-runtime-demo", verdict
        check_frames(verdict, ["cam"], frames, interval)
        predicted = [p for p in recorder.since(sent) if p.at < epoch(verdict["decided_at"])]
        assert len(predicted) == frames and {p.model for p in predicted} == {verdict["model"]["id"]}, (
            predicted
        )
    await asyncio.sleep(0.5)
    assert [v["id"] for v in verdicts_in(jsonl, "st") if v["part_id"] == "swap-1"] == [verdict["id"]]


# --- 9. the `inspect` direct method, through the real IoT Hub SDK ---------------------------------------
@pytest.mark.filterwarnings(SDK_SOCKET_LEAK)
def test_inspect_direct_method_through_the_sdk(
    tmp_path: Path, start_server: Any, demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeHub(tmp_path / "hub", desired={}) as hub:
        hub.patch_connect(monkeypatch)
        settings = station_settings(
            tmp_path,
            cameras=[camera("belt", SYNTHETIC)],
            stations=[station("quick", ["belt"], deadline_ms=5000)],
            hub={"connection_string": hub.connection_string, "ca_file": hub.ca_file},
        )
        start_server(demo_dir, settings)
        hub.wait_for_reported(lambda r: "config" in r, timeout=20)
        deadline, n = time.monotonic() + 20, 0
        while True:  # until the camera streams: a no_verdict is remembered, so each try is a new part
            n += 1
            payload = {"station": "quick", "partId": f"m-{n}", "metadata": {"cell": 7}}
            status, verdict = hub.call_method("inspect", payload)
            if status != 200 or verdict["verdict"] != "no_verdict" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status == 200 and verdict["verdict"] in ("pass", "fail"), verdict
        assert verdict["source"] == "method" and verdict["station"] == "quick"
        assert verdict["metadata"] == {"cell": "7"}
        status, again = hub.call_method("inspect", {"station": "quick", "partId": verdict["part_id"]})
        assert status == 200 and again["id"] == verdict["id"]
        status, body = hub.call_method("inspect", {"station": "nope", "partId": "m-2"})
        assert status == 404 and body["stations"] == ["quick"], body
        bad: list[object] = [{"station": "quick"}, {"station": "quick", "partId": ""}, {"partId": "m-3"}, []]
        for wrong in bad:
            status, body = hub.call_method("inspect", wrong)
            assert status == 400 and body["error"], (wrong, body)
        start_server.stop_all()
    collect_sdk_garbage()


# --- a part id with URL characters: its Location leads to its verdict -----------------------------------
async def test_the_location_of_a_part_id_with_url_characters_answers(
    tmp_path: Path, start_server: Any, demo_dir: Path
) -> None:
    settings = station_settings(
        tmp_path,
        cameras=[camera("belt", SYNTHETIC)],
        stations=[station("slow", ["belt"], frames=2, min_interval_ms=300, deadline_ms=5000)],
    )
    server = start_server(demo_dir, settings)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await first_verdict(session, server.url, "slow")
        for part_id in ("lot 7/part#3?x=1&y=%41", "ü-ß €", "../../stations"):
            status, pending, headers = await post(
                session, f"{server.url}/stations/slow/trigger?wait=false", {"partId": part_id}
            )
            assert status == 202, pending
            location = headers["Location"]
            deadline = time.monotonic() + 10
            while True:
                async with session.get(URL(server.url + location, encoded=True), headers=AUTH) as response:
                    status, body = response.status, await response.json()
                if status != 202 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert status == 200 and body["part_id"] == part_id, (part_id, location, status, body)
