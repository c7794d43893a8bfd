"""The Delivery part (edge_runtime/events/delivery.py): a real outbox in tmp_path, real JSONL sinks, and
the `start_dispatcher` seam where a start must fail on demand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from factories import fast_dispatcher, make_event
from fakes import FakeSink
from waiting import eventually

from edge_runtime.domain import Event
from edge_runtime.errors import ConfigError
from edge_runtime.events.delivery import Delivery, DeliveryConfig, Running, where_events_go
from edge_runtime.events.dispatcher import Sink
from edge_runtime.events.outbox import Outbox
from edge_runtime.settings import EventSettings, MqttSettings, SinkSettings, TlsSettings
from edge_runtime.sinks.build import build_sinks
from edge_runtime.status import SinkStatus, StatusBoard, sink_key


def config(
    tmp_path: Path,
    jsonl: str | Path | None = "a.jsonl",
    *,
    mqtt: MqttSettings | None = None,
    public_url: str | None = None,
    **events: Any,
) -> DeliveryConfig:
    fields: dict[str, Any] = {
        "outbox_path": tmp_path / "delivery.sqlite3",
        "jsonl_path": None if jsonl is None else tmp_path / jsonl,
        "snapshot_dir": None,
    }
    return DeliveryConfig(EventSettings(**(fields | events)), SinkSettings(mqtt=mqtt), public_url)


def jsonl_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


async def delivered(path: Path, events: Sequence[Event]) -> None:
    wanted = [e.id for e in events]
    await eventually(lambda: jsonl_ids(path)[-len(wanted) :] == wanted, what=f"{wanted} in {path.name}")


def configured_sinks(config: DeliveryConfig) -> list[Sink]:
    return build_sinks(config.events, config.sinks, None, None)


class Starter:
    """start_dispatcher(config): real dispatchers over the test's outbox with `sinks_for(config)` (the
    configured sinks by default); raises OSError for the configurations `fail` picks."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.started: list[DeliveryConfig] = []
        self.fail: Callable[[DeliveryConfig], bool] = lambda config: False
        self.sinks_for: Callable[[DeliveryConfig], Sequence[Sink]] = configured_sinks

    async def __call__(self, config: DeliveryConfig) -> Running:
        self.started.append(config)
        if self.fail(config):
            raise OSError("broker unreachable")
        dispatcher = fast_dispatcher(self.outbox, self.sinks_for(config))
        await dispatcher.start()
        return dispatcher


@pytest.fixture
def starter(outbox: Outbox) -> Starter:
    return Starter(outbox)


# ---------------------------------------------------------------------------------------------------
# publish and watch


async def test_publish_stores_and_delivers_to_the_jsonl_sink(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    delivery = Delivery(cfg, StatusBoard())
    with pytest.raises(RuntimeError, match="not entered"):
        await delivery.publish(make_event(0))
    events = [make_event(n, camera=f"cam-{n % 2}") for n in range(3)]
    async with delivery:
        for event in events:
            await delivery.publish(event)
        await delivered(tmp_path / "a.jsonl", events)
        # The line is written before the outbox row is acknowledged: wait for the ack too.
        depth: list[dict[str, int]] = []

        async def drained() -> bool:
            depth[:] = [await delivery.backlog()]
            return depth[0] == {"jsonl": 0}

        for _ in range(200):
            if await drained():
                break
            await asyncio.sleep(0.01)
        assert depth == [{"jsonl": 0}]
    lines = (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]


async def test_watch_gets_live_events_in_order(tmp_path: Path) -> None:
    async with Delivery(config(tmp_path), StatusBoard()) as delivery:
        unseen = make_event(0)
        await delivery.publish(unseen)  # before anyone watches: not seen
        watchers = [delivery.watch(), delivery.watch()]
        firsts = [asyncio.ensure_future(anext(w)) for w in watchers]
        await asyncio.sleep(0)  # both start watching
        events = [make_event(n) for n in range(1, 5)]
        for event in events:
            await delivery.publish(event)
        for watcher, first in zip(watchers, firsts, strict=True):
            async with asyncio.timeout(2):
                seen = [await first] + [await anext(watcher) for _ in events[1:]]
            assert [e.id for e in seen] == [e.id for e in events]
        for watcher in watchers:
            await watcher.aclose()
        after = make_event(9)
        await delivery.publish(after)  # nobody watches any more: publish is unaffected
        await delivered(tmp_path / "a.jsonl", [unseen, *events, after])


async def test_a_slow_watcher_loses_the_oldest_and_never_blocks_publish(tmp_path: Path) -> None:
    async with Delivery(config(tmp_path), StatusBoard()) as delivery:
        delivery.WATCH_QUEUE = 4  # a short queue for the test: the same behaviour as the real one
        watcher = delivery.watch()
        first = asyncio.ensure_future(anext(watcher))
        await asyncio.sleep(0)
        read = make_event(0)
        await delivery.publish(read)
        async with asyncio.timeout(2):
            assert (await first).id == read.id
        events = [make_event(n) for n in range(1, 11)]  # the watcher reads none of these meanwhile
        async with asyncio.timeout(5):
            for event in events:
                await delivery.publish(event)
        async with asyncio.timeout(2):
            kept = [await anext(watcher) for _ in range(delivery.WATCH_QUEUE)]
        assert [e.id for e in kept] == [e.id for e in events[-delivery.WATCH_QUEUE :]]
        waiting = asyncio.ensure_future(anext(watcher))  # nothing older is left behind
        await asyncio.sleep(0)
        assert not waiting.done()
        late = make_event(20)
        await delivery.publish(late)
        async with asyncio.timeout(2):
            assert (await waiting).id == late.id
        await watcher.aclose()
        await delivered(tmp_path / "a.jsonl", [*events, late])


# ---------------------------------------------------------------------------------------------------
# apply


async def test_apply_a_changed_config_swaps_the_sinks(tmp_path: Path) -> None:
    board = StatusBoard()
    old, new = config(tmp_path, "a.jsonl"), config(tmp_path, "b.jsonl")
    async with Delivery(old, board) as delivery:
        before = make_event(0)
        await delivery.publish(before)
        await delivered(tmp_path / "a.jsonl", [before])
        dispatcher = delivery.dispatcher
        assert await delivery.apply(new) == ["sinks"]
        assert delivery.config == new
        assert delivery.dispatcher is not dispatcher
        assert [getattr(s, "path", None) for s in delivery.sinks] == [tmp_path / "b.jsonl"]
        after = make_event(1)
        await delivery.publish(after)
        await delivered(tmp_path / "b.jsonl", [after])
    assert jsonl_ids(tmp_path / "a.jsonl") == [before.id]
    assert jsonl_ids(tmp_path / "b.jsonl") == [after.id]


async def test_apply_the_same_config_is_a_no_op(tmp_path: Path) -> None:
    async with Delivery(config(tmp_path), StatusBoard()) as delivery:
        dispatcher, sinks = delivery.dispatcher, delivery.sinks
        assert await delivery.apply(config(tmp_path)) == []  # equal, not the same object
        assert delivery.dispatcher is dispatcher and delivery.sinks is sinks
        event = make_event(0)
        await delivery.publish(event)
        await delivered(tmp_path / "a.jsonl", [event])


async def test_an_event_published_during_a_swap_is_not_lost(tmp_path: Path) -> None:
    async with Delivery(config(tmp_path, "a.jsonl"), StatusBoard()) as delivery:
        swap = asyncio.create_task(delivery.apply(config(tmp_path, "b.jsonl")))
        await asyncio.sleep(0)  # the swap is under way: the old sinks are closing
        assert not swap.done()
        event = make_event(0)
        await delivery.publish(event)
        assert await swap == ["sinks"]
        await eventually(
            lambda: event.id in jsonl_ids(tmp_path / "a.jsonl") + jsonl_ids(tmp_path / "b.jsonl"),
            what="the event delivered by the old sinks or the new ones",
        )


async def test_a_start_failure_rolls_back_to_the_previous_sinks(tmp_path: Path, starter: Starter) -> None:
    board = StatusBoard()
    old, new = config(tmp_path, "a.jsonl"), config(tmp_path, "b.jsonl")
    starter.fail = lambda c: c == new
    async with Delivery(old, board, start_dispatcher=starter) as delivery:
        first = delivery.dispatcher
        with pytest.raises(ConfigError, match=r"sinks: cannot start: OSError: broker unreachable"):
            await delivery.apply(new)
        assert starter.started == [old, new, old]
        assert delivery.config == old
        assert delivery.dispatcher is not first  # the previous sinks, started again
        assert [getattr(s, "path", None) for s in delivery.sinks] == [tmp_path / "a.jsonl"]
        assert board.snapshot().sinks()["jsonl"].target == ("path", str(tmp_path / "a.jsonl"))
        event = make_event(0)
        await delivery.publish(event)
        await delivered(tmp_path / "a.jsonl", [event])
    assert not (tmp_path / "b.jsonl").exists()


async def test_a_sink_that_cannot_start_for_real_is_rolled_back(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the new sink needs a folder")
    old, new = config(tmp_path, "a.jsonl"), config(tmp_path, Path("not-a-dir") / "b.jsonl")
    async with Delivery(old, StatusBoard()) as delivery:
        delivery.check(new)  # constructing the sink works: only starting it fails
        with pytest.raises(ConfigError, match="sinks: cannot start: FileExistsError"):
            await delivery.apply(new)
        assert delivery.config == old
        event = make_event(0)
        await delivery.publish(event)
        await delivered(tmp_path / "a.jsonl", [event])


async def test_when_the_rollback_fails_too_events_wait_for_working_sinks(
    tmp_path: Path, starter: Starter
) -> None:
    board = StatusBoard()
    old, broken, fixed = (config(tmp_path, name) for name in ("a.jsonl", "x.jsonl", "b.jsonl"))
    async with Delivery(old, board, start_dispatcher=starter) as delivery:
        starter.fail = lambda c: c != fixed
        with pytest.raises(ConfigError):
            await delivery.apply(broken)
        assert delivery.config == old and board.snapshot().sinks() == {}
        waiting = make_event(0)
        await delivery.publish(waiting)  # stored for the sinks to come
        assert await delivery.apply(fixed) == ["sinks"]
        await delivered(tmp_path / "b.jsonl", [waiting])
    assert not (tmp_path / "x.jsonl").exists()


# ---------------------------------------------------------------------------------------------------
# check


async def test_check_refuses_a_changed_outbox_path_and_starts_nothing(
    tmp_path: Path, starter: Starter
) -> None:
    old = config(tmp_path)
    moved = config(tmp_path, "b.jsonl", outbox_path=tmp_path / "elsewhere" / "outbox.sqlite3")
    async with Delivery(old, StatusBoard(), start_dispatcher=starter) as delivery:
        with pytest.raises(ConfigError, match="outbox_path cannot change"):
            delivery.check(moved)
        assert starter.started == [old] and delivery.config == old
        assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "b.jsonl").exists()
        delivery.check(config(tmp_path, "b.jsonl"))  # the same outbox: fine, and still nothing started
        assert starter.started == [old] and not (tmp_path / "b.jsonl").exists()


@pytest.mark.parametrize("field", ["ca_file", "cert_file"])
async def test_check_refuses_an_unreadable_mqtt_tls_file(
    tmp_path: Path, starter: Starter, field: str
) -> None:
    readable = tmp_path / "readable.pem"
    readable.write_text("not used: the check stops at the missing file")
    files = dict.fromkeys(("ca_file", "cert_file", "key_file"), readable) | {field: tmp_path / "missing.pem"}
    mqtt = MqttSettings(host="broker.invalid", tls=TlsSettings(**files))
    old = config(tmp_path)
    async with Delivery(old, StatusBoard(), start_dispatcher=starter) as delivery:
        with pytest.raises(ConfigError, match=rf"sinks\.mqtt\.tls\.{field}: cannot read .*missing\.pem"):
            delivery.check(config(tmp_path, mqtt=mqtt))
        assert starter.started == [old] and delivery.config == old
        assert [s.name for s in delivery.sinks] == ["jsonl"]


# ---------------------------------------------------------------------------------------------------
# the status board


async def test_sink_statuses_are_on_the_board_while_the_sinks_run(tmp_path: Path) -> None:
    board = StatusBoard()
    async with Delivery(config(tmp_path, "a.jsonl"), board) as delivery:
        jsonl = SinkStatus("jsonl", None, target=("path", str(tmp_path / "a.jsonl")))
        assert board.snapshot().entries[sink_key("jsonl")] == jsonl
        await delivery.apply(config(tmp_path, "b.jsonl"))
        assert board.snapshot().sinks()["jsonl"].target == ("path", str(tmp_path / "b.jsonl"))
        await delivery.apply(config(tmp_path, None))  # no sink at all
        assert board.snapshot().sinks() == {}
        await delivery.apply(config(tmp_path, "c.jsonl"))
        assert set(board.snapshot().sinks()) == {"jsonl"}
    assert board.snapshot().sinks() == {}


class StatusSink(FakeSink):
    """A sink that pushes each status change itself (StatusWatch, as the MQTT sink does)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.status_listeners: list[Callable[[SinkStatus], None]] = []

    def watch_status(self, listener: Callable[[SinkStatus], None]) -> Callable[[], None]:
        self.status_listeners.append(listener)
        return lambda: self.status_listeners.remove(listener)

    def push(self, status: SinkStatus) -> None:
        for listener in list(self.status_listeners):
            listener(status)


async def test_sinks_push_their_status_changes_until_they_are_gone(tmp_path: Path, starter: Starter) -> None:
    board = StatusBoard()
    watched, pushing = FakeSink("watched"), StatusSink("pushing")
    starter.sinks_for = lambda c: [watched, pushing]
    async with Delivery(config(tmp_path), board, start_dispatcher=starter):
        sinks = board.snapshot().sinks()
        assert sinks == {"watched": SinkStatus("watched", True), "pushing": SinkStatus("pushing", True)}
        watched.down = True
        for listener in list(watched.listeners):  # the connection drops (ConnectionWatch)
            listener(False)
        assert board.snapshot().sinks()["watched"] == SinkStatus("watched", False)
        watched.reconnect()
        assert board.snapshot().sinks()["watched"] == SinkStatus("watched", True)
        refused = SinkStatus("pushing", False, "refused", ("broker", "h:1883"))
        pushing.push(refused)
        assert board.snapshot().entries[sink_key("pushing")] == refused
    assert board.snapshot().sinks() == {}
    assert pushing.status_listeners == [] and watched.closed and pushing.closed
    watched.reconnect()  # after the exit nothing puts a sink back on the board
    pushing.push(SinkStatus("pushing", True))
    assert board.snapshot().sinks() == {}


# ---------------------------------------------------------------------------------------------------
# the snapshot store


async def test_the_snapshot_store_is_kept_across_a_swap_unless_its_settings_change(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    base = config(tmp_path, "a.jsonl", snapshot_dir=snapshots)
    async with Delivery(base, StatusBoard()) as delivery:
        store = delivery.snapshots
        assert store is not None and store.directory == snapshots
        await delivery.apply(config(tmp_path, "b.jsonl", snapshot_dir=snapshots))
        assert delivery.snapshots is store
        await delivery.apply(config(tmp_path, "b.jsonl", snapshot_dir=snapshots, snapshot_max_count=9))
        capped = delivery.snapshots
        assert capped is not store and capped is not None and capped.max_count == 9
        linked = config(
            tmp_path, "b.jsonl", snapshot_dir=snapshots, snapshot_max_count=9, public_url="http://e:1/"
        )
        await delivery.apply(linked)
        assert delivery.snapshots is not capped and delivery.snapshots is not None
        assert delivery.snapshots.url_for("x") == "http://e:1/snapshots/x.jpg"
        await delivery.apply(config(tmp_path, "b.jsonl"))
        assert delivery.snapshots is None


async def test_a_failed_swap_that_turned_snapshots_off_restores_them(
    tmp_path: Path, starter: Starter
) -> None:
    old = config(tmp_path, "a.jsonl", snapshot_dir=tmp_path / "snapshots")
    new = config(tmp_path, "b.jsonl")  # snapshots off, and sinks that fail to start
    starter.fail = lambda c: c == new
    async with Delivery(old, StatusBoard(), start_dispatcher=starter) as delivery:
        with pytest.raises(ConfigError):
            await delivery.apply(new)
        assert delivery.config == old
        assert delivery.snapshots is not None


async def test_a_failed_swap_keeps_the_snapshot_store(tmp_path: Path, starter: Starter) -> None:
    snapshots = tmp_path / "snapshots"
    old = config(tmp_path, "a.jsonl", snapshot_dir=snapshots)
    new = config(tmp_path, "b.jsonl", snapshot_dir=snapshots)
    starter.fail = lambda c: c == new
    async with Delivery(old, StatusBoard(), start_dispatcher=starter) as delivery:
        store = delivery.snapshots
        with pytest.raises(ConfigError):
            await delivery.apply(new)
        assert delivery.snapshots is store


# ---------------------------------------------------------------------------------------------------
# the startup line


def test_where_events_go_names_every_destination(tmp_path: Path) -> None:
    mqtt = MqttSettings(host="broker")
    line = where_events_go(config(tmp_path, "a.jsonl", mqtt=mqtt, snapshot_dir=tmp_path / "snaps"))
    assert f"JSONL {(tmp_path / 'a.jsonl').resolve()}, MQTT;" in line
    assert f"snapshots to {(tmp_path / 'snaps').resolve()} (served at" in line
    assert f"wait in {(tmp_path / 'delivery.sqlite3').resolve()}" in line
    off = where_events_go(config(tmp_path, None))
    assert "events go to no sink;" in off and "nowhere (events.snapshot_dir is off)" in off
