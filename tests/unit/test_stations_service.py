"""The Stations part with fake cameras, inference and delivery: the verdict semantics a line relies on.

Frames are put into real FrameSlots (as a capture thread would); the fake model says "scratch" with
the probability written in the frame's first pixel, so each test decides what the camera shows."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_runtime.domain import FULL_FRAME, Frame, Prediction, Roi
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.inference.service import RoiPredictions
from edge_runtime.settings import DefectSettings, StationSettings, TriggerSettings
from edge_runtime.sources.frame_slot import FrameSlot
from edge_runtime.stations.service import Stations, StationsConfig
from edge_runtime.stations.triggers import NotAccepting, UnknownStation
from edge_runtime.stations.verdict import NoVerdictReason, Trigger, Verdict, VerdictKind


def model(name: str) -> Any:
    return SimpleNamespace(spec=SimpleNamespace(model_id=name, sha1=f"sha-{name}"))


class FakeInference:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.serving: Any = model("m1")
        self.delay_s = delay_s
        self.calls: list[tuple[int, str]] = []  # (frame sequence, model id)
        self.fail = False
        self.loaded = asyncio.Event()

    async def first_predictor(self) -> Any:
        await self.loaded.wait()
        return self.serving

    def load(self, name: str) -> None:
        self.serving = model(name)
        self.loaded.set()

    async def predict_rois(
        self, frame: Frame, rois: tuple[Roi, ...], predictor: Any = None
    ) -> RoiPredictions:
        predictor = predictor or self.serving
        self.calls.append((frame.sequence, predictor.spec.model_id))
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("backend exploded")
        p = float(frame.image[0, 0, 0]) / 255
        return [(roi, (Prediction("scratch", p), Prediction("ok", 1 - p))) for roi in rois or (FULL_FRAME,)]

    async def offload(self, fn: Any, *args: object) -> Any:
        return fn(*args)


class FakeCameras:
    def __init__(self, *ids: str) -> None:
        self.slots = {i: FrameSlot() for i in ids}
        self.sequence = 0

    def frame_slot(self, camera_id: str) -> FrameSlot:
        return self.slots[camera_id]

    def rois(self, camera_id: str) -> tuple[Roi, ...]:
        return ()

    def show(self, camera_id: str, scratch: float, captured_at: float | None = None) -> Frame:
        self.sequence += 1
        image = np.full((8, 8, 3), round(scratch * 255), np.uint8)
        # Timed by the camera's own (RTCP) clock: no margin applies (one test below checks the others).
        frame = Frame(image, time.time() if captured_at is None else captured_at, self.sequence, "rtcp")
        self.slots[camera_id].put(frame)
        return frame


class FakeDelivery:
    def __init__(self, snapshots: SnapshotStore | None = None) -> None:
        self.snapshots = snapshots
        self.published: list[Any] = []

    async def publish(self, event: Any) -> None:
        self.published.append(event)


def station(**overrides: Any) -> StationSettings:
    base: dict[str, Any] = {
        "id": "s1",
        "cameras": ["cam"],
        "defects": [{"tag": "scratch", "min_probability": 0.5}],
        "deadline_ms": 1000,
    }
    return StationSettings.model_validate(base | overrides)


def make(
    *stations: StationSettings, remember: int = 100, **fakes: Any
) -> tuple[Stations, FakeCameras, Any, Any]:
    cameras = fakes.get("cameras") or FakeCameras("cam")
    inference = fakes.get("inference") or FakeInference()
    delivery = fakes.get("delivery") or FakeDelivery()
    config = StationsConfig(stations or (station(),), TriggerSettings(remember_parts=remember))
    return Stations(config, inference, cameras, delivery), cameras, inference, delivery


def trigger(part: str, station_id: str = "s1", at: float | None = None, **kw: Any) -> Trigger:
    return Trigger(station_id, part, time.time() if at is None else at, "test", **kw)


async def feed(cameras: FakeCameras, camera: str, scratch: float, every_s: float, count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(every_s)
        cameras.show(camera, scratch)


async def settled(stations: Stations, delivery: FakeDelivery, count: int) -> None:
    """Publishing follows the answer in the background: wait until `count` records are out."""
    for _ in range(200):
        if len(delivery.published) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(delivery.published)} published, expected {count}")


async def test_a_clean_part_passes_on_frames_captured_after_the_trigger() -> None:
    stations, cameras, _, delivery = make(station(frames=2))
    async with stations:
        cameras.show("cam", 0.9)  # an old frame showing a scratch: must not be used
        t = trigger("p1")
        feeder = asyncio.create_task(feed(cameras, "cam", 0.1, 0.02, 3))
        verdict = await stations.inspect(t)
        await feeder
        await settled(stations, delivery, 1)
    assert verdict.verdict is VerdictKind.PASS and verdict.reason is None
    assert len(verdict.frames) == 2
    assert all(f.captured_at > t.received_at for f in verdict.frames)
    assert verdict.model_id == "m1" and verdict.part_id == "p1"
    assert delivery.published == [verdict]


async def test_a_scratch_fails_the_part_with_the_defect_that_decided_it() -> None:
    stations, cameras, _, _ = make(station(frames=3, defects=[{"tag": "scratch", "votes": 2}]))
    async with stations:
        asyncio.get_running_loop().call_later(0.02, cameras.show, "cam", 0.8)
        asyncio.get_running_loop().call_later(0.04, cameras.show, "cam", 0.1)
        asyncio.get_running_loop().call_later(0.06, cameras.show, "cam", 0.7)
        verdict = await stations.inspect(trigger("p1"))
    assert verdict.verdict is VerdictKind.FAIL
    (defect,) = verdict.defects
    assert (defect.tag, defect.votes, defect.needed, defect.camera) == ("scratch", 2, 2, "cam")
    assert defect.probability == pytest.approx(0.8, abs=0.01)


async def test_k_of_n_one_hit_is_not_enough_when_two_are_needed() -> None:
    stations, cameras, _, _ = make(station(frames=3, defects=[{"tag": "scratch", "votes": 2}]))
    async with stations:
        feeder = asyncio.create_task(feed(cameras, "cam", 0.1, 0.02, 2))
        asyncio.get_running_loop().call_later(0.005, cameras.show, "cam", 0.9)
        verdict = await stations.inspect(trigger("p1"))
        await feeder
    assert verdict.verdict is VerdictKind.PASS


async def test_min_interval_spaces_the_frames() -> None:
    stations, cameras, _, _ = make(station(frames=3, min_interval_ms=50))
    async with stations:
        feeder = asyncio.create_task(feed(cameras, "cam", 0.0, 0.01, 40))
        verdict = await stations.inspect(trigger("p1"))
        feeder.cancel()
    times = [f.captured_at for f in verdict.frames]
    assert len(times) == 3
    assert all(b - a >= 0.05 - 1e-6 for a, b in itertools.pairwise(times))


async def test_a_stalled_camera_gives_no_verdict_in_time_never_a_pass() -> None:
    stations, cameras, _, delivery = make(station(deadline_ms=200))
    async with stations:
        cameras.show("cam", 0.0)  # the last frame before the stall
        started = time.monotonic()
        verdict = await stations.inspect(trigger("p1"))
        took = time.monotonic() - started
        await settled(stations, delivery, 1)
    assert verdict.verdict is VerdictKind.NO_VERDICT
    assert verdict.reason is NoVerdictReason.CAMERA_STALLED
    assert 0.15 < took < 0.5
    assert "cam" in verdict.detail


async def test_frames_older_than_the_trigger_make_the_camera_stale() -> None:
    stations, cameras, _, _ = make(station(deadline_ms=200))
    async with stations:
        lagging = asyncio.create_task(_lagging(cameras))
        verdict = await stations.inspect(trigger("p1"))
        lagging.cancel()
    assert verdict.verdict is VerdictKind.NO_VERDICT
    assert verdict.reason is NoVerdictReason.CAMERA_STALE


async def _lagging(cameras: FakeCameras) -> None:
    """A stream whose frames were all captured 5 s ago (a buffer draining)."""
    while True:
        await asyncio.sleep(0.02)
        cameras.show("cam", 0.0, captured_at=time.time() - 5)


async def test_a_plc_time_lets_in_a_frame_captured_between_the_plc_and_arrival() -> None:
    stations, cameras, _, _ = make()
    async with stations:
        now = time.time()
        cameras.show("cam", 0.0, captured_at=now - 0.2)
        verdict = await stations.inspect(trigger("p1", at=now, plc_time=now - 0.3))
    assert verdict.verdict is VerdictKind.PASS
    assert verdict.frames[0].captured_at == pytest.approx(now - 0.2)


async def test_a_plc_clock_far_behind_cannot_let_old_frames_in() -> None:
    stations, cameras, _, _ = make(station(deadline_ms=150))
    async with stations:
        now = time.time()
        cameras.show("cam", 0.0, captured_at=now - 3)
        verdict = await stations.inspect(trigger("p1", at=now, plc_time=now - 60))
    assert verdict.reason is NoVerdictReason.CAMERA_STALLED


async def test_no_model_within_the_deadline_gives_model_not_ready() -> None:
    inference = FakeInference()
    inference.serving = None
    stations, cameras, _, _ = make(station(deadline_ms=150), inference=inference)
    async with stations:
        asyncio.get_running_loop().call_later(0.01, cameras.show, "cam", 0.0)
        verdict = await stations.inspect(trigger("p1"))
    assert verdict.reason is NoVerdictReason.MODEL_NOT_READY
    assert verdict.model_id is None


async def test_a_part_triggered_before_the_model_loads_waits_for_it() -> None:
    inference = FakeInference()
    inference.serving = None
    stations, cameras, _, _ = make(inference=inference)
    async with stations:
        asyncio.get_running_loop().call_later(0.05, inference.load, "late")
        asyncio.get_running_loop().call_later(0.08, cameras.show, "cam", 0.0)
        verdict = await stations.inspect(trigger("p1"))
    assert verdict.verdict is VerdictKind.PASS and verdict.model_id == "late"


async def test_a_young_pts_clock_and_the_margin_keep_early_frames_out() -> None:
    stations, cameras, _, _ = make(station(deadline_ms=400, clock_margin_ms=100))
    async with stations:
        t = trigger("p1")
        slot = cameras.slots["cam"]
        # captured after the trigger by an unsettled pts anchor: not trusted
        slot.put(Frame(np.zeros((8, 8, 3), np.uint8), t.received_at + 0.2, 90, "pts", settled=False))
        # settled pts, but within the margin: may have been captured before the trigger
        slot.put(Frame(np.zeros((8, 8, 3), np.uint8), t.received_at + 0.05, 91, "pts"))
        # the camera's own RTCP clock needs no margin
        loop = asyncio.get_running_loop()
        loop.call_later(
            0.02, slot.put, Frame(np.zeros((8, 8, 3), np.uint8), t.received_at + 0.01, 92, "rtcp")
        )
        verdict = await stations.inspect(t)
    assert [f.sequence for f in verdict.frames] == [92]


async def test_slow_inference_runs_into_the_deadline() -> None:
    stations, cameras, _, _ = make(station(deadline_ms=100), inference=FakeInference(delay_s=0.5))
    async with stations:
        asyncio.get_running_loop().call_later(0.01, cameras.show, "cam", 0.0)
        verdict = await stations.inspect(trigger("p1"))
    assert verdict.reason is NoVerdictReason.DEADLINE


async def test_an_inference_error_is_a_reason_not_a_crash() -> None:
    inference = FakeInference()
    inference.fail = True
    stations, cameras, _, _ = make(inference=inference)
    async with stations:
        asyncio.get_running_loop().call_later(0.01, cameras.show, "cam", 0.0)
        verdict = await stations.inspect(trigger("p1"))
    assert verdict.reason is NoVerdictReason.INFERENCE_ERROR
    assert "backend exploded" in verdict.detail


async def test_a_model_swap_mid_part_keeps_one_model_for_every_frame() -> None:
    inference = FakeInference()
    stations, cameras, _, _ = make(station(frames=3), inference=inference)
    async with stations:

        async def swap_then_feed() -> None:
            await feed(cameras, "cam", 0.0, 0.02, 1)
            await asyncio.sleep(0.01)
            inference.serving = model("m2")
            await feed(cameras, "cam", 0.0, 0.02, 2)

        feeder = asyncio.create_task(swap_then_feed())
        verdict = await stations.inspect(trigger("p1"))
        await feeder
    assert verdict.model_id == "m1"
    assert {m for _, m in inference.calls} == {"m1"}


async def test_a_repeated_part_id_gets_the_same_verdict_and_is_published_once() -> None:
    stations, cameras, _, delivery = make()
    async with stations:
        asyncio.get_running_loop().call_later(0.02, cameras.show, "cam", 0.0)
        first, again = await asyncio.gather(stations.inspect(trigger("p1")), stations.inspect(trigger("p1")))
        later = await stations.inspect(trigger("p1"))
        await settled(stations, delivery, 1)
        await asyncio.sleep(0.05)
    assert first is again is later
    assert len(delivery.published) == 1


async def test_memory_of_parts_is_bounded() -> None:
    stations, cameras, _, _ = make(remember=3)
    async with stations:
        for n in range(5):
            asyncio.get_running_loop().call_later(0.01, cameras.show, "cam", 0.0)
            await stations.inspect(trigger(f"p{n}"))
        assert stations.recent("s1", "p0") is None
        assert stations.recent("s1", "p4") is not None


async def test_a_burst_of_100_triggers_gets_100_verdicts_sharing_the_frames() -> None:
    inference = FakeInference(delay_s=0.01)
    stations, cameras, _, delivery = make(station(frames=2, max_pending=500), inference=inference)
    async with stations:
        feeder = asyncio.create_task(feed(cameras, "cam", 0.0, 0.02, 10))
        verdicts = await asyncio.gather(*(stations.inspect(trigger(f"p{n}")) for n in range(100)))
        feeder.cancel()
        await settled(stations, delivery, 100)
    assert sorted(v.part_id for v in verdicts) == sorted(f"p{n}" for n in range(100))
    assert all(v.verdict is VerdictKind.PASS for v in verdicts)
    assert len({v.id for v in delivery.published}) == 100
    assert len(inference.calls) <= 4  # the burst waited on the same two frames: predicted once each


async def test_over_max_pending_a_part_gets_busy_not_silence() -> None:
    stations, cameras, _, _ = make(station(max_pending=2, deadline_ms=300))
    async with stations:
        futures = [stations.submit(trigger(f"p{n}")) for n in range(3)]
        busy = await futures[2]
        cameras.show("cam", 0.0)
        await asyncio.gather(*futures[:2])
    assert busy.reason is NoVerdictReason.BUSY


async def test_shutdown_gives_pending_parts_no_verdict_and_publishes_them() -> None:
    stations, _, _, delivery = make(station(deadline_ms=60_000))
    async with stations:
        futures = [stations.submit(trigger(f"p{n}")) for n in range(5)]
        await asyncio.sleep(0.02)
    verdicts: list[Verdict] = [f.result() for f in futures]
    assert {v.reason for v in verdicts} == {NoVerdictReason.SHUTDOWN}
    assert sorted(v.part_id for v in delivery.published) == [f"p{n}" for n in range(5)]
    with pytest.raises(NotAccepting):
        stations.submit(trigger("late"))


async def test_unknown_station_is_refused() -> None:
    stations, _, _, _ = make()
    async with stations:
        with pytest.raises(UnknownStation, match="known: s1"):
            stations.submit(trigger("p1", station_id="nope"))


async def test_every_camera_of_a_station_must_deliver_for_a_pass() -> None:
    cameras = FakeCameras("left", "right")
    stations, _, _, _ = make(station(cameras=["left", "right"], deadline_ms=200), cameras=cameras)
    async with stations:
        asyncio.get_running_loop().call_later(0.01, cameras.show, "left", 0.0)
        verdict = await stations.inspect(trigger("p1"))
    assert verdict.reason is NoVerdictReason.CAMERA_STALLED
    assert "right" in verdict.detail
    assert [f.camera for f in verdict.frames] == ["left"]  # what was seen is kept as evidence


async def test_snapshots_are_written_per_camera_and_linked(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, 100, 10**8)
    cameras = FakeCameras("left", "right")
    stations, _, _, delivery = make(
        station(cameras=["left", "right"]), cameras=cameras, delivery=FakeDelivery(store)
    )
    async with stations:
        asyncio.get_running_loop().call_later(0.01, cameras.show, "left", 0.9)
        asyncio.get_running_loop().call_later(0.01, cameras.show, "right", 0.0)
        verdict = await stations.inspect(trigger("p1"))
        await settled(stations, delivery, 1)
    assert verdict.verdict is VerdictKind.FAIL
    assert len(verdict.snapshots) == 2
    for url in verdict.snapshots:
        snapshot_id = url.rsplit("/", 1)[1].removesuffix(".jpg")
        assert store.read(snapshot_id) is not None


async def test_statuses_count_verdicts_by_kind() -> None:
    stations, cameras, _, _ = make(station(deadline_ms=100))
    async with stations:
        asyncio.get_running_loop().call_later(0.01, cameras.show, "cam", 0.9)
        await stations.inspect(trigger("p1"))
        await stations.inspect(trigger("p2"))  # no frame comes: no_verdict
        status = stations.statuses.get("s1")
    assert status is not None
    assert (status.parts, status.fails, status.no_verdicts, status.passes) == (2, 1, 1, 0)
    assert status.last is not None and status.last.part_id == "p2"


async def test_apply_adds_and_removes_stations() -> None:
    stations, _, _, _ = make()
    async with stations:
        new = StationsConfig((station(id="s2"),), TriggerSettings())
        changes = await stations.apply(new)
        assert changes == ["station s1 removed", "station s2 added"]
        assert stations.ids == ["s2"]
        assert set(stations.statuses.all()) == {"s2"}


def test_a_defect_setting_carries_its_defaults() -> None:
    assert DefectSettings(tag="x").votes == 1


async def test_a_pending_part_is_never_forgotten_so_a_repeat_joins_it() -> None:
    stations, cameras, _, delivery = make(station(max_pending=10), remember=2)
    async with stations:
        futures = [stations.submit(trigger(f"p{n}")) for n in range(4)]  # 4 pending, memory of 2
        assert stations.submit(trigger("p0")) is futures[0]
        cameras.show("cam", 0.0)
        await asyncio.gather(*futures)
        await settled(stations, delivery, 4)
        assert len({v.part_id for v in delivery.published}) == 4 == len(delivery.published)
        stations.submit(trigger("p9")).cancel()  # settled parts are forgotten again, least recent first
        assert stations.recent("s1", "p1") is None
        assert stations.recent("s1", "p0") is not None  # its repeat made it recent


async def test_parts_sharing_a_frame_share_its_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, 100, 10**8)
    stations, cameras, _, delivery = make(station(max_pending=50), delivery=FakeDelivery(store))
    async with stations:
        asyncio.get_running_loop().call_later(0.02, cameras.show, "cam", 0.0)
        verdicts = await asyncio.gather(*(stations.inspect(trigger(f"p{n}")) for n in range(20)))
        await settled(stations, delivery, 20)
    assert len({v.snapshots for v in verdicts}) == 1
    assert len(list(tmp_path.glob("*.jpg"))) == 1
