"""The event history: a record comes back as Event.detail_dict(); each filter alone and combined; paging
without duplicates or gaps; close and reopen; the count and age bounds; URL parameters parsed or
refused naming the parameter; a damaged file refused naming the path; get and facets."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from factories import T0, make_event
from fakes import FakeClock
from multidict import MultiDict

from edge_runtime.domain import EventKind
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.events.history import (
    MAX_LIMIT,
    BadQuery,
    EventHistory,
    EventPage,
    EventQuery,
    HistoryLimits,
)
from edge_runtime.events.ids import new_event_id

DAY = 86_400.0
LIMITS = HistoryLimits(max_events=10_000, max_age_s=30 * DAY)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + 3600)  # an hour after make_event's T0: nothing is old yet


@pytest.fixture
async def history(tmp_path: Path, clock: FakeClock) -> AsyncIterator[EventHistory]:
    async with EventHistory(tmp_path / "history.sqlite3", LIMITS, clock=clock) as opened:
        yield opened


def ids(page: EventPage) -> list[object]:
    return [event["id"] for event in page.events]


async def test_a_record_comes_back_as_its_dict(history: EventHistory) -> None:
    event = make_event(1.5, snapshot="/snapshots/x.jpg")
    await history.record(event)
    page = await history.query(EventQuery())
    assert page.events == (event.detail_dict(),)
    assert page.next_before is None
    assert await history.get(event.id) == event.detail_dict()
    assert history.count == 1


async def test_recording_an_id_twice_replaces_it(history: EventHistory) -> None:
    event = make_event(1)
    await history.record(event)
    await history.record(make_event(1, id=event.id, probability=0.99))
    assert history.count == 1
    assert (await history.get(event.id) or {})["probability"] == 0.99


async def test_get_of_an_unknown_id_is_none(history: EventHistory) -> None:
    await history.record(make_event(1))
    assert await history.get(new_event_id(T0)) is None


async def test_filters_alone_and_combined(history: EventHistory) -> None:
    events = [
        make_event(0, camera="cam-1", tag="stain", kind=EventKind.STARTED),
        make_event(10, camera="cam-1", tag="stain", kind=EventKind.ENDED),
        make_event(20, camera="cam-2", tag="stain", kind=EventKind.STARTED),
        make_event(30, camera="cam-2", tag="scratch", kind=EventKind.STARTED),
        make_event(40, camera="cam-1", tag="scratch", kind=EventKind.ENDED),
    ]
    for event in events:
        await history.record(event)
    a, b, c, d, e = (event.id for event in events)

    async def found(**filters: object) -> list[object]:
        return ids(await history.query(EventQuery(**filters)))  # type: ignore[arg-type]

    assert await found() == [e, d, c, b, a]  # newest first
    assert await found(camera="cam-1") == [e, b, a]
    assert await found(camera="cam-3") == []
    assert await found(tag="scratch") == [e, d]
    assert await found(kind=EventKind.ENDED) == [e, b]
    assert await found(since=T0 + 20) == [e, d, c]  # since is inclusive
    assert await found(until=T0 + 20) == [b, a]  # until is exclusive
    assert await found(since=T0 + 10, until=T0 + 40) == [d, c, b]
    assert await found(before=c) == [b, a]
    assert await found(limit=2) == [e, d]
    assert await found(camera="cam-1", tag="stain") == [b, a]
    assert await found(camera="cam-2", kind=EventKind.STARTED, tag="stain") == [c]
    assert await found(tag="stain", since=T0 + 5, until=T0 + 25) == [c, b]
    assert await found(camera="cam-1", before=e, limit=1) == [b]


async def test_paging_has_no_duplicates_or_gaps(history: EventHistory) -> None:
    events = [make_event(n) for n in range(120)]
    for event in events:
        await history.record(event)
    sizes, seen = [], []
    query = EventQuery(limit=50)
    while True:
        page = await history.query(query)
        sizes.append(len(page.events))
        seen += ids(page)
        if page.next_before is None:
            break
        assert page.next_before == page.events[-1]["id"]
        query = EventQuery.from_params({"limit": "50", "before": page.next_before})
    assert sizes == [50, 50, 20]
    assert seen == [event.id for event in reversed(events)]


async def test_a_full_last_page_says_there_is_no_more(history: EventHistory) -> None:
    for n in range(4):
        await history.record(make_event(n))
    first = await history.query(EventQuery(limit=2))
    last = await history.query(EventQuery(limit=2, before=first.next_before))
    assert (len(last.events), last.next_before) == (2, None)


async def test_the_history_survives_close_and_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "var" / "lib" / "history.sqlite3"  # folders are created
    events = [make_event(n, camera=f"cam-{n % 2}") for n in range(5)]
    async with EventHistory(path, LIMITS, clock=clock) as history:
        for event in events:
            await history.record(event)
    async with EventHistory(path, LIMITS, clock=clock) as history:
        assert history.count == 5
        page = await history.query(EventQuery())
        assert page.events == tuple(event.detail_dict() for event in reversed(events))
        assert await history.facets() == {"cameras": ["cam-0", "cam-1"], "tags": ["stain"]}
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_the_count_bound_keeps_the_newest(tmp_path: Path, clock: FakeClock) -> None:
    limits = HistoryLimits(max_events=100, max_age_s=30 * DAY)
    events = [make_event(n * 0.01) for n in range(1000)]
    async with EventHistory(tmp_path / "history.sqlite3", limits, clock=clock) as history:
        for event in events:
            await history.record(event)
            assert history.count <= 101
        kept = await history.query(EventQuery(limit=MAX_LIMIT))
        assert len(kept.events) == history.count
        assert ids(kept) == [event.id for event in reversed(events)][: history.count]
    async with EventHistory(tmp_path / "history.sqlite3", limits, clock=clock) as history:
        assert history.count == 100, "open prunes to the bound"
        assert ids(await history.query(EventQuery(limit=MAX_LIMIT))) == [
            event.id for event in reversed(events[-100:])
        ]


async def test_the_age_bound(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "history.sqlite3"
    limits = HistoryLimits(max_events=10_000, max_age_s=DAY)
    old = [make_event(n) for n in range(3)]  # captured at T0; the clock is T0 + 1 h
    async with EventHistory(path, limits, clock=clock) as history:
        for event in old:
            await history.record(event)
        assert history.count == 3

    clock.now = T0 + DAY + 10  # the old ones are more than a day old now
    async with EventHistory(path, limits, clock=clock) as history:
        assert history.count == 0, "open prunes what is too old"

        for event in old:
            await history.record(event)
        assert history.count == 3, "pruned later, not on every record"
        fresh = [make_event(DAY + 1 + n * 0.01) for n in range(150)]
        for event in fresh:
            await history.record(event)
        assert history.count == 150, "pruned within a hundred records"
        assert ids(await history.query(EventQuery(limit=MAX_LIMIT))) == [e.id for e in reversed(fresh)]

        await history.record(make_event(DAY + 5, captured_at=T0 + 5))  # too old once recorded
        clock.now += 61  # a quiet line: pruned by time too
        await history.record(make_event(DAY + 20))
        assert history.count == 151


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"this is not an sqlite database " * 200,
        lambda data: data[:8192] + b"\x00\x13" * ((len(data) - 8192) // 2),  # the table pages damaged
    ],
    ids=["not-sqlite", "data-pages"],
)
async def test_a_damaged_file_is_refused_naming_it(
    tmp_path: Path, clock: FakeClock, damage: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "history.sqlite3"
    async with EventHistory(path, LIMITS, clock=clock) as history:
        for n in range(300):
            await history.record(make_event(n))
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)
    with pytest.raises(EdgeRuntimeError, match=re.escape(str(path))) as refused:
        async with EventHistory(path, LIMITS, clock=clock):
            pass
    assert len(str(refused.value)) < 500
    assert path.read_bytes() == damaged, "left as it was"


async def test_an_unusable_path_is_refused_naming_it(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "history.sqlite3"
    with pytest.raises(EdgeRuntimeError, match=re.escape(str(path))):
        async with EventHistory(path, LIMITS, clock=clock):
            pass


async def test_facets(history: EventHistory) -> None:
    assert await history.facets() == {"cameras": [], "tags": []}
    for n, (camera, tag) in enumerate([("b", "stain"), ("a", "scratch"), ("b", "dent"), ("a", "stain")]):
        await history.record(make_event(n, camera=camera, tag=tag))
    assert await history.facets() == {"cameras": ["a", "b"], "tags": ["dent", "scratch", "stain"]}


async def test_use_before_open_or_after_close_is_an_error(tmp_path: Path) -> None:
    history = EventHistory(tmp_path / "history.sqlite3", LIMITS)
    with pytest.raises(RuntimeError, match="not open"):
        await history.query(EventQuery())
    async with history:
        pass
    with pytest.raises(RuntimeError, match="not open"):
        await history.record(make_event(0))


ULID = new_event_id(T0)


def test_from_params_reads_every_parameter() -> None:
    query = EventQuery.from_params(
        {
            "camera": "cam-1",
            "tag": "stain",
            "kind": "ended",
            "since": "2023-11-14T22:13:20Z",
            "until": "1700000100.5",
            "limit": "200",
            "before": ULID.lower(),
        }
    )
    assert query == EventQuery("cam-1", "stain", EventKind.ENDED, T0, T0 + 100.5, 200, ULID)
    assert EventQuery.from_params({}) == EventQuery()
    assert EventQuery.from_params(MultiDict(camera="cam-1")) == EventQuery(camera="cam-1")


@pytest.mark.parametrize(
    "text",
    [
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:13:20+00:00",
        "2023-11-14T23:13:20+01:00",
        "2023-11-14T22:13:20",  # naive: UTC
        "2023-11-14 22:13:20.000",
        "1700000000",
        "1700000000.0",
    ],
)
def test_times_in_iso_8601_or_epoch_seconds(text: str) -> None:
    assert EventQuery.from_params({"since": text}).since == T0
    assert EventQuery.from_params({"until": text}).until == T0


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"camera": "cam-1", "colour": "red"}, "colour"),
        ({"camera": ""}, "camera"),
        ({"tag": ""}, "tag"),
        ({"kind": "begun"}, "kind"),
        ({"kind": "STARTED"}, "kind"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2023-13-01"}, "until"),
        ({"since": "-5"}, "since"),
        ({"since": "nan"}, "since"),
        ({"since": "1700000100", "until": "1700000000"}, "since"),
        ({"since": "1700000000", "until": "2023-11-14T22:13:20Z"}, "since"),  # equal
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "5.0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": " 5"}, "limit"),
        ({"before": "01HF"}, "before"),
        ({"before": ULID + "0"}, "before"),
        ({"before": ULID[:-1] + "U"}, "before"),  # not in Crockford's alphabet
        ({"camera": "c" * 201}, "camera"),
        ({"tag": "t" * 201}, "tag"),
        (MultiDict([("camera", "a"), ("camera", "b")]), "camera"),
    ],
)
def test_from_params_refuses_naming_the_parameter(params: dict[str, str], named: str) -> None:
    with pytest.raises(BadQuery, match=f"^{named}: "):
        EventQuery.from_params(params)


def test_a_long_value_is_not_echoed() -> None:
    with pytest.raises(BadQuery) as caught:
        EventQuery.from_params({"camera": "x" * 500})
    assert "xxx" not in str(caught.value)


def test_limits_and_query_values_are_checked() -> None:
    assert HistoryLimits(max_events=100, max_age_s=1).slack == 1
    with pytest.raises(ValueError, match="max_events"):
        HistoryLimits(max_events=0, max_age_s=1)
    with pytest.raises(ValueError, match="max_age_s"):
        HistoryLimits(max_events=1, max_age_s=0)
    with pytest.raises(BadQuery, match=r"^limit: "):
        EventQuery(limit=MAX_LIMIT + 1)
    assert issubclass(BadQuery, ValueError)
