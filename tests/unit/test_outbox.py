"""The durable outbox: order, per-sink independence, durability across close / reopen / a hard exit,
the count and age bounds (reported, never silent), a damaged file moved aside, unusable paths; the
delivery order of next_batch (fresh rows overtake the backlog, never a row of their own key) and a
file from before order keys."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import FakeClock

from edge_runtime.errors import ConfigError
from edge_runtime.events.outbox import Backlog, MessageType, Outbox, Trimmed, order_key

REPO = Path(__file__).resolve().parents[2]
LARGE = 10**6


@pytest.fixture
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[Outbox, FakeClock]]:
    """An open outbox whose clock the test sets."""
    clock = FakeClock(0.0)
    box = Outbox(tmp_path / "outbox.sqlite3", clock=clock)
    await box.open()
    yield box, clock
    await box.close()


async def put_n(box: Outbox, sinks: list[str], n: int, start: int = 0, max_per_sink: int = LARGE) -> None:
    for i in range(start, start + n):
        await box.put(sinks, MessageType.EVENT, f"m{i}", {"n": i, "camera": "cam-1"}, max_per_sink)


async def ids(box: Outbox, sink: str, limit: int = 1000) -> list[str]:
    return [r.id for r in await box.peek(sink, limit)]


async def test_put_peek_ack_keeps_the_order(outbox: Outbox) -> None:
    await put_n(outbox, ["a"], 5)
    records = await outbox.peek("a", 10)
    assert [r.id for r in records] == ["m0", "m1", "m2", "m3", "m4"]
    assert [r.body for r in records] == [{"n": i, "camera": "cam-1"} for i in range(5)]
    assert all(r.sink == "a" and r.type == "event" and r.attempts == 0 for r in records)
    assert [r.seq for r in records] == sorted(r.seq for r in records)
    assert len({r.seq for r in records}) == 5
    assert await ids(outbox, "a", limit=2) == ["m0", "m1"]  # the limit takes the oldest

    await outbox.ack(records[0].seq)
    await outbox.ack(records[2].seq)  # acks need not come in order
    assert await ids(outbox, "a") == ["m1", "m3", "m4"]
    await outbox.ack(records[0].seq)  # acking twice is harmless
    assert await ids(outbox, "a") == ["m1", "m3", "m4"]


async def test_each_sink_has_its_own_copy(outbox: Outbox) -> None:
    dropped = await outbox.put(["a", "b"], MessageType.EVENT, "m0", {"n": 0}, LARGE)
    assert dropped == {"a": 0, "b": 0}
    await outbox.put(["b"], MessageType.SUMMARY, "s0", {"type": "summary"}, LARGE)
    [a0] = await outbox.peek("a", 10)
    b0, s0 = await outbox.peek("b", 10)
    assert (a0.id, b0.id, s0.id) == ("m0", "m0", "s0")
    assert a0.seq != b0.seq and s0.type == "summary"

    await outbox.ack(a0.seq)  # confirmed by a: b still waits for its copy
    assert await outbox.peek("a", 10) == []
    assert await ids(outbox, "b") == ["m0", "s0"]
    assert await outbox.pending_by_sink() == {"b": 2}
    assert await outbox.peek("nobody", 10) == []


async def test_note_attempt_counts_failures(outbox: Outbox) -> None:
    await put_n(outbox, ["a"], 2)
    first, _ = await outbox.peek("a", 10)
    await outbox.note_attempt(first.seq)
    await outbox.note_attempt(first.seq)
    first_again, second_again = await outbox.peek("a", 10)
    assert (first_again.attempts, second_again.attempts) == (2, 0)


async def test_backlog_and_pending(clocked: tuple[Outbox, FakeClock]) -> None:
    outbox, clock = clocked
    assert await outbox.backlog("a") == Backlog(0, None)
    assert await outbox.pending_by_sink() == {}
    clock.now = 1000.0
    await put_n(outbox, ["a", "b"], 2)
    clock.now = 1005.0
    await put_n(outbox, ["a"], 1, start=2)
    assert await outbox.backlog("a") == Backlog(3, 1000.0)
    assert await outbox.backlog("b") == Backlog(2, 1000.0)
    assert await outbox.pending_by_sink() == {"a": 3, "b": 2}
    [oldest, *_] = await outbox.peek("a", 1)
    await outbox.ack(oldest.seq)
    assert (await outbox.backlog("a")).depth == 2


async def test_rows_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = Outbox(path)
    await first.open()
    await put_n(first, ["a", "b"], 4)
    [m0a, *_] = await first.peek("a", 1)
    await first.ack(m0a.seq)
    [m1a, *_] = await first.peek("a", 1)
    await first.note_attempt(m1a.seq)
    *_, m3b = await first.peek("b", 10)
    await first.ack(m3b.seq)  # the newest row: its seq must not be handed out again
    await first.close()

    second = Outbox(path)
    await second.open()
    try:
        assert await ids(second, "a") == ["m1", "m2", "m3"]
        assert await ids(second, "b") == ["m0", "m1", "m2"]
        assert (await second.peek("a", 1))[0].attempts == 1
        await second.put(["a"], MessageType.EVENT, "new", {}, LARGE)
        new = (await second.peek("a", 10))[-1]
        assert new.id == "new" and new.seq > m3b.seq  # seq never goes back, even after deletes
    finally:
        await second.close()


async def test_a_put_is_on_disk_before_it_returns(tmp_path: Path) -> None:
    """A process that dies right after put (no close, no checkpoint) loses nothing."""
    path = tmp_path / "outbox.sqlite3"
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from pathlib import Path
        from edge_runtime.events.outbox import Outbox

        async def main():
            box = Outbox(Path({str(path)!r}))
            await box.open()
            for i in range(3):
                await box.put(["a"], "event", f"m{{i}}", {{"n": i}}, 100)
            os._exit(0)  # like a power cut: no close, no WAL checkpoint

        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=60)
    box = Outbox(path)
    await box.open()
    try:
        assert await ids(box, "a") == ["m0", "m1", "m2"]
    finally:
        await box.close()


async def test_the_file_is_wal_with_full_sync(outbox: Outbox) -> None:
    await put_n(outbox, ["a"], 1)
    with sqlite3.connect(outbox.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    full = 2
    assert await outbox.pragma("synchronous") == full


async def test_count_bound_drops_the_oldest_and_reports_it(outbox: Outbox) -> None:
    await put_n(outbox, ["a", "b"], 3, max_per_sink=3)
    dropped = await outbox.put(["a", "b"], MessageType.EVENT, "m3", {"n": 3}, 3)
    assert dropped == {"a": 1, "b": 1}
    assert await ids(outbox, "a") == ["m1", "m2", "m3"]
    assert await ids(outbox, "b") == ["m1", "m2", "m3"]

    # A smaller bound (e.g. after a settings change) drops everything above it at once.
    assert await outbox.put(["a"], MessageType.EVENT, "m4", {"n": 4}, 1) == {"a": 3}
    assert await ids(outbox, "a") == ["m4"]
    assert await ids(outbox, "b") == ["m1", "m2", "m3"]  # the other sink's bound is its own


async def test_trim_by_count(outbox: Outbox) -> None:
    await put_n(outbox, ["a"], 5)
    await put_n(outbox, ["b"], 2)
    assert await outbox.trim("a", max_events=2, max_age_s=3600) == Trimmed(full=3, expired=0)
    assert await ids(outbox, "a") == ["m3", "m4"]
    assert await outbox.trim("b", max_events=2, max_age_s=3600) == Trimmed()
    assert await outbox.trim("a", max_events=2, max_age_s=3600) == Trimmed()


async def test_trim_by_age(clocked: tuple[Outbox, FakeClock]) -> None:
    outbox, clock = clocked
    clock.now = 10_000.0
    await put_n(outbox, ["a", "b"], 2)  # created 10000
    clock.now = 10_050.0
    await put_n(outbox, ["a"], 1, start=2)  # created 10050
    clock.now = 10_100.0
    assert await outbox.trim("a", max_events=LARGE, max_age_s=100) == Trimmed()  # exactly 100 s: kept
    clock.now = 10_100.5
    assert await outbox.trim("a", max_events=LARGE, max_age_s=100) == Trimmed(full=0, expired=2)
    assert await ids(outbox, "a") == ["m2"]
    assert await ids(outbox, "b") == ["m0", "m1"]  # trimming a does not touch b
    clock.now = 20_000.0
    assert await outbox.trim("a", max_events=LARGE, max_age_s=100) == Trimmed(full=0, expired=1)
    assert await outbox.backlog("a") == Backlog(0, None)


async def test_trim_reports_both_bounds_at_once(clocked: tuple[Outbox, FakeClock]) -> None:
    outbox, clock = clocked
    clock.now = 0.0
    await put_n(outbox, ["a"], 2)
    clock.now = 500.0
    await put_n(outbox, ["a"], 4, start=2)
    assert await outbox.trim("a", max_events=3, max_age_s=100) == Trimmed(full=1, expired=2)
    assert await ids(outbox, "a") == ["m3", "m4", "m5"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"this is not an sqlite database " * 200,
        lambda data: data[:100] + b"\xff" * (4096 - 100) + data[4096:],  # page 1 (the schema) damaged
        lambda data: data[:8192] + b"\x00\x13" * ((len(data) - 8192) // 2),  # the table pages damaged
    ],
    ids=["not-sqlite", "schema-page", "data-pages"],
)
async def test_a_damaged_file_is_moved_aside_and_a_new_outbox_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    await box.open()
    await put_n(box, ["a"], 100)
    await box.close()
    damaged = damage(path.read_bytes())  # type: ignore[operator]
    path.write_bytes(damaged)

    caplog.set_level(logging.ERROR, logger="edge_runtime.events.outbox")
    before = time.time()
    box = Outbox(path)
    await box.open()
    try:
        assert await box.pending_by_sink() == {}
        await box.put(["a"], MessageType.EVENT, "fresh", {}, LARGE)
        assert await ids(box, "a") == ["fresh"]
    finally:
        await box.close()
    [aside] = list(tmp_path.glob("outbox.sqlite3.corrupt-*"))
    stamp = int(aside.name.rsplit("-", 1)[1])
    assert int(before) <= stamp <= time.time()
    assert aside.read_bytes() == damaged, "the damaged file is kept as it was, for forensics"
    assert any(str(aside) in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_an_empty_file_is_a_new_outbox(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"")
    box = Outbox(path)
    await box.open()
    try:
        assert await box.pending_by_sink() == {}
    finally:
        await box.close()
    assert list(tmp_path.glob("*.corrupt-*")) == []


async def test_a_missing_parent_folder_is_created(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "var" / "deep" / "outbox.sqlite3")
    await box.open()
    await box.close()
    assert (tmp_path / "var" / "deep" / "outbox.sqlite3").is_file()


@pytest.mark.parametrize("where", ["parent-is-a-file", "path-is-a-folder"])
async def test_an_unusable_path_is_a_config_error(tmp_path: Path, where: str) -> None:
    if where == "parent-is-a-file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "outbox.sqlite3"
    else:
        path = tmp_path / "folder"
        path.mkdir()
    box = Outbox(path)
    try:
        with pytest.raises(ConfigError, match=r"^events\.outbox_path: cannot open .*" + path.name):
            await box.open()
    finally:
        await box.close()
    assert list(tmp_path.glob("*.corrupt-*")) == [], "an unusable path is not mistaken for damage"


async def test_use_before_open_is_an_error(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    try:
        with pytest.raises(RuntimeError, match="not open"):
            await box.peek("a", 1)
    finally:
        await box.close()


def table_leaf_pages(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT pageno, pagetype FROM dbstat WHERE name = 'outbox'").fetchall()
    return [page for page, kind in rows if kind == "leaf"]


async def test_damaged_table_pages_are_found_at_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    await box.open()
    await put_n(box, ["a"], 300)
    await box.close()
    data = bytearray(path.read_bytes())
    leaves = table_leaf_pages(path)
    assert len(leaves) >= 3
    for page in leaves:  # the rows only: the index and the schema stay intact
        data[(page - 1) * 4096 : page * 4096] = b"\x13" * 4096
    path.write_bytes(bytes(data))

    box = Outbox(path)
    await box.open()
    try:
        assert await box.peek("a", 10) == []
        await box.put(["a"], MessageType.EVENT, "fresh", {}, LARGE)
        assert await ids(box, "a") == ["fresh"]
    finally:
        await box.close()
    assert len(list(tmp_path.glob("outbox.sqlite3.corrupt-*"))) == 1


async def test_two_damaged_files_in_one_second_are_both_kept(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.25)
    path = tmp_path / "outbox.sqlite3"
    for content in (b"first damaged file " * 100, b"second damaged file " * 100):
        path.write_bytes(content)
        box = Outbox(path, clock=clock)
        await box.open()
        await box.close()
        path.unlink()
    kept = sorted(p.read_bytes()[:6] for p in tmp_path.glob("outbox.sqlite3.corrupt-*"))
    assert kept == [b"first ", b"second"]


# --------------------------------------------------------------------------------------------------
# Delivery order: fresh rows overtake the backlog, a key's rows never overtake each other


async def put_event(box: Outbox, message_id: str, camera: str, tag: str, roi: str = "full") -> int:
    await box.put(["a"], MessageType.EVENT, message_id, {"camera": camera, "roi": roi, "tag": tag}, LARGE)
    return await box.last_seq("a")


async def batch_ids(box: Outbox, fresh_after: int, limit: int = 50) -> list[str]:
    return [r.id for r in await box.next_batch("a", fresh_after, limit)]


def test_the_order_key_is_camera_roi_and_tag_for_events_and_the_type_otherwise() -> None:
    body = {"camera": "c1", "roi": "left", "tag": "stain", "kind": "started", "id": "x"}
    assert order_key("event", body) == '["c1","left","stain"]'
    assert order_key("event", {**body, "kind": "ended", "id": "y"}) == order_key("event", body)
    assert order_key("event", {**body, "roi": "right"}) != order_key("event", body)
    assert order_key("summary", {"camera": "c1"}) == "summary"


async def test_without_a_backlog_next_batch_is_first_in_first_out(outbox: Outbox) -> None:
    assert await outbox.last_seq("a") == 0
    for i in range(6):
        await put_event(outbox, f"m{i}", f"cam-{i % 3}", "stain")
    assert await batch_ids(outbox, 0) == [f"m{i}" for i in range(6)]
    assert await batch_ids(outbox, 0, limit=2) == ["m0", "m1"]
    everything_old = await outbox.last_seq("a")
    assert await batch_ids(outbox, everything_old) == [f"m{i}" for i in range(6)], "all backlog: FIFO"


async def test_fresh_rows_overtake_the_backlog_but_wait_for_their_own_key(outbox: Outbox) -> None:
    await put_event(outbox, "old-a1", "cam-a", "stain")
    await put_event(outbox, "old-b1", "cam-b", "stain")
    await put_event(outbox, "old-a2", "cam-a", "stain")
    await put_event(outbox, "old-c1", "cam-c", "stain")
    fresh_after = await put_event(outbox, "old-d1", "cam-d", "stain")
    await put_event(outbox, "new-x", "cam-x", "stain")  # nothing older with its key: first
    await put_event(outbox, "new-a", "cam-a", "stain")  # after old-a1 and old-a2
    await put_event(outbox, "new-c", "cam-c", "scratch")  # another tag: another key
    await put_event(outbox, "new-x2", "cam-x", "stain")
    assert await batch_ids(outbox, fresh_after) == [
        "new-x",
        "new-c",
        "new-x2",
        "old-a1",  # pushed forward for new-a
        "old-a2",
        "new-a",
        "old-b1",  # then the backlog, oldest first
        "old-c1",
        "old-d1",
    ]
    assert await batch_ids(outbox, fresh_after, limit=4) == ["new-x", "new-c", "new-x2", "old-a1"]


async def test_a_key_with_more_old_rows_than_a_batch_sends_them_first(outbox: Outbox) -> None:
    for i in range(5):
        await put_event(outbox, f"old-a{i}", "cam-a", "stain")
    fresh_after = await put_event(outbox, "old-b", "cam-b", "stain")
    await put_event(outbox, "new-a", "cam-a", "stain")
    await put_event(outbox, "new-z", "cam-z", "stain")
    # A batch of 3 cannot tell whether cam-a has more old rows: new-a waits for a later batch.
    assert await batch_ids(outbox, fresh_after, limit=3) == ["new-z", "old-a0", "old-a1"]


async def test_a_fresh_row_is_not_held_up_by_more_waiting_fresh_rows_than_a_batch(outbox: Outbox) -> None:
    fresh_after = await put_event(outbox, "old-a", "cam-a", "stain")
    for i in range(5):
        await put_event(outbox, f"new-a{i}", "cam-a", "stain")  # all wait for old-a
    await put_event(outbox, "new-z", "cam-z", "stain")
    assert await batch_ids(outbox, fresh_after, limit=3) == ["new-z", "old-a", "new-a0"]


async def test_the_search_for_free_fresh_rows_is_bounded(outbox: Outbox) -> None:
    outbox.fresh_scan = 3  # 2000 in service
    fresh_after = await put_event(outbox, "old-a", "cam-a", "stain")
    for i in range(3):
        await put_event(outbox, f"new-a{i}", "cam-a", "stain")
    await put_event(outbox, "new-z", "cam-z", "stain")  # 4th fresh row: beyond the search
    assert await batch_ids(outbox, fresh_after, limit=2) == ["old-a", "new-a0"]
    outbox.fresh_scan = 4
    assert await batch_ids(outbox, fresh_after, limit=2) == ["new-z", "old-a"]


async def test_summaries_keep_their_own_order(outbox: Outbox) -> None:
    await outbox.put(["a"], MessageType.SUMMARY, "s1", {"type": "summary"}, LARGE)
    fresh_after = await put_event(outbox, "old-e", "cam-1", "stain")
    await outbox.put(["a"], MessageType.SUMMARY, "s2", {"type": "summary"}, LARGE)
    assert await batch_ids(outbox, fresh_after) == ["s1", "s2", "old-e"]


@pytest.mark.parametrize("seed", range(8))
async def test_random_deliveries_never_reorder_a_key_and_lose_nothing(outbox: Outbox, seed: int) -> None:
    """Rows stored while batches are taken, partly sent (a failure stops a batch anywhere), fresh_after
    moved now and then (the dispatcher moves it when delivery resumes): every key arrives whole and in
    the order it was stored."""
    rng = random.Random(seed)
    stored: dict[str, list[str]] = {}
    sent: list[tuple[str, str]] = []
    fresh_after, n = 0, 0

    async def store(count: int) -> None:
        nonlocal n
        for _ in range(count):
            camera, tag = f"cam-{rng.randrange(3)}", f"tag-{rng.randrange(3)}"
            await put_event(outbox, f"m{n}", camera, tag)
            stored.setdefault(order_key("event", {"camera": camera, "roi": "full", "tag": tag}), []).append(
                f"m{n}"
            )
            n += 1

    await store(60)
    for _ in range(40):
        batch = await outbox.next_batch("a", fresh_after, rng.choice([1, 3, 7, 50]))
        if not batch:
            break
        delivered = batch[: rng.randrange(len(batch) + 1)]
        for record in delivered:
            sent.append((order_key(record.type, record.body), record.id))
            await outbox.ack(record.seq)
        if len(delivered) < len(batch) and rng.random() < 0.5:  # a failure, then delivery resumes
            fresh_after = await outbox.last_seq("a")
        if rng.random() < 0.5:
            await store(rng.randrange(6))
    while batch := await outbox.next_batch("a", fresh_after, 50):
        for record in batch:
            sent.append((order_key(record.type, record.body), record.id))
            await outbox.ack(record.seq)
    for key, ids_in_order in stored.items():
        assert [i for k, i in sent if k == key] == ids_in_order, key
    assert len(sent) == n


async def test_a_file_from_before_order_keys_gets_them_at_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL,
                type TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, body TEXT NOT NULL);
            CREATE INDEX outbox_sink_seq ON outbox (sink, seq);
            CREATE INDEX outbox_sink_created ON outbox (sink, created);
            """
        )
        for i, (camera, type_) in enumerate([("cam-a", "event"), ("cam-b", "event"), (None, "summary")]):
            body = json.dumps({"camera": camera, "roi": "full", "tag": "stain"} if camera else {})
            db.execute(
                "INSERT INTO outbox (sink, type, id, created, body) VALUES ('a', ?, ?, 1.0, ?)",
                (type_, f"old{i}", body),
            )
    box = Outbox(path)
    await box.open()
    try:
        fresh_after = await box.last_seq("a")
        await put_event(box, "new-b", "cam-b", "stain")
        await put_event(box, "new-c", "cam-c", "stain")
        assert await batch_ids(box, fresh_after) == ["new-c", "old1", "new-b", "old0", "old2"]
        assert await box.pending_by_sink() == {"a": 5}
    finally:
        await box.close()


# --------------------------------------------------------------------------------------------------
# Headers: routing fields stored beside the body


async def test_headers_are_stored_and_read_back_with_the_type(outbox: Outbox) -> None:
    headers = {"camera": "cam-9", "tag": "dent", "kind": "ended"}
    await outbox.put(["a"], MessageType.EVENT, "e1", {"camera": "in the body"}, LARGE, headers)
    await outbox.put(["a"], MessageType.SUMMARY, "s1", {"type": "summary"}, LARGE)
    event, summary = await outbox.peek("a", 10)
    assert event.type is MessageType.EVENT and event.headers == headers
    assert event.body == {"camera": "in the body"}, "the body goes on the wire unchanged"
    assert summary.type is MessageType.SUMMARY and summary.headers == {}


async def test_an_event_stored_without_headers_gets_them_from_its_body(outbox: Outbox) -> None:
    body = {"camera": "cam-1", "roi": "full", "tag": "stain", "kind": "started", "id": "x"}
    await outbox.put(["a"], MessageType.EVENT, "x", body, LARGE)
    [record] = await outbox.peek("a", 1)
    assert record.headers == {"camera": "cam-1", "tag": "stain", "kind": "started"}


OLD_SCHEMA = """
CREATE TABLE outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    sink     TEXT NOT NULL,
    type     TEXT NOT NULL,
    id       TEXT NOT NULL,
    created  REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    body     TEXT NOT NULL,
    key      TEXT
);
CREATE INDEX outbox_sink_seq ON outbox (sink, seq);
CREATE INDEX outbox_sink_created ON outbox (sink, created);
CREATE INDEX outbox_sink_key_seq ON outbox (sink, key, seq);
"""


async def test_a_file_from_before_headers_gets_them_at_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    event = {"camera": "cam-a", "roi": "full", "tag": "stain", "kind": "ended", "id": "old0"}
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)  # the schema as the previous release wrote it
        rows = [
            ("event", "old0", json.dumps(event), order_key("event", event)),
            ("summary", "old1", json.dumps({"type": "summary", "cameras": {"cam-a": {}}}), "summary"),
            ("event", "old2", json.dumps([1, 2]), "event"),  # not an object: nothing to route by
        ]
        db.executemany(
            "INSERT INTO outbox (sink, type, id, created, body, key) VALUES ('a', ?, ?, 2.0, ?, ?)", rows
        )
    box = Outbox(path)
    await box.open()
    try:
        old_event, old_summary, odd = await box.peek("a", 10)
        assert old_event.headers == {"camera": "cam-a", "tag": "stain", "kind": "ended"}
        assert old_event.body == event and old_event.type is MessageType.EVENT
        assert old_summary.headers == {} and old_summary.type is MessageType.SUMMARY
        assert odd.headers == {}
        await box.put(["a"], MessageType.EVENT, "new", {}, LARGE, {"camera": "cam-b"})
        assert (await box.peek("a", 10))[-1].headers == {"camera": "cam-b"}
        assert await box.pending_by_sink() == {"a": 4}
    finally:
        await box.close()
    with sqlite3.connect(path) as db:  # migrated once: the column is there for the next open
        assert "headers" in [column[1] for column in db.execute("PRAGMA table_info(outbox)")]
