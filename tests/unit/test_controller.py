"""The Controller: desired documents, validation and rejection, sinks (delivery swap and rollback),
cameras and the log level.

Unit level, on tests/control_harness.py: the real parts with fakes for the dispatcher and the model loader.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import control_harness
from control_harness import FakeStarter, base_data, camera
from waiting import eventually

from edge_runtime import __version__
from edge_runtime.events.delivery import DeliveryConfig

# The shared fixtures (tests/control_harness.py); the autouse one puts the root log level back.
_restore_root_log_level = control_harness._restore_root_log_level
loader = control_harness.loader
starter = control_harness.starter
make = control_harness.make


# ---------------------------------------------------------------------------------------------------
# Controller: documents, validation, rejection


async def test_apply_desired_applies_log_level_and_reports_version(make: Any) -> None:
    h = await make()
    notified: list[str] = []
    h.controller.on_change(lambda: notified.append(h.controller.config.status))
    result = await h.controller.apply_desired({"$version": 4, "log_level": "DEBUG"})
    assert result.applied and result.version == 4 and result.changes == ("log_level=DEBUG",)
    assert result.to_dict() == {
        "applied": True,
        "version": 4,
        "changes": ["log_level=DEBUG"],
        "error": None,
        "model_update": None,
    }
    assert h.controller.settings.log_level == "DEBUG"
    assert logging.getLogger().level == logging.DEBUG
    c = h.controller.config
    assert (c.desired_version, c.status, c.error, c.changes) == (4, "applied", None, ["log_level=DEBUG"])
    assert notified == ["applied"]
    status = h.controller.status()
    assert status["version"] == __version__
    assert status["config"] == {
        "desired_version": 4,
        "status": "applied",
        "error": None,
        "changes": ["log_level=DEBUG"],
    }


async def test_same_document_again_is_applied_with_no_change(make: Any, starter: FakeStarter) -> None:
    h = await make()
    await h.controller.apply_desired({"$version": 1, "log_level": "DEBUG"})
    result = await h.controller.apply_desired({"$version": 2, "log_level": "DEBUG"})
    assert result.applied and result.changes == ()
    assert len(starter.started) == 1  # the dispatcher was not swapped


async def test_non_int_version_is_reported_as_none(make: Any) -> None:
    h = await make()
    result = await h.controller.apply_desired({"$version": "7", "log_level": "INFO"})
    assert result.applied and result.version is None and h.controller.config.desired_version is None


async def test_unknown_section_is_rejected_with_a_clear_message(make: Any) -> None:
    h = await make()
    before = h.controller.settings
    result = await h.controller.apply_desired({"$version": 3, "server": {"port": 1}, "log_level": "DEBUG"})
    assert not result.applied and result.version == 3
    assert result.error is not None
    assert "'server' cannot be changed at run time" in result.error
    assert "model, cameras, sinks, events, log_level" in result.error
    assert h.controller.settings is before
    assert logging.getLogger().level != logging.DEBUG
    c = h.controller.config
    assert (c.status, c.desired_version, c.error, c.changes) == ("rejected", 3, result.error, [])
    assert h.controller.desired == {"$version": 3, "server": {"port": 1}, "log_level": "DEBUG"}


async def test_outbox_path_cannot_change(make: Any, tmp_path: Path) -> None:
    h = await make()
    result = await h.controller.patch({"events": {"outbox_path": str(tmp_path / "other.sqlite3")}})
    assert not result.applied
    assert result.error == "events.outbox_path cannot change at run time"
    assert h.controller.settings.events.outbox_path == tmp_path / "outbox.sqlite3"


async def test_invalid_value_is_rejected_naming_the_camera(make: Any) -> None:
    h = await make()
    result = await h.controller.patch({"cameras": {"c1": camera(fps=0)}})
    assert not result.applied and result.error is not None
    assert result.error.startswith("invalid settings")
    assert "cameras.c1.fps" in result.error
    assert h.cameras.samplers == {}


async def test_unconstructable_sink_rejects_the_patch_before_anything_changes(
    make: Any, starter: FakeStarter
) -> None:
    h = await make()
    # iothub needs the hub: settings validation rejects it, the dispatcher is never touched.
    result = await h.controller.patch({"sinks": {"iothub": {}}, "log_level": "DEBUG"})
    assert not result.applied and "sinks.iothub needs" in (result.error or "")
    assert len(starter.started) == 1 and not starter.started[0].closed
    assert h.controller.settings.log_level == "INFO"


async def test_rejected_document_is_kept_and_must_be_fixed_by_a_later_patch(make: Any) -> None:
    h = await make()
    bad = await h.controller.patch({"$version": 2, "log_level": "DEBUG", "server": {"port": 1}})
    assert not bad.applied
    assert h.controller.desired == {"$version": 2, "log_level": "DEBUG", "server": {"port": 1}}
    # A patch that leaves the bad key in place is still rejected: the twin still holds it.
    still = await h.controller.patch({"$version": 3, "log_level": "WARNING"})
    assert not still.applied and "'server'" in (still.error or "")
    assert h.controller.settings.log_level == "INFO"
    assert h.controller.config.desired_version == 3
    # Nulling the bad key applies the whole document, earlier good keys included.
    fixed = await h.controller.patch({"$version": 4, "server": None})
    assert fixed.applied and fixed.changes == ("log_level=WARNING",)
    assert h.controller.desired == {"$version": 4, "log_level": "WARNING"}
    assert h.controller.settings.log_level == "WARNING"
    assert h.controller.config.status == "applied" and h.controller.config.error is None


async def test_concurrent_patches_both_take_effect(make: Any, starter: FakeStarter) -> None:
    h = await make()
    starter.delay = 0.05  # the first patch is still swapping sinks when the second arrives
    first, second = await asyncio.gather(
        h.controller.patch({"events": {"outbox_max_events": 5}}),
        h.controller.patch({"log_level": "DEBUG"}),
    )
    assert first.applied and second.applied
    assert first.changes == ("sinks",) and second.changes == ("log_level=DEBUG",)
    assert h.controller.desired == {"events": {"outbox_max_events": 5}, "log_level": "DEBUG"}
    assert h.controller.settings.events.outbox_max_events == 5
    assert h.controller.settings.log_level == "DEBUG"
    assert h.delivery.dispatcher is starter.started[-1]
    assert starter.started[-1].settings.events.outbox_max_events == 5


async def test_listeners_are_told_of_applied_and_rejected_documents(make: Any) -> None:
    h = await make()
    calls: list[str] = []
    h.controller.on_change(lambda: calls.append("one"))
    h.controller.on_change(lambda: calls.append("two"))
    await h.controller.patch({"log_level": "DEBUG"})
    await h.controller.patch({"nope": 1})
    assert calls == ["one", "two", "one", "two"]


# ---------------------------------------------------------------------------------------------------
# Controller: sinks


async def test_sinks_change_swaps_the_dispatcher(make: Any, starter: FakeStarter) -> None:
    h = await make()
    old = h.delivery.dispatcher
    result = await h.controller.patch({"events": {"outbox_max_events": 9}})
    assert result.applied and result.changes == ("sinks",)
    assert old.closed_with == 1.0
    new = h.delivery.dispatcher
    assert new is not old and new is starter.started[-1] and not new.closed
    assert new.settings.events.outbox_max_events == 9


async def test_dispatcher_swap_rolls_back_when_the_new_sinks_cannot_start(
    make: Any, starter: FakeStarter
) -> None:
    h = await make()
    old_settings = h.controller.settings
    old = h.delivery.dispatcher
    starter.fail = lambda settings: settings.events.outbox_max_events == 9
    result = await h.controller.patch({"events": {"outbox_max_events": 9}, "log_level": "DEBUG"})
    assert not result.applied
    assert result.error == "sinks: cannot start: OSError: broker unreachable"
    assert h.controller.config.status == "rejected"
    assert h.controller.settings is old_settings
    assert logging.getLogger().level != logging.DEBUG  # nothing after the sinks was applied
    # The old dispatcher was closed; a fresh one for the old settings serves now.
    assert old.closed
    restored = h.delivery.dispatcher
    assert restored is not old and restored is starter.started[-1] and not restored.closed
    assert restored.settings == DeliveryConfig.of(old_settings)
    # The next good patch swaps again from the restored dispatcher.
    starter.fail = lambda settings: False
    again = await h.controller.patch({"events": {"outbox_max_events": 10}})
    assert again.applied and restored.closed and h.delivery.dispatcher.settings.events.outbox_max_events == 10


# ---------------------------------------------------------------------------------------------------
# Controller: cameras


async def test_camera_add_change_in_place_restart_and_remove(make: Any) -> None:
    h = await make()
    added = await h.controller.patch({"cameras": {"c1": camera()}})
    assert added.applied and added.changes == ("camera c1 added",)
    assert list(h.cameras.samplers) == ["c1"]
    first = h.cameras.samplers["c1"]
    assert set(h.controller.status()["cameras"]) == {"c1"}
    reader = {"decoder", "decode", "clock"}  # shown once the stream is open
    assert (
        {"state", "last_error"}
        <= set(h.controller.status()["cameras"]["c1"])
        <= {"state", "last_error"} | reader
    )
    await eventually(lambda: "decoder" in h.controller.status()["cameras"]["c1"], what="the reader shown")
    shown = h.controller.status()["cameras"]["c1"]
    assert (shown["decoder"], shown["decode"], shown["clock"]) == ("synthetic", "all", "arrival")

    in_place = await h.controller.patch(
        {"cameras": {"c1": {"fps": 4.0, "rules": {"stain": {"k": 1, "n": 1}}}}}
    )
    assert in_place.applied and in_place.changes == ("camera c1 changed",)
    assert h.cameras.samplers["c1"] is first  # same sampler, same capture thread
    assert first.settings.fps == 4.0
    assert [r.tag for r in first.settings.rules] == ["stain"]

    rois = await h.controller.patch(
        {"cameras": {"c1": {"rois": {"left": {"x": 0, "y": 0, "width": 0.5, "height": 1}}}}}
    )
    assert rois.changes == ("camera c1 changed",) and h.cameras.samplers["c1"] is first
    assert [r.name for r in first.settings.rois] == ["left"]

    restart = await h.controller.patch({"cameras": {"c1": {"open_timeout_s": 2.0}}})
    assert restart.applied and restart.changes == ("camera c1 changed",)
    second = h.cameras.samplers["c1"]
    assert second is not first
    assert second.capture.settings.open_timeout_s == 2.0 and second.settings.fps == 4.0
    assert first.capture.thread is None or not first.capture.thread.is_alive()

    unchanged = await h.controller.patch({"cameras": {"c1": {"fps": 4.0}}})
    assert unchanged.applied and unchanged.changes == () and h.cameras.samplers["c1"] is second

    removed = await h.controller.patch({"cameras": {"c1": None}})
    assert removed.applied and removed.changes == ("camera c1 removed",)
    assert h.cameras.samplers == {}
    assert h.controller.config.changes == ["camera c1 removed"]


async def test_camera_disabled_and_enabled_again(make: Any, tmp_path: Path) -> None:
    h = await make(base_data(tmp_path, cameras={"base": camera()}))
    assert list(h.cameras.samplers) == ["base"]
    off = await h.controller.patch({"cameras": {"base": {"enabled": False}}})
    assert off.changes == ("camera base removed",) and h.cameras.samplers == {}
    on = await h.controller.patch({"cameras": {"base": {"enabled": True}}})
    assert on.changes == ("camera base added",) and list(h.cameras.samplers) == ["base"]


async def test_two_cameras_changes_listed_together(make: Any, tmp_path: Path) -> None:
    h = await make(base_data(tmp_path, cameras={"a": camera(), "b": camera()}))
    result = await h.controller.patch(
        {"cameras": {"a": {"enabled": False}, "b": {"fps": 2.0}, "c": camera()}, "log_level": "DEBUG"}
    )
    assert result.applied
    assert result.changes == (
        "log_level=DEBUG",
        "camera a removed",
        "camera b changed",
        "camera c added",
    )
    assert sorted(h.cameras.samplers) == ["b", "c"]


async def test_base_camera_survives_a_null_in_the_twin(make: Any, tmp_path: Path) -> None:
    """README: the twin changes settings from the environment but cannot delete them."""
    h = await make(base_data(tmp_path, cameras={"base": camera()}))
    await h.controller.patch({"cameras": {"extra": camera()}})
    result = await h.controller.patch({"cameras": {"base": None}})
    assert result.applied and "base" in h.cameras.samplers


async def test_base_camera_survives_a_null_when_desired_has_no_cameras_yet(make: Any, tmp_path: Path) -> None:
    h = await make(base_data(tmp_path, cameras={"base": camera()}))
    result = await h.controller.patch({"cameras": {"base": None}})
    assert result.applied and "base" in h.cameras.samplers
