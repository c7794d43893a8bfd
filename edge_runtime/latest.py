"""A latest-wins map whose readers are woken on change (coalesced, like the status board): for values
people watch that change too often for the board (each camera's last inspection, outbox depths)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Latest(Generic[K, V]):
    """Touched on the event loop only."""

    def __init__(self) -> None:
        self._values: dict[K, V] = {}
        self._version = 0
        self._changed = asyncio.Event()

    def put(self, key: K, value: V) -> None:
        if self._values.get(key, _MISSING) != value:
            self._values[key] = value
            self._bump()

    def remove(self, key: K) -> None:
        if self._values.pop(key, _MISSING) is not _MISSING:
            self._bump()

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def all(self) -> dict[K, V]:
        return dict(self._values)

    def _bump(self) -> None:
        self._version += 1
        self._changed.set()

    async def changes(self) -> AsyncGenerator[dict[K, V]]:
        """All values now, then after every change; a slow reader skips to the newest."""
        seen = -1
        while True:
            if seen == self._version:
                self._changed.clear()  # waiters already woken stay woken; each re-checks the version
                await self._changed.wait()
                continue
            seen = self._version
            yield dict(self._values)


_MISSING: object = object()
