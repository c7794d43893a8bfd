"""The default sink: one JSON object per line, appended to a file (`tail -f` friendly)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TextIO

from edge_runtime.events.outbox import OutboxRecord
from edge_runtime.settings import DeliverySettings
from edge_runtime.status import SinkStatus


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.delivery = DeliverySettings()
        self._file: TextIO | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    async def publish(self, record: OutboxRecord) -> None:
        line = json.dumps(dict(record.body), separators=(",", ":")) + "\n"
        await asyncio.to_thread(self._write, line)

    def _write(self, line: str) -> None:
        if self._file is None:
            raise RuntimeError("jsonl sink not started")
        self._file.write(line)
        self._file.flush()

    def status(self) -> SinkStatus:
        return SinkStatus(self.name, None, target=("path", str(self.path)))

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
