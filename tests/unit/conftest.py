"""Unit-test fixtures shared by the outbox and dispatcher tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from factories import DEFAULT_LIMITS, fast_dispatcher
from fakes import FakeSink

from edge_runtime.events.dispatcher import Dispatcher, OutboxLimits
from edge_runtime.events.outbox import Outbox


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    """An open outbox in the test's temp dir, closed afterwards."""
    box = Outbox(tmp_path / "outbox.sqlite3")
    await box.open()
    yield box
    await box.close()


@pytest.fixture
async def dispatchers() -> AsyncIterator[list[Dispatcher]]:
    """Dispatchers a test leaves running are closed before its outbox."""
    made: list[Dispatcher] = []
    yield made
    for dispatcher in made:
        await dispatcher.close(drain_timeout=0.05)


@pytest.fixture
def dispatcher_for(outbox: Outbox, dispatchers: list[Dispatcher]) -> Callable[..., Dispatcher]:
    """A fast_dispatcher for these sinks, closed at the end of the test."""

    def make(*sinks: FakeSink, limits: OutboxLimits = DEFAULT_LIMITS, **options: Any) -> Dispatcher:
        dispatcher = fast_dispatcher(outbox, sinks, limits, **options)
        dispatchers.append(dispatcher)
        return dispatcher

    return make
