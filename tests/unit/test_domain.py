"""Value objects: Event.to_dict (the wire shape of an event), and ROI geometry (to_frame, pixels)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from factories import T0, make_event

from edge_runtime.domain import FULL_FRAME, BoundingBox, Event, EventKind, Roi
from edge_runtime.events.ids import new_event_id
from edge_runtime.settings import RoiSettings

# --------------------------------------------------------------------------------------------------
# Event.to_dict


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


# --------------------------------------------------------------------------------------------------
# ROI geometry


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
