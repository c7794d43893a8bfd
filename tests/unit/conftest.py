"""Unit-test fixtures shared by the outbox, dispatcher and events tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_runtime.events.outbox import Outbox


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    """An open outbox in the test's temp dir, closed afterwards."""
    box = Outbox(tmp_path / "outbox.sqlite3")
    await box.open()
    yield box
    await box.close()
