"""The summary counter: counts per camera, tag and kind, back to back, sent even when empty."""

from __future__ import annotations

import json

from factories import T0, make_event

from edge_runtime.domain import EventKind
from edge_runtime.events.summary import SummaryCounter


def test_summary_counter_counts_per_camera_tag_and_kind() -> None:
    counter = SummaryCounter(T0)
    for event in (
        make_event(0, camera="b", tag="stain"),
        make_event(1, camera="a", tag="stain"),
        make_event(2, camera="a", tag="stain", kind=EventKind.ENDED),
        make_event(3, camera="a", tag="scratch"),
        make_event(4, camera="a", tag="stain"),
    ):
        counter.add(event)
    body = counter.take("S1", T0 + 60.5)
    assert body == {
        "id": "S1",
        "type": "summary",
        "from": "2023-11-14T22:13:20.000+00:00",
        "to": "2023-11-14T22:14:20.500+00:00",
        "events": 5,
        "cameras": {
            "a": {"scratch": {"started": 1}, "stain": {"ended": 1, "started": 2}},
            "b": {"stain": {"started": 1}},
        },
    }
    assert json.loads(json.dumps(body)) == body
    empty = counter.take("S2", T0 + 120)
    assert empty["from"] == body["to"] and empty["events"] == 0 and empty["cameras"] == {}
