"""Stations' pure parts: the vote, trigger payloads, the settings' checks, FrameSlot.wait_newer."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from edge_runtime.domain import BoundingBox, Frame, Prediction
from edge_runtime.errors import ConfigError
from edge_runtime.settings import DefectSettings, build_settings, rule_tag_problem
from edge_runtime.sources.frame_slot import FrameSlot
from edge_runtime.stations.triggers import BadTrigger, parse_trigger
from edge_runtime.stations.verdict import MAX_PLC_LEAD_S, FrameEvidence, RoiEvidence, Trigger
from edge_runtime.stations.vote import defects_found


def frame(camera: str, *rois: tuple[str, list[Prediction]]) -> FrameEvidence:
    return FrameEvidence(camera, 0.0, 0, tuple(RoiEvidence(name, tuple(p)) for name, p in rois))


SCRATCH_HI = Prediction("scratch", 0.9)
SCRATCH_LO = Prediction("scratch", 0.3)


@pytest.mark.parametrize(
    ("rule", "frames", "votes"),
    [
        ({"tag": "scratch"}, [frame("a", ("full", [SCRATCH_LO]))], None),
        ({"tag": "scratch"}, [frame("a", ("full", [SCRATCH_HI]))], 1),
        (
            {"tag": "scratch", "votes": 2},
            [frame("a", ("full", [SCRATCH_HI])), frame("a", ("full", []))],
            None,
        ),
        (
            {"tag": "scratch", "votes": 2},
            [frame("a", ("full", [SCRATCH_HI])), frame("b", ("full", [SCRATCH_HI]))],
            2,
        ),
        # two ROIs of one frame are one vote
        ({"tag": "scratch", "votes": 2}, [frame("a", ("l", [SCRATCH_HI]), ("r", [SCRATCH_HI]))], None),
        ({"tag": "scratch", "rois": ["r"]}, [frame("a", ("l", [SCRATCH_HI]), ("r", [SCRATCH_LO]))], None),
        ({"tag": "scratch", "cameras": ["b"]}, [frame("a", ("full", [SCRATCH_HI]))], None),
        ({"tag": "dent"}, [frame("a", ("full", [SCRATCH_HI]))], None),
    ],
)
def test_vote(rule: dict[str, Any], frames: list[FrameEvidence], votes: int | None) -> None:
    found = defects_found([DefectSettings.model_validate(rule)], frames)
    assert (found[0].votes if found else None) == votes


def test_small_boxes_do_not_vote() -> None:
    tiny = Prediction("scratch", 0.9, 0, BoundingBox(0, 0, 0.01, 0.01))
    rule = DefectSettings(tag="scratch", min_box_area=0.001)
    assert defects_found([rule], [frame("a", ("full", [tiny]))]) == ()


def test_the_highest_probability_names_where_it_was_seen() -> None:
    found = defects_found(
        [DefectSettings(tag="scratch")],
        [frame("a", ("l", [Prediction("scratch", 0.6)])), frame("b", ("r", [Prediction("scratch", 0.95)]))],
    )
    assert (found[0].probability, found[0].camera, found[0].roi) == (0.95, "b", "r")


# ---- trigger payloads -------------------------------------------------------------------------------


def test_a_trigger_payload_is_parsed() -> None:
    t = parse_trigger(
        "s1", {"partId": "4711", "plcTime": "2026-11-25T10:00:00.5Z", "metadata": {"line": 3}}, "x", 5.0
    )
    assert (t.station, t.part_id, t.source, t.metadata) == ("s1", "4711", "x", {"line": "3"})
    assert t.plc_time == datetime(2026, 11, 25, 10, 0, 0, 500000, tzinfo=UTC).timestamp()
    assert parse_trigger("s1", "bare-id", "mqtt", 1.0).part_id == "bare-id"
    assert parse_trigger("s1", {"part_id": "p", "plcTime": 12.5}, "x", 1.0).plc_time == 12.5


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {},
        {"partId": ""},
        {"partId": 7},
        {"partId": "x" * 129},
        {"partId": "a\nb"},
        {"partId": "p", "plcTime": "yesterday"},
        {"partId": "p", "plcTime": "2026-11-25T10:00:00"},  # no zone
        {"partId": "p", "plcTime": True},
        {"partId": "p", "metadata": [1]},
        {"partId": "p", "metadata": {"k": {"nested": 1}}},
        {"partId": "p", "metadata": {str(n): "v" for n in range(33)}},
    ],
)
def test_bad_trigger_payloads_are_refused_with_a_reason(payload: Any) -> None:
    with pytest.raises(BadTrigger):
        parse_trigger("s1", payload, "http", 1.0)


def test_a_plc_time_only_refines_the_arrival_backwards_and_not_far() -> None:
    assert Trigger("s", "p", 100.0, "x").after == 100.0
    assert Trigger("s", "p", 100.0, "x", plc_time=99.7).after == 99.7
    assert Trigger("s", "p", 100.0, "x", plc_time=130.0).after == 100.0  # a PLC clock ahead
    assert Trigger("s", "p", 100.0, "x", plc_time=10.0).after == 100.0 - MAX_PLC_LEAD_S


# ---- settings ---------------------------------------------------------------------------------------


def settings(**stations: Any) -> dict[str, Any]:
    return {
        "cameras": {
            "cam": {
                "url": "synthetic://conveyor",
                "decode": "all",
                "rois": {"left": {"x": 0, "y": 0, "width": 0.5, "height": 1}},
            }
        },
        "stations": stations,
    }


def test_a_station_is_configured_by_id() -> None:
    built = build_settings(settings(s1={"cameras": ["cam"], "defects": [{"tag": "stain", "rois": ["left"]}]}))
    assert built.stations[0].id == "s1"
    assert rule_tag_problem(built, ["stain", "glare"]) is None
    problem = rule_tag_problem(built, ["glare"])
    assert problem is not None and "station 's1'" in problem and "stain" in problem


@pytest.mark.parametrize(
    ("station", "message"),
    [
        ({"cameras": ["nope"], "defects": [{"tag": "x"}]}, "not an enabled camera"),
        ({"cameras": ["cam"], "defects": []}, "defects"),
        ({"cameras": ["cam"], "defects": [{"tag": "x", "votes": 2}]}, "needs 2 votes"),
        ({"cameras": ["cam", "cam"], "frames": 2, "defects": [{"tag": "x"}]}, "listed twice"),
        ({"cameras": ["cam"], "defects": [{"tag": "x", "rois": ["middle"]}]}, "unknown ROIs"),
        ({"cameras": ["cam"], "defects": [{"tag": "x", "cameras": ["other"]}]}, "does not use"),
    ],
)
def test_station_settings_that_cannot_work_are_refused(station: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings(settings(s1=station))


def test_a_station_camera_must_decode_every_frame() -> None:
    data = settings(s1={"cameras": ["cam"], "defects": [{"tag": "x"}]})
    data["cameras"]["cam"]["decode"] = "auto"
    with pytest.raises(ConfigError, match="decode: all"):
        build_settings(data)


def test_mqtt_triggers_need_the_broker_and_opcua_needs_a_way_in() -> None:
    with pytest.raises(ConfigError, match=r"triggers\.mqtt needs sinks\.mqtt"):
        build_settings({"triggers": {"mqtt": True}})
    with pytest.raises(ConfigError, match="no way in"):
        build_settings({"opcua": {"enabled": True}})
    assert build_settings({"opcua": {"enabled": True, "allow_anonymous": True}}).opcua.enabled


# ---- FrameSlot.wait_newer ------------------------------------------------------------------------------


def picture(at: float, sequence: int = 0) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), at, sequence)


async def test_wait_newer_takes_the_current_frame_only_when_it_is_newer() -> None:
    slot = FrameSlot()
    slot.put(picture(10.0))
    assert (await slot.wait_newer(9.0)).captured_at == 10.0
    waiting = slot.wait_newer(10.0)
    assert not waiting.done()
    slot.put(picture(10.0))  # not newer
    slot.put(picture(11.0))
    assert (await waiting).captured_at == 11.0


async def test_wait_newer_is_settled_from_a_capture_thread_and_leaves_the_sampler_its_frame() -> None:
    slot = FrameSlot()
    waiting = slot.wait_newer(0.0)
    threading.Thread(target=slot.put, args=(picture(1.0, 7),)).start()
    got = await asyncio.wait_for(waiting, 2)
    assert got.sequence == 7
    taken = slot.take_newest()
    assert taken is not None and taken.sequence == 7
    assert slot.frames == 1


async def test_cancelled_waits_are_dropped() -> None:
    slot = FrameSlot()
    for _ in range(50):
        slot.wait_newer(5.0).cancel()
    slot.wait_newer(5.0)
    assert len(slot._waiters) == 1


def test_opcua_users_may_come_from_the_environment_as_json() -> None:
    from edge_runtime.settings import load_settings

    env = {"EDGE_RUNTIME_OPCUA__ENABLED": "true", "EDGE_RUNTIME_OPCUA__USERS": '{"plc": "pw-0123"}'}
    users = load_settings(None, env=env).opcua.users
    assert {name: p.get_secret_value() for name, p in users.items()} == {"plc": "pw-0123"}
