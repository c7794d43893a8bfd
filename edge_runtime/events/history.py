"""A local, queryable history of events with bounded retention (sqlite3, WAL).

The outbox holds what each sink has still to receive and forgets it once delivered; the history
keeps every event recorded here, delivered or not, for the operator to look back on (filter by
camera, tag, kind and capture time; page newest first). It is a history, not a delivery queue:
`synchronous=NORMAL` (a power cut may lose the last few events, never the file).

Bounded two ways: the newest `max_events` are kept (by id: ULIDs sort by time of creation), and
events captured more than `max_age_s` ago go. Both are pruned on open; the count bound again
whenever the table holds more than 1 % (`slack`) over it, and the age bound every PRUNE_EVERY
records or AGE_PRUNE_INTERVAL_S, whichever comes first, so `count` never exceeds
max_events + slack.

Paging is by id, newest first: a page's `next_before` is its last id, and the next page holds the
events whose id sorts before it, so events recorded meanwhile never shift a page.

All sqlite work runs on one private thread: the event loop never waits on disk, and one connection
serialises every statement without locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self, TypeVar

from edge_runtime.domain import EventKind, Record
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.events.ids import EVENT_ID_PATTERN
from edge_runtime.events.outbox import transaction

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_LIMIT = 200
MAX_PARAM_LENGTH = 200
PRUNE_EVERY = 100  # records between age prunes
AGE_PRUNE_INTERVAL_S = 60.0  # ... or this long, for a line that records rarely
PARAMS = frozenset({"camera", "tag", "kind", "since", "until", "limit", "before"})

TABLE = """
CREATE TABLE IF NOT EXISTS history (
    id          TEXT PRIMARY KEY,
    captured_at REAL NOT NULL,
    camera      TEXT NOT NULL,
    tag         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    roi         TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_camera_id ON history (camera, id);
CREATE INDEX IF NOT EXISTS history_tag_id ON history (tag, id);
CREATE INDEX IF NOT EXISTS history_captured_at ON history (captured_at);
"""
_EPOCH = re.compile(r"[0-9]{1,12}(?:\.[0-9]{0,9})?")
_LIMIT = re.compile(r"[0-9]{1,3}")


class BadQuery(ValueError):
    """A history query that cannot be run; the message starts with the parameter's name."""


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    max_events: int  # newest kept; oldest pruned beyond
    max_age_s: float  # events whose captured_at is older are pruned

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {self.max_events}")
        if not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, not {self.max_age_s}")

    @property
    def slack(self) -> int:
        """How far the count may run over max_events before it is pruned back (1 %)."""
        return self.max_events // 100


@dataclass(frozen=True, slots=True)
class EventQuery:
    camera: str | None = None
    tag: str | None = None
    kind: EventKind | None = None
    since: float | None = None  # captured_at >= since (epoch seconds)
    until: float | None = None  # captured_at < until
    limit: int = 50  # 1..MAX_LIMIT (200)
    before: str | None = None  # paging cursor: only events whose id sorts before this id

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadQuery(f"limit: must be 1 to {MAX_LIMIT}, not {self.limit}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise BadQuery("since: must be before until")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> EventQuery:
        """From URL query parameters camera, tag, kind, since, until, limit, before. Raises
        BadQuery(ValueError) with a message naming the parameter for: an unknown parameter, an empty
        value, kind not started|ended, since/until neither ISO 8601 (with or without offset; naive = UTC;
        'Z' accepted) nor epoch seconds, since >= until, limit not an int in 1..200, before not a
        26-character ULID (Crockford base32), values longer than 200 chars."""
        unknown = sorted(set(params) - PARAMS)
        if unknown:
            raise BadQuery(f"{unknown[0]}: unknown parameter (known: {', '.join(sorted(PARAMS))})")
        getall = getattr(params, "getall", None)  # a multidict (aiohttp's request.query)
        values: dict[str, str] = {}
        for name in params:
            if getall is not None and len(getall(name)) > 1:
                raise BadQuery(f"{name}: given more than once")
            value = params[name]
            if not value:
                raise BadQuery(f"{name}: empty value")
            if len(value) > MAX_PARAM_LENGTH:
                raise BadQuery(f"{name}: longer than {MAX_PARAM_LENGTH} characters")
            values[name] = value

        kind = None
        if "kind" in values:
            try:
                kind = EventKind(values["kind"])
            except ValueError:
                raise BadQuery(
                    f"kind: must be {' or '.join(k.value for k in EventKind)}, not {values['kind']!r}"
                ) from None
        limit = 50
        if "limit" in values:
            text = values["limit"]
            if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
                raise BadQuery(f"limit: must be a whole number 1 to {MAX_LIMIT}, not {text!r}")
            limit = int(text)
        before = None
        if "before" in values:
            before = values["before"].upper()  # Crockford base32 is case-insensitive
            if not EVENT_ID_PATTERN.fullmatch(before):
                raise BadQuery(f"before: not an event id (a 26-character ULID), {values['before']!r}")
        return cls(
            camera=values.get("camera"),
            tag=values.get("tag"),
            kind=kind,
            since=_time_param("since", values.get("since")),
            until=_time_param("until", values.get("until")),
            limit=limit,
            before=before,
        )


@dataclass(frozen=True, slots=True)
class EventPage:
    events: tuple[dict[str, object], ...]  # Event.detail_dict() of each, newest first (by id desc)
    next_before: str | None  # the cursor for the next page, None when no more


def _time_param(name: str, text: str | None) -> float | None:
    """Epoch seconds, or an ISO 8601 time (naive: UTC; 'Z' accepted), as epoch seconds."""
    if text is None:
        return None
    if _EPOCH.fullmatch(text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery(f"{name}: neither an ISO 8601 time nor epoch seconds: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        seconds = moment.timestamp()
    except (OverflowError, ValueError):  # an offset that takes it outside datetime's range
        raise BadQuery(f"{name}: out of range: {text!r}") from None
    if not math.isfinite(seconds):
        raise BadQuery(f"{name}: out of range: {text!r}")
    return seconds


class EventHistory:
    """`clock` (wall time) is what the age bound measures captured_at against."""

    def __init__(self, path: Path, limits: HistoryLimits, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.limits = limits
        self._clock = clock
        self._thread: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # Kept by the history thread alongside its own writes, so neither `count` nor the bound
        # needs a count(*) (a scan of the table).
        self._count = 0
        self._since_age_prune = 0
        self._age_pruned_at = 0.0

    async def __aenter__(self) -> Self:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="history")
        try:
            await self._run(self._open)
        except BaseException:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise
        return self

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise EdgeRuntimeError(f"event history {self.path}: cannot open: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(TABLE)
            # Check every page now, so a damaged file is found on open, not by a query later.
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                lines = str(verdict).splitlines()  # one line per damaged page: the first few say enough
                raise sqlite3.DatabaseError(f"quick_check: {' '.join(lines[:3])}{' ...' * (len(lines) > 3)}")
            (count,) = db.execute("SELECT count(*) FROM history").fetchone()
        except sqlite3.Error as exc:
            db.close()
            raise EdgeRuntimeError(f"event history {self.path}: unreadable: {exc}") from exc
        self._db, self._count = db, int(count)
        self._prune(age=True)
        log.info("event history %s: %d events", self.path, self._count)

    async def __aexit__(self, *exc: object) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return

        def close() -> None:
            db, self._db = self._db, None
            if db is None:
                return
            try:
                db.execute("PRAGMA optimize")
            except sqlite3.Error as error:
                log.warning("event history %s: optimize failed: %s", self.path, error)
            finally:
                db.close()

        try:
            await asyncio.get_running_loop().run_in_executor(thread, close)
        except Exception:
            log.exception("event history %s: close failed", self.path)
        finally:
            thread.shutdown(wait=True)

    @property
    def count(self) -> int:
        """Events stored now."""
        return self._count

    async def record(self, event: Record) -> None:
        """Store `event`; an id already stored is replaced (recording twice is harmless)."""
        body = json.dumps(event.detail_dict(), separators=(",", ":"))
        row = (event.id, event.captured_at, event.camera, event.tag, event.kind.value, event.roi, body)

        def record() -> None:
            db = self._conn
            with transaction(db):
                known = db.execute("SELECT 1 FROM history WHERE id = ?", (event.id,)).fetchone()
                db.execute(
                    "INSERT OR REPLACE INTO history (id, captured_at, camera, tag, kind, roi, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            if known is None:  # committed: now the count follows
                self._count += 1
                self._since_age_prune += 1
            age = (
                self._since_age_prune >= PRUNE_EVERY
                or self._clock() - self._age_pruned_at >= AGE_PRUNE_INTERVAL_S
            )
            if age or self._count > self.limits.max_events + self.limits.slack:
                self._prune(age=age)

        await self._run(record)

    def _prune(self, age: bool) -> None:
        """On the history thread: drop what the age bound (when `age`) and the count bound exclude."""
        db = self._conn
        now = self._clock()
        with transaction(db):
            expired = 0
            if age:
                expired = db.execute(
                    "DELETE FROM history WHERE captured_at < ?", (now - self.limits.max_age_s,)
                ).rowcount
            excess = self._count - expired - self.limits.max_events
            full = 0
            if excess > 0:
                full = db.execute(
                    "DELETE FROM history WHERE id IN (SELECT id FROM history ORDER BY id LIMIT ?)",
                    (excess,),
                ).rowcount
        self._count -= expired + full
        if age:
            self._since_age_prune, self._age_pruned_at = 0, now
        if expired or full:
            log.debug("event history: pruned %d expired, %d over the count", expired, full)

    async def query(self, query: EventQuery) -> EventPage:
        """The events that match, newest first, at most query.limit of them."""
        where: list[str] = []
        args: list[object] = []
        for column, value in (
            ("camera", query.camera),
            ("tag", query.tag),
            ("kind", None if query.kind is None else query.kind.value),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.since is not None:
            where.append("captured_at >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("captured_at < ?")
            args.append(query.until)
        if query.before is not None:
            where.append("id < ?")
            args.append(query.before)
        sql = "SELECT id, body FROM history"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(query.limit + 1)  # one more than asked: is there a next page?

        def select() -> list[tuple[str, str]]:
            return self._conn.execute(sql, args).fetchall()

        rows = await self._run(select)
        page = rows[: query.limit]
        events = tuple(_body(body) for _, body in page)
        return EventPage(events, page[-1][0] if len(rows) > query.limit else None)

    async def get(self, event_id: str) -> dict[str, object] | None:
        def get() -> tuple[str] | None:
            row: tuple[str] | None = self._conn.execute(
                "SELECT body FROM history WHERE id = ?", (event_id,)
            ).fetchone()
            return row

        row = await self._run(get)
        return None if row is None else _body(row[0])

    async def facets(self) -> dict[str, list[str]]:
        """The cameras and tags in the history, each sorted: for filter menus."""

        def facets() -> dict[str, list[str]]:
            db = self._conn
            # DISTINCT on an indexed column: answered from the (camera, id) and (tag, id) indexes.
            cameras = [c for (c,) in db.execute("SELECT DISTINCT camera FROM history")]
            tags = [t for (t,) in db.execute("SELECT DISTINCT tag FROM history")]
            return {"cameras": sorted(cameras), "tags": sorted(tags)}

        return await self._run(facets)

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("event history is not open")
        return self._db

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError("event history is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)


def _body(text: str) -> dict[str, object]:
    body: dict[str, object] = json.loads(text)
    return body
