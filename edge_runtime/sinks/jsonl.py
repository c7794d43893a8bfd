"""The default sink: one JSON object per line, appended to a file (`tail -f` friendly)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge_runtime.domain import Event


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    async def publish(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), separators=(",", ":")) + "\n"
        await asyncio.to_thread(self._write, line)

    def _write(self, line: str) -> None:
        self._file.write(line)
        self._file.flush()

    async def close(self) -> None:
        self._file.close()
