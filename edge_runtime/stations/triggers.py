"""A trigger as it arrives (HTTP body, MQTT payload, direct method payload, OPC UA arguments) -> Trigger.

Every path parses through `parse_trigger`, so a part id means the same wherever it comes from:

    {"partId": "4711", "plcTime": "2026-11-25T10:00:00.120Z" | 1790000000.12, "metadata": {"line": "3"}}

`part_id` is accepted too. A part id is 1..128 printable characters; metadata is at most 32 string
values of at most 256 characters each (it travels in every verdict).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from edge_runtime.stations.verdict import Trigger

PART_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
MAX_METADATA = 32
MAX_METADATA_VALUE = 256


class UnknownStation(LookupError):
    def __init__(self, station: str, known: list[str]) -> None:
        super().__init__(f"unknown station {station!r} (known: {', '.join(known) or 'none'})")
        self.station = station
        self.known = known


class BadTrigger(ValueError):
    """The trigger's payload cannot name a part: the sender gets this text back."""


class NotAccepting(RuntimeError):
    """The runtime is stopping: no new parts (pending ones get no_verdict/shutdown)."""


def parse_trigger(station: str, payload: Any, source: str, received_at: float) -> Trigger:
    if isinstance(payload, str):
        payload = {"partId": payload}
    if not isinstance(payload, Mapping):
        raise BadTrigger('a trigger is a JSON object: {"partId": "...", "plcTime": ..., "metadata": {...}}')
    part_id = payload.get("partId", payload.get("part_id"))
    if not isinstance(part_id, str) or not PART_ID.fullmatch(part_id):
        raise BadTrigger("partId: a string of 1..128 printable characters is required")
    return Trigger(
        station=station,
        part_id=part_id,
        received_at=received_at,
        source=source,
        plc_time=_plc_time(payload.get("plcTime", payload.get("plc_time"))),
        metadata=_metadata(payload.get("metadata")),
    )


def _plc_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadTrigger("plcTime: an ISO 8601 time with a zone, or epoch seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadTrigger(f"plcTime: not an ISO 8601 time: {value[:40]!r}") from None
        if at.tzinfo is None:
            raise BadTrigger("plcTime: give a time zone (e.g. Z): a PLC's local time is ambiguous")
        return at.timestamp()
    raise BadTrigger("plcTime: an ISO 8601 time with a zone, or epoch seconds")


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_METADATA:
        raise BadTrigger(f"metadata: an object of at most {MAX_METADATA} entries")
    out = {}
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) or len(str(item)) > MAX_METADATA_VALUE:
            raise BadTrigger(
                f"metadata.{str(key)[:40]}: a string (or number) of at most {MAX_METADATA_VALUE} chars"
            )
        if len(str(key)) > 64:
            raise BadTrigger("metadata: keys of at most 64 characters")
        out[str(key)] = str(item)
    return out
