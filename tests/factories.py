"""Test data and test-configured parts, made one way.

make_event(n=0, **overrides)   an Event n seconds after T0, any field overridden (dataclasses.replace)
quick_retry(initial, maximum)  a dispatcher retry policy without jitter (Dispatcher(retry=...))
fast_dispatcher(outbox, sinks) a Dispatcher that retries within 10-20 ms and keeps house every 20 ms
unique(prefix)                 a sink name no other test uses: metrics are process-wide
sample(name, **labels)         a metric's value now (0 when it has no such sample yet)
stored_ids(outbox, sink)       ids of the messages waiting in an outbox for a sink
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import REGISTRY

from edge_runtime.backoff import Backoff
from edge_runtime.domain import BoundingBox, Event, EventKind
from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits, Sink
from edge_runtime.events.ids import new_event_id
from edge_runtime.events.outbox import Outbox

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z

EVENT = Event(
    id=new_event_id(T0),
    kind=EventKind.STARTED,
    camera="cam-1",
    roi="full",
    tag="stain",
    probability=0.9,
    boxes=(BoundingBox(0.1, 0.2, 0.3, 0.4),),
    captured_at=T0,
    model_id="demo",
    model_sha1="abc123",
    snapshot=None,
)


def make_event(n: float = 0, /, **overrides: Any) -> Event:
    """EVENT captured `n` seconds after T0, with a new id of that time (ids sort by time, and two
    events never share one), and `overrides` (any Event field) applied last."""
    captured_at = overrides.pop("captured_at", T0 + n)
    fields: dict[str, Any] = {"id": new_event_id(captured_at), "captured_at": captured_at, **overrides}
    return dataclasses.replace(EVENT, **fields)


DEFAULT_LIMITS = OutboxLimits()


def quick_retry(initial: float, maximum: float) -> Callable[[], Backoff]:
    """A retry policy for Dispatcher(retry=...): initial, doubling to maximum, no jitter."""
    return lambda: Backoff(initial, maximum, jitter=0.0)


def fast_dispatcher(
    outbox: Outbox, sinks: Sequence[Sink], limits: OutboxLimits = DEFAULT_LIMITS, **options: Any
) -> Dispatcher:
    """A Dispatcher with test timings: retries after 10-20 ms, housekeeping every 20 ms; `options`
    (any Dispatcher keyword) win."""
    options.setdefault("retry", quick_retry(0.01, 0.02))
    options.setdefault("housekeeping_s", 0.02)
    return Dispatcher(outbox, sinks, limits, **options)


_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def stored_ids(outbox: Outbox, sink: str) -> list[str]:
    """Ids of the messages waiting in `outbox` for `sink`, oldest first."""
    return [r.id for r in await outbox.peek(sink, 1000)]
