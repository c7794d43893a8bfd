"""The Delivery part: outbox, snapshot store and sinks behind one stable `publish()`.

    publish(event) -> the durable outbox (one row per sink) -> a delivery loop per sink (dispatcher.py)
                   -> the event history (history.py: queried by the operator page; bounded retention)
                   -> live observers (watch(): the web UI's feed; not durable, a slow one loses events)

Sinks are replaced in place by `apply()` when their settings change: the old ones close first (two MQTT
clients with one client id would fight, and the old one's "offline" must not land after the new one's
"online"), events published meanwhile wait in the outbox, and new sinks that fail to start are replaced by
the previous ones again (rollback). Each sink's connection state is pushed to the status board.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from edge_runtime.domain import Record
from edge_runtime.errors import ConfigError
from edge_runtime.events.dispatcher import ConnectionWatch, Dispatcher, OutboxLimits, Sink
from edge_runtime.events.history import EventHistory, HistoryLimits
from edge_runtime.events.outbox import Backlog, Outbox
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.latest import Latest
from edge_runtime.redact import scrub
from edge_runtime.settings import EventSettings, Settings, SinkSettings
from edge_runtime.sinks.build import build_sinks
from edge_runtime.status import SinkStatus, StatusBoard, sink_key

if TYPE_CHECKING:
    from edge_runtime.iotedge.hub import HubClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Delivery's slice of the settings."""

    events: EventSettings
    sinks: SinkSettings
    public_url: str | None  # snapshot links in events

    @classmethod
    def of(cls, settings: Settings) -> DeliveryConfig:
        return cls(settings.events, settings.sinks, settings.server.public_url)

    def snapshot_store(self) -> SnapshotStore | None:
        e = self.events
        if e.snapshot_dir is None:
            return None
        return SnapshotStore(e.snapshot_dir, e.snapshot_max_count, e.snapshot_max_bytes, self.public_url)

    def event_history(self) -> EventHistory | None:
        e = self.events
        if e.history_path is None:
            return None
        return EventHistory(e.history_path, HistoryLimits(e.history_max_events, e.history_max_age_s))

    def history_settings(self) -> tuple[object, ...]:
        e = self.events
        return (e.history_path, e.history_max_events, e.history_max_age_s)

    def snapshot_settings(self) -> tuple[object, ...]:
        e = self.events
        return (e.snapshot_dir, e.snapshot_max_count, e.snapshot_max_bytes, self.public_url)


class Running(Protocol):
    """What Delivery needs of a started dispatcher (a test seam: Dispatcher satisfies it)."""

    @property
    def sinks(self) -> tuple[Sink, ...]: ...

    async def publish(self, event: Record) -> None: ...

    async def backlog(self) -> dict[str, int]: ...

    async def close(self, drain_timeout: float = 2.0) -> None: ...


StartDispatcher = Callable[["DeliveryConfig"], Awaitable[Running]]


@runtime_checkable
class StatusWatch(Protocol):
    """A sink that pushes every change of its status (connection and error): MQTT."""

    def watch_status(self, listener: Callable[[SinkStatus], None]) -> Callable[[], None]: ...


class Delivery:
    WATCH_QUEUE = 256  # events a live observer may lag behind before it loses the oldest
    DRAIN_ON_EXIT_S = 2.0
    DRAIN_ON_SWAP_S = 1.0

    def __init__(
        self,
        config: DeliveryConfig,
        board: StatusBoard,
        hub: HubClient | None = None,
        start_dispatcher: StartDispatcher | None = None,
    ) -> None:
        """`start_dispatcher(config)`: sinks and delivery loops for a configuration (default: the
        configured sinks over this part's outbox); a seam for tests of the swap and its rollback."""
        self.config = config
        self._board = board
        self._hub = hub
        self._outbox = Outbox(config.events.outbox_path)
        self._start_dispatcher = start_dispatcher or self._dispatcher_for
        self._dispatcher: Running | None = None
        self._running = False  # the dispatcher in self._dispatcher has not been closed
        self._snapshots = config.snapshot_store()
        self._unwatch: list[Callable[[], None]] = []
        self._observers: set[asyncio.Queue[Record]] = set()
        self._history = config.event_history()
        # Each sink's outbox depth and oldest row, measured at the dispatcher's housekeeping (1 s).
        self.backlogs: Latest[str, Backlog] = Latest()

    # ---- the part ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        log.info("%s", where_events_go(self.config))
        await self._outbox.open()
        try:
            if self._history is not None:
                await self._history.__aenter__()
            try:
                await self._start(self.config)
            except BaseException:
                if self._history is not None:
                    await self._history.__aexit__()
                raise
        except BaseException:
            await self._outbox.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Waiting events get a moment to go out; whatever is left goes out after the next start.
        await self._stop(self.DRAIN_ON_EXIT_S)
        if self._history is not None:
            await self._history.__aexit__()
        await self._outbox.close()

    def check(self, config: DeliveryConfig) -> None:
        if config.events.outbox_path != self.config.events.outbox_path:
            raise ConfigError("events.outbox_path cannot change at run time")
        if config.history_settings() != self.config.history_settings():
            raise ConfigError("events.history_* cannot change at run time (set them in the environment)")
        # Construct (not start) every sink: unreadable certificates etc. are refused here.
        build_sinks(config.events, config.sinks, None, self._hub)

    async def apply(self, config: DeliveryConfig) -> list[str]:
        if config == self.config:
            return []
        old, old_snapshots = self.config, self._snapshots
        await self._stop(self.DRAIN_ON_SWAP_S)
        if config.snapshot_settings() != old.snapshot_settings():
            self._snapshots = config.snapshot_store()
        try:
            await self._start(config)
        except Exception as exc:
            log.error("new sinks failed to start (%s); restoring the previous ones", scrub(str(exc)))
            self._snapshots = old_snapshots  # the same store: a save in flight keeps its directory lock
            try:
                await self._start(old)
            except Exception:
                # Events still go to the outbox (publish works without a dispatcher); they go out
                # once a configuration with working sinks is applied.
                log.critical("the previous sinks failed to start again: events wait in the outbox")
            raise ConfigError(f"sinks: cannot start: {type(exc).__name__}: {exc}") from exc
        self.config = config
        return ["sinks"]

    # ---- what others use --------------------------------------------------------------------------
    @property
    def snapshots(self) -> SnapshotStore | None:
        """Stable: replaced only when the snapshot settings change."""
        return self._snapshots

    @property
    def history(self) -> EventHistory | None:
        """The event history (None when events.history_path is off)."""
        return self._history

    @property
    def dispatcher(self) -> Running | None:
        """The dispatcher in service (after a failed rollback: the closed one, still storing)."""
        return self._dispatcher

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return () if self._dispatcher is None else self._dispatcher.sinks

    async def publish(self, event: Record) -> None:
        """Store `event` durably for every sink (returns once it is on disk), then show it to observers."""
        if self._dispatcher is None:
            raise RuntimeError("Delivery is not entered")
        # After a failed swap whose rollback failed too, this is the closed dispatcher: it still
        # stores events for its sinks, which go out once working sinks are applied.
        await self._dispatcher.publish(event)
        if self._history is not None:
            try:  # a history for people: a full disk there must not stop delivery
                await self._history.record(event)
            except Exception as exc:
                log.warning("event %s not kept in the history: %s", event.id, scrub(str(exc)))
        for queue in self._observers:
            if queue.full():  # a slow observer loses the oldest, never holds up delivery
                queue.get_nowait()
            queue.put_nowait(event)

    def watch(self) -> EventFeed:
        """Events published from this call on, for live views (not durable: a watcher more than
        WATCH_QUEUE events behind loses the oldest). `aclose()` (or `async with`) ends it."""
        return EventFeed(self._observers, self.WATCH_QUEUE)

    async def backlog(self) -> dict[str, int]:
        return {} if self._dispatcher is None else await self._dispatcher.backlog()

    # ---- inside -----------------------------------------------------------------------------------
    async def _dispatcher_for(self, config: DeliveryConfig) -> Running:
        sinks = build_sinks(config.events, config.sinks, self._snapshots, self._hub, self._board)
        limits = OutboxLimits(config.events.outbox_max_events, config.events.outbox_max_age_s)
        dispatcher = Dispatcher(self._outbox, sinks, limits, on_backlog=self.backlogs.put)
        try:
            await dispatcher.start()
        except BaseException:
            await dispatcher.close(drain_timeout=0)
            raise
        return dispatcher

    async def _start(self, config: DeliveryConfig) -> None:
        self._dispatcher = await self._start_dispatcher(config)
        self._running = True
        for sink in self._dispatcher.sinks:
            self._report_status(sink)
            if isinstance(sink, StatusWatch):
                self._unwatch.append(sink.watch_status(functools.partial(self._put, sink.name)))
            elif isinstance(sink, ConnectionWatch):
                self._unwatch.append(sink.watch_connection(functools.partial(self._connection, sink)))

    async def _stop(self, drain_timeout: float) -> None:
        unwatch, self._unwatch = self._unwatch, []
        for stop_watching in unwatch:
            stop_watching()
        dispatcher = self._dispatcher  # kept once closed: see publish()
        if dispatcher is not None and self._running:
            self._running = False
            for sink in dispatcher.sinks:
                self._board.remove(sink_key(sink.name))
                self.backlogs.remove(sink.name)
            await dispatcher.close(drain_timeout=drain_timeout)

    def _connection(self, sink: Sink, connected: bool) -> None:
        self._report_status(sink)

    def _report_status(self, sink: Sink) -> None:
        with contextlib.suppress(Exception):  # a status is informative: never fail delivery over it
            self._put(sink.name, sink.status())

    def _put(self, name: str, status: SinkStatus) -> None:
        self._board.put(sink_key(name), status)


def where_events_go(config: DeliveryConfig) -> str:
    """For the startup log: a newcomer's first question is where the events and snapshots appear."""
    events = config.events
    sinks = [f"JSONL {events.jsonl_path.resolve()}"] if events.jsonl_path else []
    sinks += [name for name, on in (("MQTT", config.sinks.mqtt), ("IoT Hub", config.sinks.iothub)) if on]
    snapshots = (
        f"{events.snapshot_dir.resolve()} (served at /snapshots/<event id>.jpg)"
        if events.snapshot_dir
        else "nowhere (events.snapshot_dir is off)"
    )
    return (
        f"events go to {', '.join(sinks) or 'no sink'}; snapshots to {snapshots}; "
        f"undelivered events wait in {events.outbox_path.resolve()}"
    )


class EventFeed:
    """One live observer of published events; registered when made, so nothing published after
    watch() returns is missed."""

    def __init__(self, observers: set[asyncio.Queue[Record]], size: int) -> None:
        self._observers = observers
        self._queue: asyncio.Queue[Record] = asyncio.Queue(size)
        observers.add(self._queue)

    def __aiter__(self) -> EventFeed:
        return self

    async def __anext__(self) -> Record:
        if self._queue not in self._observers:
            raise StopAsyncIteration
        return await self._queue.get()

    async def aclose(self) -> None:
        self._observers.discard(self._queue)

    async def __aenter__(self) -> EventFeed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
