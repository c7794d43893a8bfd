"""The status board (edge_runtime/status.py): put/remove, snapshots, changes(), listen(), and the
statuses' to_dict()."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from edge_runtime import status as status_module
from edge_runtime.status import (
    CONFIG,
    MODEL,
    Board,
    CameraState,
    CameraStatus,
    ConfigOutcome,
    ConfigStatus,
    Failure,
    FailureReason,
    LoadState,
    ModelStatus,
    Serving,
    SinkStatus,
    StatusBoard,
    camera_key,
    iso,
    sink_key,
)


def camera(camera_id: str = "c1", state: CameraState = CameraState.STREAMING, **fields: Any) -> CameraStatus:
    values: dict[str, Any] = {
        "camera": camera_id,
        "url": "rtsp://cam/stream",
        "state": state,
        "frames": 0,
        "superseded": 0,
        "reconnects": 0,
        "stalls": 0,
        "last_frame_at": None,
        "last_error": None,
    }
    return CameraStatus(**(values | fields))


async def next_board(boards: AsyncIterator[Board], timeout: float = 2.0) -> Board:
    async with asyncio.timeout(timeout):
        return await anext(boards)


async def settle() -> None:
    """Let every task that can run now run (readers waiting on the board reach their next wait)."""
    for _ in range(5):
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------------------------------
# put / remove


async def test_put_changes_the_board_and_an_equal_status_is_not_a_change() -> None:
    board = StatusBoard()
    assert board.snapshot().version == 0
    board.put(camera_key("c1"), camera(frames=1))
    assert board.snapshot().version == 1
    board.put(camera_key("c1"), camera(frames=1))  # equal, though another object
    assert board.snapshot().version == 1
    board.put(camera_key("c1"), camera(frames=2))
    after = board.snapshot()
    assert after.version == 2
    assert after.entries[camera_key("c1")] == camera(frames=2)


async def test_remove_takes_the_key_away_once_and_an_absent_key_is_no_change() -> None:
    board = StatusBoard()
    board.put(sink_key("jsonl"), SinkStatus("jsonl", None))
    board.remove(sink_key("jsonl"))
    assert sink_key("jsonl") not in board.snapshot().entries
    assert board.snapshot().version == 2
    board.remove(sink_key("jsonl"))
    board.remove(sink_key("never-there"))
    assert board.snapshot().version == 2


async def test_a_snapshot_is_a_consistent_read_only_view() -> None:
    board = StatusBoard()
    board.put(MODEL, ModelStatus(configured="a"))
    before = board.snapshot()
    board.put(MODEL, ModelStatus(configured="b"))
    board.put(CONFIG, ConfigStatus(3))
    assert before.model().configured == "a" and set(before.entries) == {MODEL}
    assert board.snapshot().model().configured == "b"
    entries: Any = before.entries
    with pytest.raises(TypeError):
        entries[MODEL] = ModelStatus()


# ---------------------------------------------------------------------------------------------------
# typed accessors


async def test_accessors_sort_the_entries_by_type() -> None:
    board = StatusBoard()
    c1, c2 = camera("c1"), camera("c2", CameraState.BACKOFF)
    jsonl, mqtt = SinkStatus("jsonl", None), SinkStatus("mqtt", False, "refused")
    model = ModelStatus(LoadState.READY, "/m", update=2, configured="/m")
    config = ConfigStatus(7, ConfigOutcome.APPLIED, None, ["sinks"])
    for key, status in [
        (camera_key("c1"), c1),
        (camera_key("c2"), c2),
        (sink_key("jsonl"), jsonl),
        (sink_key("mqtt"), mqtt),
        (MODEL, model),
        (CONFIG, config),
    ]:
        board.put(key, status)
    snapshot = board.snapshot()
    assert snapshot.cameras() == {"c1": c1, "c2": c2}
    assert snapshot.sinks() == {"jsonl": jsonl, "mqtt": mqtt}
    assert snapshot.model() is model
    assert snapshot.config() is config


async def test_accessors_default_when_absent() -> None:
    snapshot = StatusBoard().snapshot()
    assert snapshot.cameras() == {} and snapshot.sinks() == {}
    assert snapshot.model() == ModelStatus()
    assert snapshot.model().status is LoadState.LOADING
    assert snapshot.config() == ConfigStatus()
    assert snapshot.config().status is ConfigOutcome.BASE


# ---------------------------------------------------------------------------------------------------
# changes()


async def test_changes_yields_the_board_now_then_after_each_change() -> None:
    board = StatusBoard()
    board.put(MODEL, ModelStatus(configured="first"))
    async with contextlib.aclosing(board.changes()) as boards:
        now = await next_board(boards)
        assert now.version == 1 and now.model().configured == "first"
        waiting = asyncio.ensure_future(next_board(boards))
        await settle()
        assert not waiting.done()  # nothing changed: the reader waits
        board.put(MODEL, ModelStatus(configured="first"))  # equal: not a change
        await settle()
        assert not waiting.done()
        board.put(MODEL, ModelStatus(configured="second"))
        changed = await waiting
        assert changed.version == 2 and changed.model().configured == "second"
        board.remove(MODEL)
        removed = await next_board(boards)
        assert removed.version == 3 and MODEL not in removed.entries


async def test_changes_coalesces_a_slow_reader_sees_the_latest_not_a_backlog() -> None:
    board = StatusBoard()
    async with contextlib.aclosing(board.changes()) as boards:
        assert (await next_board(boards)).version == 0
        for n in range(1, 6):  # no await between: the reader is behind by five changes
            board.put(CONFIG, ConfigStatus(n))
        latest = await next_board(boards)
        assert latest.version == 5 and latest.config().desired_version == 5
        # No backlog of the four skipped boards: the next iteration waits for a new change.
        waiting = asyncio.ensure_future(next_board(boards))
        await settle()
        assert not waiting.done()
        board.put(CONFIG, ConfigStatus(6))
        assert (await waiting).config().desired_version == 6


async def test_several_concurrent_readers_all_wake_on_one_change() -> None:
    board = StatusBoard()
    first_seen = [asyncio.Event() for _ in range(4)]

    async def reader(index: int) -> Board:
        async with contextlib.aclosing(board.changes()) as boards:
            async for snapshot in boards:
                if snapshot.version == 0:
                    first_seen[index].set()
                    continue
                return snapshot
        raise AssertionError("changes() ended")

    readers = [asyncio.create_task(reader(i)) for i in range(4)]
    async with asyncio.timeout(2):
        await asyncio.gather(*(seen.wait() for seen in first_seen))
    await settle()
    assert not any(task.done() for task in readers)
    board.put(sink_key("mqtt"), SinkStatus("mqtt", True))
    async with asyncio.timeout(2):
        woken = await asyncio.gather(*readers)
    assert [b.version for b in woken] == [1, 1, 1, 1]
    assert all(b.sinks() == {"mqtt": SinkStatus("mqtt", True)} for b in woken)


# ---------------------------------------------------------------------------------------------------
# listen()


async def test_listen_sees_every_change_in_order_with_its_key_then_unsubscribes() -> None:
    board = StatusBoard()
    heard: list[tuple[str, int]] = []
    unsubscribe = board.listen(lambda key: heard.append((key, board.snapshot().version)))
    board.put(camera_key("c1"), camera(frames=1))
    board.put(sink_key("jsonl"), SinkStatus("jsonl", None))
    board.put(camera_key("c1"), camera(frames=1))  # equal: no call
    board.put(camera_key("c1"), camera(frames=2))
    board.remove(sink_key("jsonl"))
    board.remove(sink_key("jsonl"))  # absent: no call
    # Every change, in order, each heard right after it was made (the board already shows it).
    assert heard == [("camera/c1", 1), ("sink/jsonl", 2), ("camera/c1", 3), ("sink/jsonl", 4)]
    unsubscribe()
    unsubscribe()  # twice is harmless
    board.put(MODEL, ModelStatus(configured="x"))
    assert len(heard) == 4


async def test_listeners_are_independent_and_one_may_unsubscribe_from_inside_a_call() -> None:
    board = StatusBoard()
    first: list[str] = []
    second: list[str] = []
    unsubscribe_first = board.listen(lambda key: (first.append(key), unsubscribe_first()))
    board.listen(second.append)
    board.put(MODEL, ModelStatus(configured="a"))
    board.put(CONFIG, ConfigStatus(1))
    assert first == [MODEL]
    assert second == [MODEL, CONFIG]


# ---------------------------------------------------------------------------------------------------
# to_dict()


def test_camera_status_computes_the_frame_age_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(now=1_000.0)
    monkeypatch.setattr(status_module, "time", SimpleNamespace(time=lambda: clock.now))
    failure = Failure(FailureReason.STALLED, 990.25)
    status = camera(
        state=CameraState.STALLED,
        frames=12,
        superseded=3,
        reconnects=1,
        stalls=1,
        failures=2,
        last_frame_at=997.5,
        last_error="no frame for 5.0 s",
        last_failure=failure,
    )
    assert status.to_dict() == {
        "url": "rtsp://cam/stream",
        "state": "stalled",
        "frames": 12,
        "superseded": 3,
        "reconnects": 1,
        "stalls": 1,
        "failures": 2,
        "last_frame_age_s": 2.5,
        "last_error": "no frame for 5.0 s",
        "last_failure": {"reason": "stalled", "at": iso(990.25)},
    }
    assert failure.to_dict()["at"] == "1970-01-01T00:16:30.250+00:00"
    clock.now = 1_010.1234  # the same status read later: an older frame
    assert status.last_frame_age_s == pytest.approx(12.6234)
    assert status.to_dict()["last_frame_age_s"] == 12.623
    clock.now = 990.0  # a wall clock that stepped back never makes a negative age
    assert status.to_dict()["last_frame_age_s"] == 0.0


def test_camera_status_with_no_frame_yet_has_no_age() -> None:
    status = camera(state=CameraState.CONNECTING)
    assert status.last_frame_age_s is None
    out = status.to_dict()
    assert out["last_frame_age_s"] is None and out["last_failure"] is None
    assert out["state"] == "connecting"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (SinkStatus("jsonl", None, target=("path", "/data/events.jsonl")), {"path": "/data/events.jsonl"}),
        (SinkStatus("jsonl", None, last_error="ignored without a connection"), {}),
        (SinkStatus("mqtt", True), {"connected": True, "last_error": None}),
        (
            SinkStatus("mqtt", False, "refused", ("broker", "host:8883")),
            {"connected": False, "broker": "host:8883", "last_error": "refused"},
        ),
    ],
    ids=["file", "file-no-target", "connected", "disconnected-with-target"],
)
def test_sink_status_to_dict(status: SinkStatus, expected: dict[str, object]) -> None:
    assert status.to_dict() == expected
    assert list(status.to_dict()) == list(expected)  # connected first, then the target, then the error


def test_model_status_adds_the_serving_model_only_when_one_serves() -> None:
    loading = ModelStatus(LoadState.LOADING, "/models/b", None, 2, "/models/b")
    assert loading.to_dict() == {
        "status": "loading",
        "source": "/models/b",
        "error": None,
        "update": 2,
        "configured": "/models/b",
    }
    serving = ModelStatus(
        LoadState.FAILED, "/models/b", "bad zip", 2, "/models/a", Serving("meter", "ab" * 20, "cpu")
    )
    assert serving.to_dict() == {
        "status": "failed",
        "source": "/models/b",
        "error": "bad zip",
        "update": 2,
        "configured": "/models/a",
        "id": "meter",
        "sha1": "ab" * 20,
        "device": "cpu",
    }


def test_config_status_to_dict_reports_a_copy_of_the_changes() -> None:
    changes = ["sinks", "camera c1 added"]
    config = ConfigStatus(4, ConfigOutcome.APPLIED, None, changes)
    out = config.to_dict()
    assert out == {"desired_version": 4, "status": "applied", "error": None, "changes": changes}
    assert out["changes"] is not changes
    assert ConfigStatus().to_dict() == {
        "desired_version": None,
        "status": "base",
        "error": None,
        "changes": [],
    }


def test_show_connection_keeps_the_board_in_step_until_unsubscribed() -> None:
    from fakes import FakeHub

    from edge_runtime.status import show_connection

    board, hub = StatusBoard(), FakeHub()
    hub.last_error = "refused"
    unwatch = show_connection(board, "hub", hub)
    assert board.snapshot().sinks()["hub"] == SinkStatus("hub", False, "refused")
    hub.last_error = None
    hub.up()
    assert board.snapshot().sinks()["hub"] == SinkStatus("hub", True, None)
    unwatch()
    hub.down()
    assert board.snapshot().sinks()["hub"].connected is True  # no longer followed
