"""The module twin (edge_runtime/iotedge/twin.py): reported properties and patches, `_newer`, and the
TwinAgent with a fake hub, over the real Controller (tests/control_harness.py) or a FakeController.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import control_harness
import pytest
from control_harness import FakeLoader, camera, without_nulls
from fakes import FakeHub
from waiting import eventually

from edge_runtime.control import merge_patch
from edge_runtime.iotedge.methods import DirectMethods
from edge_runtime.iotedge.twin import TwinAgent, _newer, reported_patch, reported_properties
from edge_runtime.status import SinkStatus, StatusBoard, show_connection, sink_key

# The shared fixtures (tests/control_harness.py); the autouse one puts the root log level back.
_restore_root_log_level = control_harness._restore_root_log_level
loader = control_harness.loader
starter = control_harness.starter
make = control_harness.make


# ---------------------------------------------------------------------------------------------------
# reported properties


def sample_status(**config: Any) -> dict[str, Any]:
    return {
        "version": "1.2.3",
        "model": {"status": "ready", "source": "/m", "error": None, "id": "m", "sha1": "0" * 40},
        "cameras": {"c1": {"state": "streaming", "last_error": None}},
        "sinks": {"mqtt": {"connected": True, "queued": 3, "last_error": None}, "hub": {"connected": False}},
        "config": {"desired_version": 2, "status": "applied", "error": None, "changes": ["a", "b"]} | config,
    }


def test_reported_properties_are_twin_shaped() -> None:
    status = sample_status()
    reported = reported_properties(status)
    assert reported == {
        "version": "1.2.3",
        "model": status["model"],
        "cameras": status["cameras"],
        "sinks": {"mqtt": {"connected": True}, "hub": {"connected": False}},
        "config": {"desired_version": 2, "status": "applied", "error": None, "changes": "a; b"},
    }
    assert status["config"]["changes"] == ["a", "b"]  # the status itself is not changed
    assert reported_properties(sample_status(changes=[]))["config"]["changes"] == ""

    def no_lists(value: Any) -> bool:
        if isinstance(value, dict):
            return all(no_lists(v) for v in value.values())
        return not isinstance(value, list | tuple)

    assert no_lists(reported)


def test_reported_patch_carries_only_changes_and_nulls_for_removed_keys() -> None:
    before = reported_properties(sample_status())
    assert reported_patch(before, before) == {}
    assert reported_patch({}, before) == before
    after = reported_properties(sample_status(desired_version=3, changes=["c"]))
    after["cameras"] = {"c2": {"state": "connecting", "last_error": None}}
    del after["sinks"]["hub"]
    after["model"]["error"] = None  # unchanged value
    patch = reported_patch(before, after)
    assert patch == {
        "config": {"desired_version": 3, "changes": "c"},
        "cameras": {"c1": None, "c2": {"state": "connecting", "last_error": None}},
        "sinks": {"hub": None},
    }
    # Applied with twin semantics, the patch turns the old document into the new one.
    # (a twin stores no nulls: compare without them)
    assert without_nulls(merge_patch(before, patch)) == without_nulls(after)
    # A new key whose value is None is still sent (it was not there before).
    assert reported_patch({"a": 1}, {"a": 1, "b": None}) == {"b": None}
    # An object replacing a scalar is sent whole.
    assert reported_patch({"a": 1}, {"a": {"x": 1}}) == {"a": {"x": 1}}


@pytest.mark.parametrize(
    ("version", "applied", "newer"),
    [(5, None, True), (5, 4, True), (5, 5, False), (4, 5, False), (None, 5, True), ("6", 5, True)],
)
def test_newer(version: object, applied: int | None, newer: bool) -> None:
    assert _newer(version, applied) is newer


# ---------------------------------------------------------------------------------------------------
# TwinAgent with a fake hub


class FakeController:
    """What TwinAgent uses of the Controller, with patches that can be made to fail."""

    def __init__(self, desired_version: int | None = None) -> None:
        self.config = SimpleNamespace(desired_version=desired_version)
        self.listeners: list[Callable[[], None]] = []
        self.applied: list[dict[str, Any]] = []
        self.patched: list[dict[str, Any]] = []
        self.fail_versions: set[int] = set()

    def on_change(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)

    async def apply_desired(self, desired: dict[str, Any]) -> None:
        self.applied.append(desired)
        self.config.desired_version = desired.get("$version")

    async def patch(self, patch: dict[str, Any]) -> None:
        self.patched.append(patch)
        if patch.get("$version") in self.fail_versions:
            raise RuntimeError("controller blew up")
        self.config.desired_version = patch.get("$version")

    def status(self) -> dict[str, Any]:
        return sample_status(desired_version=self.config.desired_version)


class FailingMethods:
    async def call(self, name: str, payload: Any) -> tuple[int, dict[str, Any]]:
        if name == "explode":
            raise RuntimeError("method broke")
        return 200, {"name": name, "payload": payload}


@pytest.fixture
async def agents() -> AsyncIterator[Callable[..., TwinAgent]]:
    made: list[TwinAgent] = []
    unwatch: list[Callable[[], None]] = []

    def factory(
        hub: FakeHub, controller: Any, methods: Any = None, board: StatusBoard | None = None
    ) -> TwinAgent:
        board = board or StatusBoard()
        hub.connected = True  # connected from the start; `connected_once` is the test's to set
        unwatch.append(show_connection(board, "hub", hub))  # as app.py's HubPart does
        agent = TwinAgent(hub, controller, methods or FailingMethods(), board)
        agent.RETRY_S = 0.02
        made.append(agent)
        return agent

    yield factory
    for agent in made:
        await agent.close()


async def test_twin_agent_applies_the_twin_then_patches_in_order_and_reports_changes(
    make: Any, agents: Any
) -> None:
    h = await make()
    hub = FakeHub({"$version": 5, "log_level": "DEBUG"})
    agent = agents(hub, h.controller, DirectMethods(h.controller, h.cameras, h.delivery), h.board)
    await agent.start()
    await asyncio.sleep(0.05)
    assert hub.twin_reads == 0 and hub.on_patch is None  # nothing before the first connection
    hub.connected_once.set()
    await eventually(lambda: h.controller.config.desired_version == 5)
    assert h.controller.settings.log_level == "DEBUG"
    await eventually(lambda: len(hub.reported) == 1)
    assert hub.reported[0] == reported_properties(h.controller.status())

    assert hub.on_patch is not None
    hub.on_patch({"$version": 6, "log_level": "WARNING"})
    hub.on_patch({"$version": 7, "events": {"outbox_max_events": 3}})
    hub.on_patch({"$version": 6, "log_level": "ERROR"})  # not newer than 7: skipped
    hub.on_patch({"$version": 8, "cameras": {"c1": camera(fps=0)}})  # rejected, kept
    hub.on_patch({"$version": 9, "cameras": {"c1": None}})
    await eventually(lambda: h.controller.config.desired_version == 9)
    assert h.controller.settings.log_level == "WARNING"
    assert h.controller.settings.events.outbox_max_events == 3
    assert h.controller.desired == {
        "$version": 9,
        "log_level": "WARNING",
        "events": {"outbox_max_events": 3},
        "cameras": {},
    }
    assert h.controller.config.status == "applied"
    await eventually(
        lambda: (
            without_nulls(hub.twin_reported()) == without_nulls(reported_properties(h.controller.status()))
        )
    )
    # After the first report only what changed goes out: the configuration result.
    assert all(set(patch) == {"config"} for patch in hub.reported[1:])
    assert hub.twin_reads == 1
    count = len(hub.reported)
    await asyncio.sleep(0.1)  # several poll periods with no change: nothing is sent
    assert len(hub.reported) == count


async def test_twin_agent_resyncs_the_whole_twin_after_a_reconnect(make: Any, agents: Any) -> None:
    h = await make()
    hub = FakeHub({"$version": 1, "log_level": "DEBUG"})
    await agents(hub, h.controller, board=h.board).start()
    hub.connected_once.set()
    await eventually(lambda: len(hub.reported) == 1)
    hub.connected = False
    await asyncio.sleep(0.06)  # the reporter notices the disconnection
    # Patches sent meanwhile never arrived; the twin holds them.
    hub.desired = {"$version": 4, "log_level": "ERROR"}
    h.board.put(sink_key("x"), SinkStatus("x", True))  # something to report while disconnected: not sent
    await asyncio.sleep(0.06)
    assert len(hub.reported) == 1
    hub.connected = True
    await eventually(lambda: h.controller.config.desired_version == 4)
    assert hub.twin_reads == 2 and h.controller.settings.log_level == "ERROR"
    await eventually(
        lambda: (
            without_nulls(hub.twin_reported()) == without_nulls(reported_properties(h.controller.status()))
        )
    )
    assert hub.reported[-1]["config"]["desired_version"] == 4


async def test_twin_agent_skips_a_whole_twin_that_is_not_newer(agents: Any) -> None:
    controller = FakeController(desired_version=10)
    hub = FakeHub({"$version": 10, "log_level": "DEBUG"})
    await agents(hub, controller).start()
    hub.connected_once.set()
    await eventually(lambda: len(hub.reported) == 1)  # still reported
    assert controller.applied == []
    hub.on_patch({"$version": 10, "log_level": "INFO"})
    hub.on_patch({"log_level": "INFO"})  # no version: applied
    await eventually(lambda: len(controller.patched) == 1)
    assert controller.patched == [{"log_level": "INFO"}]


async def test_twin_agent_retries_reading_the_twin(agents: Any) -> None:
    controller = FakeController()
    hub = FakeHub({"$version": 3})
    hub.twin_errors = 2
    await agents(hub, controller).start()
    hub.connected_once.set()
    await eventually(lambda: controller.applied == [{"$version": 3}])
    assert hub.twin_reads == 3


async def test_a_failing_patch_does_not_stop_the_twin_loop(agents: Any) -> None:
    controller = FakeController()
    controller.fail_versions = {2}
    hub = FakeHub({"$version": 1})
    await agents(hub, controller).start()
    hub.connected_once.set()
    await eventually(lambda: hub.on_patch is not None and controller.applied != [])
    hub.on_patch({"$version": 2, "log_level": "DEBUG"})
    hub.on_patch({"$version": 3, "log_level": "INFO"})
    await eventually(lambda: controller.config.desired_version == 3)
    assert [p["$version"] for p in controller.patched] == [2, 3]


async def test_twin_agent_retries_a_failed_report(agents: Any) -> None:
    controller = FakeController()
    hub = FakeHub({"$version": 1})
    hub.report_errors = 1
    await agents(hub, controller).start()
    hub.connected_once.set()
    await eventually(lambda: len(hub.reported) == 1)
    assert hub.report_attempts == 2
    assert hub.reported[0] == reported_properties(controller.status())  # the whole state, not a diff


async def test_twin_agent_answers_every_direct_method(agents: Any) -> None:
    controller = FakeController()
    hub = FakeHub()
    await agents(hub, controller).start()
    hub.connected_once.set()
    await eventually(lambda: hub.on_method is not None)
    hub.respond_errors = 1
    hub.on_method(SimpleNamespace(name="lost", payload=None))  # the answer fails: the loop goes on
    hub.on_method(SimpleNamespace(name="explode", payload=None))
    hub.on_method(SimpleNamespace(name="echo", payload={"x": 1}))
    await eventually(lambda: len(hub.responses) == 2)
    assert hub.responses == [
        ("explode", 500, {"error": "RuntimeError: method broke"}),
        ("echo", 200, {"name": "echo", "payload": {"x": 1}}),
    ]


async def test_twin_desired_model_that_fails_is_reported_while_the_old_one_serves(
    make: Any, agents: Any, loader: FakeLoader
) -> None:
    h = await make()
    hub = FakeHub({"$version": 1, "model": {"path": "/models/good"}})
    agent = agents(hub, h.controller, DirectMethods(h.controller, h.cameras, h.delivery), h.board)
    await agent.start()
    hub.connected_once.set()
    await eventually(lambda: hub.twin_reported().get("model", {}).get("status") == "ready")
    loader.results["bad"] = ValueError("corrupt graph")
    assert hub.on_patch is not None
    hub.on_patch({"$version": 2, "model": {"path": "/models/bad"}})
    await eventually(lambda: hub.twin_reported().get("model", {}).get("status") == "failed")
    await eventually(lambda: hub.twin_reported()["model"].get("configured") == "/models/good")
    reported = hub.twin_reported()
    assert reported["model"]["error"] == "ValueError: corrupt graph"
    assert reported["model"]["source"] == "/models/bad" and reported["model"]["id"] == "good"
    assert reported["config"]["desired_version"] == 2 and reported["config"]["status"] == "applied"
    # A later patch of another section builds on the serving model; the bad one is not retried.
    hub.on_patch({"$version": 3, "log_level": "DEBUG"})
    await eventually(lambda: h.controller.config.desired_version == 3)
    assert loader.calls == ["good", "bad"]
    # reloadModel reloads the model that serves.
    hub.on_method(SimpleNamespace(name="reloadModel", payload=None))
    await eventually(lambda: bool(hub.responses))
    assert hub.responses[-1][:2] == ("reloadModel", 200) and loader.calls[-1] == "good"


async def test_twin_agent_close_stops_its_tasks(agents: Any) -> None:
    controller = FakeController()
    hub = FakeHub()
    agent = agents(hub, controller)
    await agent.start()
    hub.connected_once.set()
    await eventually(lambda: len(hub.reported) == 1)
    await asyncio.wait_for(agent.close(), 1)
    hub.on_patch({"$version": 5})
    await asyncio.sleep(0.05)
    assert controller.patched == []
