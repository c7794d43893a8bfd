"""The desired-document algebra: merge_patch and keyed_tree (edge_runtime/control.py), merge_tree
(edge_runtime/settings.py)."""

from __future__ import annotations

from typing import Any

import pytest
from control_harness import SYNTHETIC

from edge_runtime.control import keyed_tree, merge_patch
from edge_runtime.settings import build_settings, merge_tree

# ---------------------------------------------------------------------------------------------------
# merge_patch, merge_tree, keyed_tree


def test_merge_patch_merges_objects_removes_nulls_and_replaces_the_rest() -> None:
    document = {"a": {"x": 1, "y": {"deep": 1, "keep": 2}}, "b": [1, 2], "c": "old", "gone": 5}
    patch = {"a": {"y": {"deep": 9}, "z": 3}, "b": [3], "c": {"now": "object"}, "gone": None, "new": 1}
    merged = merge_patch(document, patch)
    assert merged == {
        "a": {"x": 1, "y": {"deep": 9, "keep": 2}, "z": 3},
        "b": [3],
        "c": {"now": "object"},
        "new": 1,
    }
    # Inputs are left alone (the controller keeps the previous document).
    assert document == {"a": {"x": 1, "y": {"deep": 1, "keep": 2}}, "b": [1, 2], "c": "old", "gone": 5}
    assert patch["gone"] is None


def test_merge_patch_null_for_an_absent_key_and_scalar_over_object() -> None:
    assert merge_patch({"a": 1}, {"missing": None}) == {"a": 1}
    assert merge_patch({"a": {"x": 1}}, {"a": 2}) == {"a": 2}
    assert merge_patch({"a": {"x": 1}}, {"a": {"x": None}}) == {"a": {}}
    assert merge_patch({}, {}) == {}


def test_merge_patch_drops_nulls_inside_a_new_object() -> None:
    assert merge_patch({}, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}


def test_merge_tree_merges_desired_over_base_and_null_turns_a_base_value_off() -> None:
    base = {"sinks": {"mqtt": {"host": "h", "qos": 1}, "iothub": None}, "log_level": "INFO"}
    overlay = {"sinks": {"mqtt": {"qos": 2}}, "log_level": "DEBUG"}
    assert merge_tree(base, overlay) == {
        "sinks": {"mqtt": {"host": "h", "qos": 2}, "iothub": None},
        "log_level": "DEBUG",
    }
    assert merge_tree(base, {"sinks": {"mqtt": None}})["sinks"]["mqtt"] is None
    assert base["sinks"]["mqtt"] == {"host": "h", "qos": 1}  # not mutated


RICH = {
    "model": {"url": "https://example.com/m.zip?sig=secret", "sha256": "a" * 64, "resize": "stretch"},
    "cameras": [
        {
            "id": "c1",
            "url": SYNTHETIC,
            "fps": 3,
            "rois": [{"name": "left", "x": 0, "y": 0, "width": 0.5, "height": 1}],
            "rules": [{"tag": "*"}, {"tag": "stain", "k": 1, "n": 2}],
        },
        {"id": "c2", "url": "rtsp://u:p@cam/s", "enabled": False, "rules": []},
    ],
    "sinks": {"mqtt": {"host": "broker", "password": "pw", "tls": {"ca_file": "/ca.pem"}}, "iothub": {}},
    "hub": {"connection_string": "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=aGk="},
    "server": {"admin_key": "k" * 12, "prediction_key": "p", "port": 8080},
    "url_fetch": {"allow": ["10.0.0.0/8"]},
    "events": {"jsonl_path": None, "outbox_max_events": 7},
    "log_level": "WARNING",
}


@pytest.mark.parametrize("data", [{}, RICH], ids=["defaults", "rich"])
def test_keyed_tree_round_trips_through_build_settings(data: dict[str, Any]) -> None:
    settings = build_settings(data)
    assert build_settings(keyed_tree(settings)) == settings


def test_keyed_tree_layout_keys_cameras_rules_and_rois() -> None:
    tree = keyed_tree(build_settings(RICH))
    assert list(tree["cameras"]) == ["c1", "c2"]
    c1 = tree["cameras"]["c1"]
    assert "id" not in c1
    assert list(c1["rules"]) == ["*", "stain"]
    assert "tag" not in c1["rules"]["stain"] and c1["rules"]["stain"]["k"] == 1
    assert list(c1["rois"]) == ["left"] and "name" not in c1["rois"]["left"]
    assert tree["cameras"]["c2"]["rules"] == {}


def test_keyed_tree_round_trips_duplicate_rule_tags_or_rejects_them() -> None:
    data = {"cameras": [{"id": "c", "url": SYNTHETIC, "rules": [{"tag": "*", "k": 1}, {"tag": "*", "k": 3}]}]}
    try:
        settings = build_settings(data)
    except Exception:  # rejecting duplicates at validation is a fine answer too
        return
    assert build_settings(keyed_tree(settings)) == settings
