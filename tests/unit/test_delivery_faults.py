"""Delivery under faults, against fake sinks: every logged failure names its reason."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from edge_runtime.domain import Event, EventKind
from edge_runtime.errors import SinkUnavailableError
from edge_runtime.events.dispatcher import Dispatcher, failure_reason
from edge_runtime.events.ids import new_event_id
from edge_runtime.events.outbox import Outbox, OutboxRecord
from edge_runtime.settings import DeliverySettings

T0 = 1_700_000_000.0
_names = itertools.count()


def unique(prefix: str) -> str:
    """Metrics are process-wide: every test uses its own sink names."""
    return f"{prefix}-{next(_names)}"


def make_event(n: int = 0, camera: str = "cam-1", tag: str = "stain", kind: str = "started") -> Event:
    return Event(
        id=new_event_id(T0 + n),
        kind=EventKind(kind),
        camera=camera,
        roi="full",
        tag=tag,
        probability=0.9,
        boxes=(),
        captured_at=T0 + n,
        model_id="demo",
        model_sha1="abc123",
    )


class FailingSink:
    """Fails every publish with `error` (a fresh copy each time)."""

    def __init__(self, name: str, error: Callable[[], BaseException]) -> None:
        self.name = name
        self.delivery = DeliverySettings()
        self.error = error
        self.attempts = 0

    async def start(self) -> None:
        pass

    async def publish(self, record: OutboxRecord) -> None:
        self.attempts += 1
        raise self.error()

    def status(self) -> Mapping[str, object]:
        return {}

    async def close(self) -> None:
        pass


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Dispatcher, "RETRY_INITIAL_S", 0.01)
    monkeypatch.setattr(Dispatcher, "RETRY_MAX_S", 0.02)
    monkeypatch.setattr(Dispatcher, "HOUSEKEEPING_S", 0.02)


@pytest.fixture
async def dispatchers() -> AsyncIterator[list[Dispatcher]]:
    made: list[Dispatcher] = []
    yield made
    for dispatcher in made:
        await dispatcher.close(drain_timeout=0.05)


# --------------------------------------------------------------------------------------------------
# 17. Every logged failure names its reason


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TimeoutError, "(TimeoutError)"),  # asyncio.timeout raises it with an empty str()
        (lambda: SinkUnavailableError("not connected to b:1883"), "(not connected to b:1883)"),
        (lambda: OSError(""), "(OSError)"),
    ],
    ids=["bare-timeout", "with-message", "empty-message"],
)
async def test_a_failed_delivery_is_logged_with_its_reason(
    error: Callable[[], BaseException],
    reason: str,
    outbox: Outbox,
    dispatchers: list[Dispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FailingSink(unique("reason"), error)
    dispatcher = Dispatcher(outbox, [sink])
    dispatchers.append(dispatcher)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.events.dispatcher"):
        await dispatcher.start()
        await dispatcher.publish(make_event(0))
        await wait_for(lambda: sink.attempts >= 1)
        await asyncio.sleep(0.02)
    [message] = [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
    assert message == f"sink {sink.name}: delivery failed {reason}; will retry"
    assert "()" not in message


def test_failure_reason_is_never_empty() -> None:
    assert failure_reason(TimeoutError()) == "TimeoutError"
    assert failure_reason(asyncio.CancelledError()) == "CancelledError"
    assert failure_reason(SinkUnavailableError("  ")) == "SinkUnavailableError"
    assert failure_reason(ValueError("bad value")) == "bad value"
