"""The events layer around the rules: ids, snapshots, the dispatcher, the JSONL sink, ROI mapping,
Event.to_dict, camera / rule / ROI settings validation and URL redaction."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import REGISTRY

from edge_runtime.backends.providers import parse_device
from edge_runtime.backoff import Backoff
from edge_runtime.demo.model import BELT_GREY, build_demo_export
from edge_runtime.domain import (
    FULL_FRAME,
    BoundingBox,
    Event,
    EventKind,
    Frame,
    Prediction,
    PredictionResult,
    Roi,
    StageTimings,
    Task,
)
from edge_runtime.engine import Predictor, PredictorOptions
from edge_runtime.errors import ConfigError
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits
from edge_runtime.events.ids import EVENT_ID_PATTERN, new_event_id
from edge_runtime.events.outbox import Outbox, OutboxRecord
from edge_runtime.events.snapshots import Drawing, SnapshotStore, merge_overlapping
from edge_runtime.model.imaging import ImageLimits
from edge_runtime.model.loader import LoadOptions
from edge_runtime.settings import DeliverySettings, RoiSettings, RuleSettings, build_settings
from edge_runtime.sinks.jsonl import JsonlSink
from edge_runtime.sources.sampler import predict_rois
from edge_runtime.status import SinkStatus

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_event(
    n: int = 0,
    kind: EventKind = EventKind.STARTED,
    camera: str = "cam-1",
    boxes: tuple[BoundingBox, ...] = (BoundingBox(0.1, 0.2, 0.3, 0.4),),
    snapshot: str | None = None,
) -> Event:
    captured_at = T0 + n
    return Event(
        id=new_event_id(captured_at),
        kind=kind,
        camera=camera,
        roi="full",
        tag="stain",
        probability=0.9,
        boxes=boxes,
        captured_at=captured_at,
        model_id="demo",
        model_sha1="abc123",
        snapshot=snapshot,
    )


def ulid_millis(event_id: str) -> int:
    value = 0
    for char in event_id[:10]:
        value = value * 32 + CROCKFORD.index(char)
    return value


# --------------------------------------------------------------------------------------------------
# Event ids


def test_event_id_shape() -> None:
    event_id = new_event_id()
    assert len(event_id) == 26
    assert EVENT_ID_PATTERN.fullmatch(event_id)
    assert set(event_id) <= set(CROCKFORD)


def test_event_ids_are_unique() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    same_ms = [new_event_id(T0) for _ in range(10_000)]  # the random part alone keeps them apart
    assert len(set(same_ms)) == 10_000


def test_event_ids_sort_by_time() -> None:
    # Whole milliseconds + 0.5 ms: no float rounding can put two of them in the same millisecond.
    times = [(T0 * 1000 + i * 7 + 0.5) / 1000 for i in range(2000)]
    ids = [new_event_id(t) for t in times]
    assert sorted(ids) == ids
    assert ids[::-1] != sorted(ids[::-1])


def test_event_id_encodes_the_millisecond() -> None:
    assert ulid_millis(new_event_id(T0 + 0.1234)) == int(T0 * 1000) + 123
    assert ulid_millis(new_event_id(0.0)) == 0


# --------------------------------------------------------------------------------------------------
# Snapshots


STARTED = Drawing("started", "stain", 0.9)


def grey_frame(width: int = 200, height: int = 100, value: int = 128) -> NDArray[np.uint8]:
    return np.full((height, width, 3), value, np.uint8)


def decode(path: Path) -> NDArray[np.uint8]:
    import cv2

    data = np.frombuffer(path.read_bytes(), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a decodable image"
    return np.asarray(image, np.uint8)


def is_red(pixel: NDArray[np.uint8]) -> bool:
    b, g, r = (int(v) for v in pixel)
    return r > 150 and r - g > 60 and r - b > 60


def test_snapshot_is_a_jpeg_with_the_box_drawn_in_red(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps", max_count=10, max_bytes=10_000_000)
    event_id = new_event_id()
    # 200 x 100 frame, box from (50, 20) to (150, 80) in pixels.
    path = store.save(
        event_id, grey_frame(), Drawing("started", "stain", 0.9, (BoundingBox(0.25, 0.2, 0.5, 0.6),))
    )
    assert path == tmp_path / "snaps" / f"{event_id}.jpg"
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG SOI marker
    image = decode(path)
    assert image.shape == (100, 200, 3)
    assert all(is_red(image[y, 50]) for y in range(35, 75, 5)), "left edge"
    assert all(is_red(image[y, 150]) for y in range(35, 75, 5)), "right edge"
    assert all(is_red(image[80, x]) for x in range(60, 140, 10)), "bottom edge"
    assert not is_red(image[50, 100]) and abs(int(image[50, 100, 2]) - 128) < 12, "inside stays grey"
    assert not is_red(image[95, 195]), "outside stays grey"
    assert list((tmp_path / "snaps").iterdir()) == [path], "no temporary file left behind"


def test_an_ended_snapshot_is_the_current_frame_with_a_banner_only(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=10, max_bytes=10_000_000)
    image = decode(store.save(new_event_id(), grey_frame(640, 480, 90), Drawing("ended", "stain", 0.1)))
    assert image.shape == (480, 640, 3)
    below_banner = image[60:]
    assert np.abs(below_banner.astype(int) - 90).max() < 6, "no stale boxes: the frame as it is"
    assert np.abs(image[:30, :100].astype(int) - 90).max() > 50, "the banner says what ended"


def test_overlapping_boxes_are_drawn_as_one(tmp_path: Path) -> None:
    cells = [BoundingBox(0.30 + 0.05 * i, 0.4, 0.06, 0.1) for i in range(4)]  # a detector's neighbours
    assert merge_overlapping(cells) == [BoundingBox(0.30, 0.4, pytest.approx(0.21), pytest.approx(0.1))]
    apart = [BoundingBox(0.1, 0.1, 0.1, 0.1), BoundingBox(0.6, 0.6, 0.1, 0.1)]
    assert merge_overlapping(apart) == apart


def test_the_roi_is_outlined(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=10, max_bytes=10_000_000)
    roi = BoundingBox(0.5, 0.5, 0.25, 0.25)
    image = decode(
        store.save(new_event_id(), grey_frame(400, 400, 90), Drawing("started", "x", 0.9, (), roi))
    )
    b, g, r = (int(v) for v in image[280, 201])  # left edge of the ROI, below its name
    assert b > 200 and g > 150 and r < 80, (b, g, r)
    assert np.abs(image[350, 250].astype(int) - 90).max() < 6, "inside the ROI stays as it was"


def test_the_event_link_is_absolute_with_a_public_url(tmp_path: Path) -> None:
    assert SnapshotStore(tmp_path, 1, 1).url_for("E1") == "/snapshots/E1.jpg"
    store = SnapshotStore(tmp_path, 1, 1, "https://edge-3.plant/")
    assert store.url_for("E1") == "https://edge-3.plant/snapshots/E1.jpg"


def test_snapshot_count_cap_removes_the_oldest_first(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=3, max_bytes=10_000_000)
    ids = [new_event_id(T0 + i) for i in range(6)]
    for event_id in ids:
        store.save(event_id, grey_frame(), Drawing("started", "stain", 0.9))
    assert sorted(p.stem for p in tmp_path.glob("*.jpg")) == ids[3:]
    assert store.path_for(ids[0]) is None
    assert store.path_for(ids[5]) == tmp_path / f"{ids[5]}.jpg"


def test_snapshot_byte_cap_removes_the_oldest_first(tmp_path: Path) -> None:
    probe = SnapshotStore(tmp_path / "probe", max_count=10, max_bytes=10_000_000)
    size = (
        probe.save(new_event_id(), grey_frame(), Drawing("started", "stain", 0.9)).stat().st_size
    )  # same frame: same size
    store = SnapshotStore(tmp_path / "snaps", max_count=100, max_bytes=2 * size + size // 2)
    ids = [new_event_id(T0 + i) for i in range(5)]
    for event_id in ids:
        store.save(event_id, grey_frame(), Drawing("started", "stain", 0.9))
    kept = sorted((tmp_path / "snaps").glob("*.jpg"))
    assert [p.stem for p in kept] == ids[3:]
    assert sum(p.stat().st_size for p in kept) <= store.max_bytes


def test_snapshot_caps_hold_under_concurrent_saves(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=5, max_bytes=10_000_000)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(10):
                store.save(
                    new_event_id(T0 + offset * 100 + i), grey_frame(), Drawing("started", "stain", 0.9)
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(list(tmp_path.glob("*.jpg"))) == 5
    assert list(tmp_path.glob("*.tmp")) == []


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "..",
        "../01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",  # 27
        "01arz3ndektsv4rrffq69g5fav",  # lower case
        "01ARZ3NDEKTSV4RRFFQ69G5FAI",  # I is not Crockford base32
        "01ARZ3NDEKTSV4RRFFQ69G5F/V",
        "",
    ],
)
def test_path_for_rejects_non_ulid_names(tmp_path: Path, name: str) -> None:
    store = SnapshotStore(tmp_path / "snaps", max_count=10, max_bytes=10_000_000)
    (tmp_path / "x.jpg").write_bytes(b"secret")  # what "../x" would reach
    assert store.path_for(name) is None


def test_path_for_unknown_id_is_none(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=10, max_bytes=10_000_000)
    assert store.path_for(new_event_id()) is None


# --------------------------------------------------------------------------------------------------
# Dispatcher (outbox -> one delivery loop per sink; the details are in test_delivery.py)


class RecordingSink:
    """A sink for the dispatcher: confirms a message by returning, fails `fail_times` attempts first."""

    def __init__(self, name: str, fail_times: int = 0, delay: float = 0.0) -> None:
        self.name = name
        self.delivery = DeliverySettings()
        self.fail_times = fail_times
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()
        self.attempts = 0
        self.received: list[OutboxRecord] = []
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def publish(self, record: OutboxRecord) -> None:
        self.attempts += 1
        await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.attempts <= self.fail_times:
            raise ConnectionError(f"{self.name} is down")
        self.received.append(record)

    def status(self) -> SinkStatus:
        return SinkStatus(self.name, None)

    async def close(self) -> None:
        self.closed = True

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.received]


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def fast_retries() -> Backoff:
    return Backoff(0.01, 0.02, jitter=0.0)


async def test_dispatcher_delivers_in_order_to_every_sink_and_counts(outbox: Outbox) -> None:
    a, b = RecordingSink("deliver-a"), RecordingSink("deliver-b")
    dispatcher = Dispatcher(outbox, [a, b])
    await dispatcher.start()
    assert a.started and b.started
    events = [make_event(i, camera="cam-deliver") for i in range(5)]
    started_before = sample("edge_runtime_events_total", camera="cam-deliver", tag="stain", kind="started")
    sent_before = sample("edge_runtime_sink_sent_total", sink="deliver-a")
    for event in events:
        await dispatcher.publish(event)
    await wait_for(lambda: len(a.received) == 5 and len(b.received) == 5)
    assert a.ids == b.ids == [e.id for e in events]
    assert [r.body for r in a.received] == [e.to_dict() for e in events]
    assert all(r.type == "event" for r in a.received + b.received)
    await wait_for(lambda: sample("edge_runtime_sink_sent_total", sink="deliver-a") == sent_before + 5)
    assert (
        sample("edge_runtime_events_total", camera="cam-deliver", tag="stain", kind="started")
        == started_before + 5
    )
    await dispatcher.close()
    assert a.closed and b.closed
    assert await outbox.pending_by_sink() == {}


async def test_dispatcher_retries_after_a_sink_failure(outbox: Outbox) -> None:
    sink = RecordingSink("retry", fail_times=2)
    failed_before = sample("edge_runtime_sink_failed_total", sink="retry")
    dispatcher = Dispatcher(outbox, [sink], retry=fast_retries)
    await dispatcher.start()
    first, second = make_event(0), make_event(1)
    await dispatcher.publish(first)
    await dispatcher.publish(second)
    await wait_for(lambda: len(sink.received) == 2)
    assert sink.ids == [first.id, second.id]  # the failed event is retried, not skipped
    assert sink.attempts == 4
    assert sample("edge_runtime_sink_failed_total", sink="retry") == failed_before + 2
    await dispatcher.close()
    assert await outbox.pending_by_sink() == {}


async def test_a_failing_sink_does_not_hold_up_the_others(outbox: Outbox) -> None:
    down, up = RecordingSink("always-down", fail_times=10**9), RecordingSink("healthy")
    dispatcher = Dispatcher(outbox, [down, up], retry=fast_retries)
    await dispatcher.start()
    events = [make_event(i) for i in range(3)]
    for event in events:
        await dispatcher.publish(event)
    await wait_for(lambda: len(up.received) == 3 and down.attempts >= 3)  # still retrying the first
    assert up.ids == [e.id for e in events] and down.received == []
    await dispatcher.close(drain_timeout=0.1)
    assert down.closed and up.closed
    assert await outbox.pending_by_sink() == {"always-down": 3}, "kept on disk for the next run"


async def test_dispatcher_drops_the_oldest_when_the_outbox_is_full(outbox: Outbox) -> None:
    sink = RecordingSink("drop-unstarted")
    dispatcher = Dispatcher(outbox, [sink], OutboxLimits(max_events=2))
    events = [make_event(i) for i in range(5)]
    before = sample("edge_runtime_sink_dropped_total", sink="drop-unstarted", reason="full")
    for event in events:
        await dispatcher.publish(event)  # nothing drains yet: the outbox keeps the newest two
    assert sample("edge_runtime_sink_dropped_total", sink="drop-unstarted", reason="full") == before + 3
    await dispatcher.start()
    await wait_for(lambda: len(sink.received) == 2)
    assert sink.ids == [e.id for e in events[3:]]
    await dispatcher.close()


async def test_a_slow_sink_keeps_the_newest_and_finishes_the_event_in_flight(outbox: Outbox) -> None:
    sink = RecordingSink("drop-slow")
    sink.gate.clear()  # the sink hangs on its first event
    dispatcher = Dispatcher(outbox, [sink], OutboxLimits(max_events=2))
    await dispatcher.start()
    events = [make_event(i) for i in range(5)]
    before = sample("edge_runtime_sink_dropped_total", sink="drop-slow", reason="full")
    await dispatcher.publish(events[0])
    await wait_for(lambda: sink.attempts == 1)  # events[0] is in flight
    for event in events[1:]:
        await dispatcher.publish(event)  # never waits for the sink
    assert sample("edge_runtime_sink_dropped_total", sink="drop-slow", reason="full") >= before + 2
    sink.gate.set()
    await wait_for(lambda: len(sink.received) == 3)
    assert sink.ids == [events[0].id, events[3].id, events[4].id]
    await dispatcher.close()
    assert await outbox.pending_by_sink() == {}


async def test_close_gives_stored_events_a_chance_to_go_out(outbox: Outbox) -> None:
    sink = RecordingSink("close-queued")
    dispatcher = Dispatcher(outbox, [sink])
    events = [make_event(i) for i in range(3)]
    for event in events:
        await dispatcher.publish(event)
    await dispatcher.start()
    await dispatcher.close(drain_timeout=2.0)
    assert sink.ids == [e.id for e in events]
    assert sink.closed


async def test_close_waits_for_the_event_in_flight(outbox: Outbox) -> None:
    sink = RecordingSink("close-in-flight", delay=0.2)
    dispatcher = Dispatcher(outbox, [sink])
    await dispatcher.start()
    event = make_event(0)
    await dispatcher.publish(event)
    await dispatcher.close(drain_timeout=2.0)  # 2 s is plenty for a 0.2 s delivery
    assert sink.ids == [event.id]
    assert await outbox.pending_by_sink() == {}


# --------------------------------------------------------------------------------------------------
# JSONL sink and Event.to_dict

EVENT_KEYS = {
    "id",
    "kind",
    "camera",
    "roi",
    "tag",
    "probability",
    "boxes",
    "captured_at",
    "model",
    "snapshot",
}


def test_event_to_dict() -> None:
    box = BoundingBox(0.123456789, 0.5, 0.25, 0.0000004)
    event = Event(
        id=new_event_id(T0),
        kind=EventKind.ENDED,
        camera="line1",
        roi="station-a",
        tag="scratch",
        probability=0.123456789123,
        boxes=(box,),
        captured_at=T0 + 0.25,
        model_id="iteration-7",
        model_sha1="f" * 40,
        snapshot="/snapshots/x.jpg",
    )
    body = event.to_dict()
    assert set(body) == EVENT_KEYS
    assert body["id"] == event.id
    assert body["kind"] == "ended"
    assert (body["camera"], body["roi"], body["tag"]) == ("line1", "station-a", "scratch")
    assert body["probability"] == 0.12345679
    assert body["boxes"] == [{"left": 0.123457, "top": 0.5, "width": 0.25, "height": 0.0}]
    assert body["captured_at"] == "2023-11-14T22:13:20.250+00:00"
    parsed = datetime.fromisoformat(str(body["captured_at"]))
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert parsed == datetime.fromtimestamp(T0 + 0.25, UTC)
    assert body["model"] == {"id": "iteration-7", "sha1": "f" * 40}
    assert body["snapshot"] == "/snapshots/x.jpg"
    assert json.loads(json.dumps(body)) == body


def test_event_to_dict_classification_has_no_boxes_and_no_snapshot() -> None:
    body = make_event(boxes=()).to_dict()
    assert body["boxes"] == [] and body["snapshot"] is None and body["kind"] == "started"


def event_record(event: Event, seq: int = 1) -> OutboxRecord:
    return OutboxRecord(seq, "jsonl", "event", event.id, event.captured_at, 0, event.to_dict())


async def test_jsonl_sink_writes_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "events.jsonl"
    sink = JsonlSink(path)
    assert sink.name == "jsonl" and sink.delivery.send_events and sink.delivery.summary_interval_s == 0
    assert sink.status().to_dict() == {"path": str(path)}
    assert sink.status() == SinkStatus("jsonl", None, target=("path", str(path)))
    events = [
        make_event(0, snapshot="/snapshots/a.jpg"),
        make_event(1, kind=EventKind.ENDED, boxes=()),
    ]
    try:
        await sink.start()
        for seq, event in enumerate(events, 1):
            await sink.publish(event_record(event, seq))
        # Flushed after every line: readable while the sink is still open (tail -f).
        assert len(path.read_text().splitlines()) == 2
    finally:
        await sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]
    assert all("\n" not in line and line.startswith("{") for line in lines)
    # A restarted sink appends.
    again = JsonlSink(path)
    try:
        await again.start()
        await again.publish(event_record(make_event(2)))
    finally:
        await again.close()
    assert len(path.read_text().splitlines()) == 3


async def test_jsonl_sink_behind_the_dispatcher(tmp_path: Path, outbox: Outbox) -> None:
    path = tmp_path / "events.jsonl"
    dispatcher = Dispatcher(outbox, [JsonlSink(path)])
    await dispatcher.start()
    events = [make_event(i) for i in range(20)]
    for event in events:
        await dispatcher.publish(event)
    await wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 20)
    await dispatcher.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]
    assert await outbox.pending_by_sink() == {}


# --------------------------------------------------------------------------------------------------
# ROI mapping


def test_roi_to_frame_hand_computed() -> None:
    roi = Roi("r", 0.5, 0.25, 0.5, 0.5)
    mapped = roi.to_frame(BoundingBox(0.2, 0.4, 0.5, 0.25))
    assert mapped.left == pytest.approx(0.6)  # 0.5 + 0.2 * 0.5
    assert mapped.top == pytest.approx(0.45)  # 0.25 + 0.4 * 0.5
    assert mapped.width == pytest.approx(0.25)
    assert mapped.height == pytest.approx(0.125)
    whole = roi.to_frame(BoundingBox(0.0, 0.0, 1.0, 1.0))
    assert (whole.left, whole.top, whole.width, whole.height) == pytest.approx((0.5, 0.25, 0.5, 0.5))
    other = Roi("s", 0.1, 0.2, 0.3, 0.4).to_frame(BoundingBox(0.5, 0.5, 0.5, 0.5))
    assert (other.left, other.top, other.width, other.height) == pytest.approx((0.25, 0.4, 0.15, 0.2))


def test_full_frame_to_frame_is_the_identity() -> None:
    box = BoundingBox(0.1, 0.2, 0.3, 0.4)
    assert FULL_FRAME.to_frame(box) == box
    assert (FULL_FRAME.x, FULL_FRAME.y, FULL_FRAME.width, FULL_FRAME.height) == (0.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("roi", "size", "expected"),
    [
        (Roi("q", 0.5, 0.5, 0.5, 0.5), (640, 480), (320, 240, 640, 480)),
        (FULL_FRAME, (640, 480), (0, 0, 640, 480)),
        (Roi("r", 0.1, 0.2, 0.3, 0.4), (101, 51), (10, 10, 40, 31)),  # 10.1, 10.2, 40.4, 30.6 rounded
        (Roi("s", 0.0, 0.0, 0.33, 0.66), (10, 10), (0, 0, 3, 7)),  # 3.3 -> 3, 6.6 -> 7
        (Roi("tiny", 0.5, 0.5, 0.001, 0.001), (100, 100), (50, 50, 51, 51)),  # at least 1 px
        (Roi("thin", 0.2, 0.0, 0.0001, 1.0), (640, 480), (128, 0, 129, 480)),
    ],
    ids=["quadrant", "full", "rounding", "rounding-2", "min-1px", "thin"],
)
def test_roi_pixels(roi: Roi, size: tuple[int, int], expected: tuple[int, int, int, int]) -> None:
    assert roi.pixels(*size) == expected


def test_roi_pixels_at_the_far_edge_is_still_one_pixel() -> None:
    RoiSettings(name="edge", x=0.999, y=0.0, width=0.001, height=1.0)  # a legal ROI
    x0, y0, x1, y1 = Roi("edge", 0.999, 0.0, 0.001, 1.0).pixels(100, 100)
    assert x1 - x0 >= 1 and y1 - y0 >= 1
    assert 0 <= x0 < x1 <= 100


class FakePredictor:
    """Records the crops it is given; answers one box covering the whole crop plus a classification."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def predict_frame(self, frame: NDArray[np.uint8]) -> PredictionResult:
        self.shapes.append(frame.shape)
        predictions = (
            Prediction("stain", 0.9, 0, BoundingBox(0.0, 0.0, 1.0, 1.0)),
            Prediction("glare", 0.4, None, None),
        )
        return PredictionResult(Task.DETECTION, predictions, (frame.shape[1], frame.shape[0]), StageTimings())


def test_predict_rois_crops_each_roi_and_maps_boxes_back() -> None:
    frame = Frame(np.zeros((480, 640, 3), np.uint8), T0, 1)
    rois = (FULL_FRAME, Roi("q", 0.5, 0.5, 0.5, 0.5), Roi("left", 0.0, 0.25, 0.25, 0.5))
    fake = FakePredictor()
    results = predict_rois(fake, frame, rois)  # type: ignore[arg-type]
    assert fake.shapes == [(480, 640, 3), (240, 320, 3), (240, 160, 3)]
    assert [roi for roi, _ in results] == list(rois)
    for roi, predictions in results:
        box, classification = predictions
        assert box.bounding_box == BoundingBox(roi.x, roi.y, roi.width, roi.height)
        assert (box.tag_name, box.probability, box.tag_id) == ("stain", 0.9, 0)
        assert classification == Prediction("glare", 0.4, None, None)  # passed through unchanged


@pytest.fixture(scope="module")
def demo_predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    folder = build_demo_export(tmp_path_factory.mktemp("demo") / "model")
    options = PredictorOptions(
        device=parse_device("cpu"), threads=1, load=LoadOptions(), limits=ImageLimits()
    )
    predictor = Predictor.load(folder, options)
    return predictor


def belt_with_stain(top: int, left: int, size: int = 96) -> NDArray[np.uint8]:
    image = np.full((480, 640, 3), BELT_GREY, np.uint8)
    image[top : top + size, left : left + size] = 20
    return image


QUADRANT = Roi("bottom-right", 0.5, 0.5, 0.5, 0.5)


def test_predict_rois_on_the_demo_model_finds_a_stain_inside_the_roi(demo_predictor: Predictor) -> None:
    top, left = 320, 400  # rows 320..416, columns 400..496: inside the bottom-right quadrant
    stain = (left / 640, top / 480, (left + 96) / 640, (top + 96) / 480)
    frame = Frame(belt_with_stain(top, left), T0, 1)
    [(roi, in_roi), (_, in_full)] = predict_rois(demo_predictor, frame, (QUADRANT, FULL_FRAME))
    assert roi is QUADRANT
    assert in_roi, "the stain inside the ROI was not found"
    assert in_full
    for prediction in in_roi:
        assert prediction.tag_name == "stain" and prediction.probability > 0.5
        box = prediction.bounding_box
        assert box is not None
        # Full-frame coordinates, inside the quadrant ...
        assert box.left >= 0.5 - 1e-6 and box.top >= 0.5 - 1e-6
        assert box.left + box.width <= 1.0 + 1e-6 and box.top + box.height <= 1.0 + 1e-6
        # ... and on the stain (its centre within the stain, give or take half a cell).
        cx, cy = box.left + box.width / 2, box.top + box.height / 2
        assert stain[0] - 0.05 <= cx <= stain[2] + 0.05, (cx, stain)
        assert stain[1] - 0.07 <= cy <= stain[3] + 0.07, (cy, stain)

    # The same stain seen on the whole frame lands in the same place.
    def centre(predictions: tuple[Prediction, ...]) -> tuple[float, float]:
        boxes = [p.bounding_box for p in predictions if p.bounding_box is not None]
        return (
            float(np.mean([b.left + b.width / 2 for b in boxes])),
            float(np.mean([b.top + b.height / 2 for b in boxes])),
        )

    assert centre(in_roi) == pytest.approx(centre(in_full), abs=0.05)
    assert centre(in_roi) == pytest.approx(((stain[0] + stain[2]) / 2, (stain[1] + stain[3]) / 2), abs=0.05)


def test_predict_rois_on_the_demo_model_ignores_a_stain_outside_the_roi(demo_predictor: Predictor) -> None:
    frame = Frame(belt_with_stain(40, 60), T0, 1)  # top-left quadrant
    [(_, in_roi), (_, in_full)] = predict_rois(demo_predictor, frame, (QUADRANT, FULL_FRAME))
    assert in_roi == ()
    assert in_full and all(p.bounding_box is not None and p.bounding_box.left < 0.5 for p in in_full)


def test_predict_rois_clean_belt_finds_nothing(demo_predictor: Predictor) -> None:
    frame = Frame(np.full((480, 640, 3), BELT_GREY, np.uint8), T0, 1)
    assert [p for _, p in predict_rois(demo_predictor, frame, (QUADRANT, FULL_FRAME))] == [(), ()]


# --------------------------------------------------------------------------------------------------
# Settings: cameras, rules, ROIs


def camera(**fields: object) -> dict[str, object]:
    return {"id": "line1-top", "url": "synthetic://conveyor", **fields}


def test_a_valid_camera_builds() -> None:
    settings = build_settings(
        {
            "cameras": [
                camera(
                    rois=[{"name": "station-a", "x": 0.5, "y": 0.0, "width": 0.5, "height": 1.0}],
                    rules=[{"tag": "scratch", "k": 3, "n": 3}, {"tag": "*"}],
                ),
                camera(id="line2_B", url="rtsp://u:p@10.0.0.2/s"),
            ]
        }
    )
    first = settings.cameras[0]
    assert first.rois[0].x + first.rois[0].width == 1.0
    assert [r.tag for r in first.rules] == ["scratch", "*"]
    assert settings.cameras[1].rules == ()  # no implicit rule: no rules, no events


@pytest.mark.parametrize(
    "data",
    [
        {"cameras": [camera(rules=[{"tag": "x", "k": 4, "n": 3}])]},
        {"cameras": [camera(rules=[{"k": 0}])]},
        {"cameras": [camera(rules=[{"min_probability": 1.5}])]},
        {"cameras": [camera(rules=[{"clear_after": 0}])]},
        {"cameras": [camera(rules=[{"cooldown_s": -1}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": 0.6, "y": 0.0, "width": 0.5, "height": 0.5}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": 0.0, "y": 0.7, "width": 0.5, "height": 0.31}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": 1.0, "y": 0.0, "width": 0.1, "height": 0.5}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": -0.1, "y": 0.0, "width": 0.1, "height": 0.5}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": 0.0, "y": 0.0, "width": 0.0, "height": 0.5}])]},
        {"cameras": [camera(rois=[{"name": "a b", "x": 0.0, "y": 0.0, "width": 0.5, "height": 0.5}])]},
        {"cameras": [camera(), camera(url="rtsp://other/s")]},
        {"cameras": [camera(id="line 1")]},
        {"cameras": [camera(id="../etc")]},
        {"cameras": [camera(id="")]},
        {"cameras": [camera(id="x" * 65)]},
        {"cameras": [camera(url="  ")]},
        {"cameras": [camera(fps=0)]},
        {"cameras": [camera(unknown_field=1)]},
    ],
    ids=[
        "k>n",
        "k=0",
        "probability>1",
        "clear_after=0",
        "negative-cooldown",
        "roi-right-of-frame",
        "roi-below-frame",
        "roi-x=1",
        "roi-negative-x",
        "roi-zero-width",
        "roi-bad-name",
        "duplicate-ids",
        "id-with-space",
        "id-with-slash",
        "empty-id",
        "id-too-long",
        "empty-url",
        "fps-0",
        "unknown-field",
    ],
)
def test_bad_camera_settings_are_config_errors(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="invalid settings"):
        build_settings(data)


def test_config_error_names_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"k \(4\) must not exceed n \(3\)"):
        build_settings({"cameras": [camera(rules=[{"tag": "x", "k": 4, "n": 3}])]})
    with pytest.raises(ConfigError, match="reaches outside the frame"):
        build_settings(
            {"cameras": [camera(rois=[{"name": "r", "x": 0.6, "y": 0, "width": 0.5, "height": 1}])]}
        )
    with pytest.raises(ConfigError, match=r"camera ids must be unique: \['line1-top'\]"):
        build_settings({"cameras": [camera(), camera()]})


def test_rule_defaults() -> None:
    rule = RuleSettings()
    assert (rule.tag, rule.min_probability, rule.k, rule.n, rule.clear_after) == ("*", 0.5, 2, 3, 3)
    assert rule.emit_ended is True and rule.cooldown_s == 10.0 and rule.min_box_area == 0.0
