"""Counts of events per camera, tag and kind over an interval: one cheap message instead of many."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from edge_runtime.domain import Record


class SummaryCounter:
    def __init__(self, now: float) -> None:
        self._since = now
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def add(self, event: Record) -> None:
        self._counts[(event.camera, event.tag, event.kind.value)] += 1

    def take(self, summary_id: str, now: float) -> dict[str, object]:
        """The summary body since the last take (sent even when empty: it doubles as a heartbeat)."""
        cameras: dict[str, dict[str, dict[str, int]]] = {}
        for (camera, tag, kind), count in sorted(self._counts.items()):
            cameras.setdefault(camera, {}).setdefault(tag, {})[kind] = count
        body: dict[str, object] = {
            "id": summary_id,
            "type": "summary",
            "from": _iso(self._since),
            "to": _iso(now),
            "events": sum(self._counts.values()),
            "cameras": cameras,
        }
        self._counts.clear()
        self._since = now
        return body


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
