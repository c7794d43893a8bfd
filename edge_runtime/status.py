"""The status board: every long-lived part pushes its frozen, typed status here; readers never poll.

    writers (push, on the loop)                    readers
    capture threads  -> CameraStatus  (hop to the loop first) /health/ready, /admin/status, getStatus:
    sinks, hub       -> SinkStatus                             snapshot()
    model service    -> ModelStatus                          MQTT status mirror, twin reporter, UI:
    controller       -> ConfigStatus                           changes()

`changes()` coalesces like the frame slot: a slow reader sees the latest board, never a backlog.
Keys are "camera/<id>", "sink/<name>", "model" and "config"; a removed part's key disappears.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

# ---- cameras ------------------------------------------------------------------------------------


class CameraState(StrEnum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class FailureReason(StrEnum):
    OPEN_FAILED = "open_failed"  # refused, timed out, unsupported codec, no such file
    STREAM_ENDED = "stream_ended"  # the source closed the stream or a read failed (a server crash)
    STALLED = "stalled"  # no frame within stall_timeout_s (a hung server or network)


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Failure:
    reason: FailureReason
    at: float  # wall clock (time.time())

    def to_dict(self) -> dict[str, object]:
        return {"reason": self.reason.value, "at": iso(self.at)}


@dataclass(frozen=True, slots=True)
class CameraStatus:
    camera: str
    url: str  # redacted
    state: CameraState
    frames: int
    superseded: int  # frames a newer one replaced before anyone sampled them: by design, not a fault
    reconnects: int
    stalls: int
    last_frame_at: float | None  # wall clock of the newest frame; its age is computed when read
    last_error: str | None
    failures: int = 0
    last_failure: Failure | None = None
    stream: StreamInfo | None = None  # what the reader does (decoder, decode mode, clock); None before
    view: ViewStatus | None = None  # the snapshot stream, when the camera inspects a detect_url

    @property
    def last_frame_age_s(self) -> float | None:
        return None if self.last_frame_at is None else max(0.0, time.time() - self.last_frame_at)

    def to_dict(self) -> dict[str, object]:
        age = self.last_frame_age_s
        return {
            "url": self.url,
            "state": self.state.value,
            "frames": self.frames,
            "superseded": self.superseded,
            "reconnects": self.reconnects,
            "stalls": self.stalls,
            "failures": self.failures,
            "last_frame_age_s": None if age is None else round(age, 3),
            "last_error": self.last_error,
            "last_failure": None if self.last_failure is None else self.last_failure.to_dict(),
            **({} if self.stream is None else self.stream.to_dict()),
            **({} if self.view is None else {"snapshot_stream": self.view.to_dict()}),
        }


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """How a camera's stream is read: shown so that no fallback is silent."""

    decoder: str  # software, cuda, qsv, vaapi, v4l2m2m; opencv (legacy reader); synthetic
    decoder_note: str  # why this decoder (the hwaccel plan)
    decode: str  # all | keyframes: the frames decoded now
    decode_note: str  # why (decode: auto follows the measured keyframe interval)
    clock: str  # rtcp | pts | arrival: where frame times (and ages) come from
    keyframe_interval_s: float | None
    resolution: tuple[int, int] | None  # width, height

    def to_dict(self) -> dict[str, object]:
        return {
            "decoder": self.decoder,
            "decoder_note": self.decoder_note,
            "decode": self.decode,
            "decode_note": self.decode_note,
            "clock": self.clock,
            "keyframe_interval_s": self.keyframe_interval_s,
            "resolution": None if self.resolution is None else f"{self.resolution[0]}x{self.resolution[1]}",
        }


@dataclass(frozen=True, slots=True)
class ViewStatus:
    """The second stream of a camera with a detect_url: `url`, read for snapshots (keyframes only)."""

    url: str  # redacted
    state: CameraState
    last_frame_at: float | None
    last_error: str | None
    stream: StreamInfo | None

    def to_dict(self) -> dict[str, object]:
        age = None if self.last_frame_at is None else max(0.0, time.time() - self.last_frame_at)
        return {
            "url": self.url,
            "state": self.state.value,
            "last_frame_age_s": None if age is None else round(age, 3),
            "last_error": self.last_error,
            **({} if self.stream is None else self.stream.to_dict()),
        }


# ---- sinks --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """`connected` is None for a sink with no connection (a file); `target` names where it delivers,
    e.g. ("broker", "host:8883"), ("output", "events"), ("path", "/data/events.jsonl")."""

    name: str
    connected: bool | None
    last_error: str | None = None
    target: tuple[str, str] | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.connected is not None:
            out["connected"] = self.connected
        if self.target is not None:
            out[self.target[0]] = self.target[1]
        if self.connected is not None:
            out["last_error"] = self.last_error
        return out


# ---- the model ----------------------------------------------------------------------------------


class LoadState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Serving:
    """The predictor that answers requests now."""

    model_id: str
    sha1: str
    device: str


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """The latest model load to begin (`status`, `source`, `error`, `update`), the configured model
    and the one serving (which may differ: a failed update leaves the previous one serving)."""

    status: LoadState = LoadState.LOADING
    source: str = ""  # path or redacted URL
    error: str | None = None  # scrubbed of credentials
    update: int = 0  # the model update this is about (0: none yet)
    configured: str = ""
    serving: Serving | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "status": self.status.value,
            "source": self.source,
            "error": self.error,
            "update": self.update,
            "configured": self.configured,
        }
        if self.serving is not None:
            out |= {"id": self.serving.model_id, "sha1": self.serving.sha1, "device": self.serving.device}
        return out


# ---- the configuration --------------------------------------------------------------------------


class ConfigOutcome(StrEnum):
    BASE = "base"  # nothing desired yet: file, environment and flags
    APPLIED = "applied"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ConfigStatus:
    desired_version: int | None = None
    status: ConfigOutcome = ConfigOutcome.BASE
    error: str | None = None
    changes: list[str] = field(default_factory=list)  # a list: it is reported as one (never mutated)

    def to_dict(self) -> dict[str, object]:
        return {
            "desired_version": self.desired_version,
            "status": self.status.value,
            "error": self.error,
            "changes": list(self.changes),
        }


Status = CameraStatus | SinkStatus | ModelStatus | ConfigStatus


class Connection(Protocol):
    """Something with a connection that pushes its changes (the hub client)."""

    @property
    def connected(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    def watch_connection(self, listener: Callable[[bool], None]) -> Callable[[], None]: ...


MODEL = "model"
CONFIG = "config"


def camera_key(camera: str) -> str:
    return f"camera/{camera}"


def sink_key(sink: str) -> str:
    return f"sink/{sink}"


@dataclass(frozen=True, slots=True)
class Board:
    """One consistent view of the board, with typed accessors."""

    entries: Mapping[str, Status]
    version: int

    def cameras(self) -> dict[str, CameraStatus]:
        return {s.camera: s for s in self.entries.values() if isinstance(s, CameraStatus)}

    def sinks(self) -> dict[str, SinkStatus]:
        return {s.name: s for s in self.entries.values() if isinstance(s, SinkStatus)}

    def model(self) -> ModelStatus:
        status = self.entries.get(MODEL)
        return status if isinstance(status, ModelStatus) else ModelStatus()

    def config(self) -> ConfigStatus:
        status = self.entries.get(CONFIG)
        return status if isinstance(status, ConfigStatus) else ConfigStatus()


class StatusBoard:
    """Touched on the loop only: threads hand their statuses over with call_soon_threadsafe."""

    def __init__(self) -> None:
        self._entries: dict[str, Status] = {}
        self._version = 0
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[str], None]] = []

    def listen(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """`listener(key)` right after each change, on the loop (for hooks that must see every change,
        in order; readers that only need the latest use changes()). Returns the unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def put(self, key: str, status: Status) -> None:
        if self._entries.get(key) == status:
            return
        self._entries[key] = status
        self._bump(key)

    def remove(self, key: str) -> None:
        if self._entries.pop(key, None) is not None:
            self._bump(key)

    def _bump(self, key: str) -> None:
        self._version += 1
        # Wake every reader waiting on the current event, then start a new one for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in list(self._listeners):
            listener(key)

    def snapshot(self) -> Board:
        return Board(MappingProxyType(dict(self._entries)), self._version)

    async def changes(self) -> AsyncGenerator[Board]:
        """The board now, then again after every change; a reader that falls behind skips to the latest."""
        seen = -1
        while True:
            if self._version == seen:
                await self._changed.wait()
            board = self.snapshot()
            seen = board.version
            yield board


def show_connection(board: StatusBoard, name: str, connection: Connection) -> Callable[[], None]:
    """Keep `sink/<name>` on the board in step with `connection`, from now on; returns the unsubscribe."""

    def put(_: bool = False) -> None:
        board.put(sink_key(name), SinkStatus(name, connection.connected, connection.last_error))

    put()
    return connection.watch_connection(put)
