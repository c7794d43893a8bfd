"""Durable store-and-forward between the dispatcher and the sinks (sqlite3, WAL).

One row per (sink, message). A row is deleted only when its sink confirms delivery (MQTT PUBACK,
IoT Hub send completion), so delivery is at-least-once and survives restarts and power loss
(synchronous=FULL). Bounded by count and age per sink; what the bounds drop is returned to the
caller to be counted, never dropped silently.

A row is an envelope: its `type`, routing `headers` (an event's camera, tag and kind: the MQTT topic,
IoT Hub properties) computed once where the event is still typed, and the `body` that goes on the wire.
Sinks route by the headers and never parse the body.

Order: each row has an order key (an event's camera / ROI / tag; a summary's type). `next_batch` hands
rows out so that within one key they always go in the order they were stored, while across keys rows
stored after `fresh_after` (fresh: after delivery resumed) go before the older backlog, so a live
alarm does not wait for an outage's backlog to drain.

All sqlite work runs on one private thread: the event loop never waits on disk, and one connection
serialises every statement without locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from edge_runtime.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

TABLE = """
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    sink     TEXT NOT NULL,
    type     TEXT NOT NULL,
    id       TEXT NOT NULL,
    created  REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    body     TEXT NOT NULL,
    key      TEXT,
    headers  TEXT NOT NULL DEFAULT '{}'
);
"""
INDEXES = """
CREATE INDEX IF NOT EXISTS outbox_sink_seq ON outbox (sink, seq);
CREATE INDEX IF NOT EXISTS outbox_sink_created ON outbox (sink, created);
CREATE INDEX IF NOT EXISTS outbox_sink_key_seq ON outbox (sink, key, seq);
"""
SCHEMA = TABLE + INDEXES
_COLUMNS = "seq, sink, type, id, created, attempts, body, key, headers"
# Fresh rows looked at per batch for ones free to overtake the backlog (~1 ms). More fresh rows than
# this waiting for their keys means events come about as fast as the sink takes them.
FRESH_SCAN = 2000
Row = tuple[int, str, str, str, float, int, str, str | None, str]


class MessageType(StrEnum):
    EVENT = "event"
    SUMMARY = "summary"


def order_key(type_: str, body: Mapping[str, Any]) -> str:
    """Messages with one key must arrive in the order they were made: an event's camera, ROI and tag
    (a fresh `ended` never before its stored `started`); every other type is ordered by its type."""
    if type_ != MessageType.EVENT:
        return type_
    return json.dumps([body.get("camera"), body.get("roi"), body.get("tag")], separators=(",", ":"))


def headers_from_body(type_: str, body: Mapping[str, Any]) -> dict[str, str]:
    """An event's headers read back from its body: for rows stored before headers existed, and for
    callers that store an event without them."""
    if type_ != MessageType.EVENT:
        return {}
    return {name: str(body.get(name, "")) for name in ("camera", "tag", "kind")}


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One message waiting for one sink; `id` is the message id, `headers` route it (see above)."""

    seq: int
    sink: str
    type: MessageType
    id: str
    created: float
    attempts: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trimmed:
    full: int = 0
    expired: int = 0


@dataclass(frozen=True, slots=True)
class Backlog:
    depth: int
    oldest_created: float | None


class Outbox:
    """`clock` (wall time) dates rows for the age bound and names a damaged file moved aside;
    `fresh_scan` bounds next_batch's search for fresh rows free to overtake the backlog."""

    def __init__(
        self, path: Path, clock: Callable[[], float] = time.time, fresh_scan: int = FRESH_SCAN
    ) -> None:
        self.path = path
        self.fresh_scan = fresh_scan
        self._clock = clock
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        # Rows per sink, kept by the outbox thread alongside its own writes: during a long outage the
        # table holds up to max_events rows per sink, and counting them on every put would scan them all.
        self._depth: dict[str, int] = {}

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            if not self.path.exists() or isinstance(exc, sqlite3.OperationalError):
                raise ConfigError(f"events.outbox_path: cannot open {self.path}: {exc}") from exc
            # A damaged file must not stop the line: keep it for forensics and start a new one.
            stem = f"{self.path.name}.corrupt-{int(self._clock())}"
            aside = self.path.with_name(stem)
            for n in range(1, 1000):  # never overwrite an earlier forensic copy
                if not aside.exists():
                    break
                aside = self.path.with_name(f"{stem}.{n}")
            self.path.rename(aside)
            log.error("outbox %s is damaged (%s): moved to %s, starting empty", self.path, exc, aside)
            self._db = self._connect()
        except OSError as exc:
            raise ConfigError(f"events.outbox_path: cannot open {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(TABLE)
        # count(*) alone may be answered from the index: check every page, so damage shows here.
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            db.close()
            raise sqlite3.DatabaseError(f"quick_check: {verdict}")
        _add_order_keys(db)
        _add_headers(db)
        db.executescript(INDEXES)
        rows = db.execute("SELECT sink, count(*) FROM outbox GROUP BY sink").fetchall()
        self._depth = {sink: int(count) for sink, count in rows}
        return db

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(close)
        self._thread.shutdown(wait=True)

    async def put(
        self,
        sinks: Sequence[str],
        type_: MessageType,
        message_id: str,
        body: Mapping[str, Any],
        max_per_sink: int,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, int]:
        """Store one message for each sink in one transaction; returns how many were dropped per sink.
        `headers` None: an event's are read from its body."""
        text = json.dumps(body, separators=(",", ":"))
        key = order_key(type_, body)
        if headers is None:
            headers = headers_from_body(type_, body)
        header_text = json.dumps(dict(headers), separators=(",", ":"))
        now = self._clock()

        def put() -> dict[str, int]:
            db = self._conn
            dropped = {}
            with transaction(db):
                for sink in sinks:
                    db.execute(
                        "INSERT INTO outbox (sink, type, id, created, body, key, headers)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (sink, str(type_), message_id, now, text, key, header_text),
                    )
                    excess = self._depth.get(sink, 0) + 1 - max_per_sink
                    dropped[sink] = _drop_oldest(db, sink, excess)
            for sink in sinks:  # committed: now the counts follow
                self._depth[sink] = self._depth.get(sink, 0) + 1 - dropped[sink]
            return dropped

        return await self._run(put)

    async def peek(self, sink: str, limit: int) -> list[OutboxRecord]:
        """The oldest `limit` rows of `sink`, oldest first."""

        def peek() -> list[OutboxRecord]:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE sink = ? ORDER BY seq LIMIT ?", (sink, limit)
            ).fetchall()
            return [_record(r) for r in rows]

        return await self._run(peek)

    async def next_batch(self, sink: str, fresh_after: int, limit: int) -> list[OutboxRecord]:
        """Up to `limit` rows of `sink` in the order to send them: fresh rows (seq > fresh_after) whose
        key has nothing in the backlog first; then, for the oldest fresh rows that do wait, the backlog
        rows of their key (pushed forward) and after them those fresh rows; then the backlog, oldest
        first. Every row comes after all older rows of its key, so sending any prefix of the list in
        order never reorders a key."""

        def plan() -> list[OutboxRecord]:
            db = self._conn
            select = f"SELECT {_COLUMNS} FROM outbox AS f WHERE sink = ?"
            backlog: list[Row] = db.execute(
                f"{select} AND seq <= ? ORDER BY seq LIMIT ?", (sink, fresh_after, limit)
            ).fetchall()
            fresh: list[Row] = db.execute(
                f"{select} AND seq > ? ORDER BY seq LIMIT ?", (sink, fresh_after, limit)
            ).fetchall()
            if not (backlog and fresh):  # nothing to overtake: plain FIFO
                return [_record(r) for r in backlog or fresh]
            # Fresh rows whose key has no backlog, however many older fresh rows wait (the key index);
            # among the oldest `fresh_scan` only, so a batch costs at most that many index probes.
            order: list[Row] = db.execute(
                f"SELECT {_COLUMNS} FROM ({select} AND seq > ? ORDER BY seq LIMIT ?) AS f"
                " WHERE NOT EXISTS (SELECT 1 FROM outbox AS o"
                " WHERE o.sink = f.sink AND o.key = f.key AND o.seq <= ?) ORDER BY seq LIMIT ?",
                (sink, fresh_after, self.fresh_scan, fresh_after, limit),
            ).fetchall()
            for key in dict.fromkeys(row[7] for row in fresh):
                older = db.execute(
                    f"{select} AND key = ? AND seq <= ? ORDER BY seq LIMIT ?", (sink, key, fresh_after, limit)
                ).fetchall()
                if older:  # fresh rows that wait: their key's backlog goes first
                    order += older
                    if len(older) < limit:  # all of it is ahead now: the fresh ones may follow
                        order += [row for row in fresh if row[7] == key]
            order += backlog
            batch: dict[int, Row] = {}  # by seq, in first-seen order: a row pushed forward once
            for row in order:
                batch.setdefault(row[0], row)
                if len(batch) == limit:
                    break
            return [_record(row) for row in batch.values()]

        return await self._run(plan)

    async def last_seq(self, sink: str) -> int:
        """The newest row's seq for `sink` (0 when it has none): rows stored later count as fresh."""

        def last() -> int:
            (seq,) = self._conn.execute("SELECT max(seq) FROM outbox WHERE sink = ?", (sink,)).fetchone()
            return int(seq or 0)

        return await self._run(last)

    async def ack(self, seq: int) -> None:
        def ack() -> None:
            row = self._conn.execute("DELETE FROM outbox WHERE seq = ? RETURNING sink", (seq,)).fetchone()
            if row is not None:  # None: acked twice, already gone
                self._depth[row[0]] -= 1

        await self._run(ack)

    async def note_attempt(self, seq: int) -> None:
        await self._run(
            lambda: self._conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))
        )

    async def trim(self, sink: str, max_events: int, max_age_s: float) -> Trimmed:
        def trim() -> Trimmed:
            db = self._conn
            with transaction(db):
                expired = db.execute(
                    "DELETE FROM outbox WHERE sink = ? AND created < ?", (sink, self._clock() - max_age_s)
                ).rowcount
                full = _drop_oldest(db, sink, self._depth.get(sink, 0) - expired - max_events)
            self._depth[sink] = self._depth.get(sink, 0) - expired - full
            return Trimmed(full=full, expired=expired)

        return await self._run(trim)

    async def backlog(self, sink: str) -> Backlog:
        def backlog() -> Backlog:
            (oldest,) = self._conn.execute(
                "SELECT min(created) FROM outbox WHERE sink = ?",
                (sink,),  # the (sink, created) index
            ).fetchone()
            return Backlog(self._depth.get(sink, 0), oldest)

        return await self._run(backlog)

    async def pending_by_sink(self) -> dict[str, int]:
        def pending() -> dict[str, int]:
            return {sink: count for sink, count in self._depth.items() if count > 0}

        return await self._run(pending)

    async def pragma(self, name: str) -> object:
        """A PRAGMA's value on the outbox's own connection (`synchronous` is per connection: another
        connection to the file cannot see what this one runs with)."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        return await self._run(lambda: self._conn.execute(f"PRAGMA {name}").fetchone()[0])

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)


def _record(row: Row) -> OutboxRecord:
    seq, sink, type_, message_id, created, attempts, body, _, headers = row
    return OutboxRecord(
        seq, sink, MessageType(type_), message_id, created, attempts, json.loads(body), json.loads(headers)
    )


def _add_order_keys(db: sqlite3.Connection) -> None:
    """A file from before order keys: add the column and fill it in from the stored bodies."""
    if any(column[1] == "key" for column in db.execute("PRAGMA table_info(outbox)")):
        return
    with transaction(db):
        db.execute("ALTER TABLE outbox ADD COLUMN key TEXT")
        rows = db.execute("SELECT seq, type, body FROM outbox").fetchall()
        db.executemany(
            "UPDATE outbox SET key = ? WHERE seq = ?", [(_key_of(t, b), seq) for seq, t, b in rows]
        )


def _add_headers(db: sqlite3.Connection) -> None:
    """A file from before headers: add the column and fill in each event's from its stored body."""
    if any(column[1] == "headers" for column in db.execute("PRAGMA table_info(outbox)")):
        return
    with transaction(db):
        db.execute("ALTER TABLE outbox ADD COLUMN headers TEXT NOT NULL DEFAULT '{}'")
        rows = db.execute("SELECT seq, type, body FROM outbox WHERE type = ?", (MessageType.EVENT.value,))
        db.executemany(
            "UPDATE outbox SET headers = ? WHERE seq = ?",
            [(_headers_of(b), seq) for seq, _, b in rows.fetchall()],
        )


def _headers_of(text: str) -> str:
    try:
        headers = headers_from_body(MessageType.EVENT, json.loads(text))
    except (ValueError, AttributeError):  # not a JSON object: nothing to route by
        headers = {}
    return json.dumps(headers, separators=(",", ":"))


def _key_of(type_: str, text: str) -> str:
    try:
        return order_key(type_, json.loads(text))
    except (ValueError, AttributeError):  # not a JSON object: ordered with its type
        return type_


def _drop_oldest(db: sqlite3.Connection, sink: str, count: int) -> int:
    """Drop the `count` oldest rows of `sink` (none if count <= 0); returns how many went."""
    if count <= 0:
        return 0
    return db.execute(
        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE sink = ? ORDER BY seq LIMIT ?)",
        (sink, count),
    ).rowcount


class transaction:  # lower case: used like a function, `with transaction(db):`
    """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on an exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
