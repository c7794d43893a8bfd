"""Event ids: ULIDs (26 Crockford base32 characters), unique, sorted by time, the millisecond inside."""

from __future__ import annotations

from factories import T0

from edge_runtime.events.ids import EVENT_ID_PATTERN, new_event_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_millis(event_id: str) -> int:
    value = 0
    for char in event_id[:10]:
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_event_id_shape() -> None:
    event_id = new_event_id()
    assert len(event_id) == 26
    assert EVENT_ID_PATTERN.fullmatch(event_id)
    assert set(event_id) <= set(CROCKFORD)


def test_event_ids_are_unique() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    same_ms = [new_event_id(T0) for _ in range(10_000)]  # the random part alone keeps them apart
    assert len(set(same_ms)) == 10_000


def test_event_ids_sort_by_time() -> None:
    # Whole milliseconds + 0.5 ms: no float rounding can put two of them in the same millisecond.
    times = [(T0 * 1000 + i * 7 + 0.5) / 1000 for i in range(2000)]
    ids = [new_event_id(t) for t in times]
    assert sorted(ids) == ids
    assert ids[::-1] != sorted(ids[::-1])


def test_event_id_encodes_the_millisecond() -> None:
    assert ulid_millis(new_event_id(T0 + 0.1234)) == int(T0 * 1000) + 123
    assert ulid_millis(new_event_id(0.0)) == 0
