"""The OPC UA server part: stations for PLCs and MES (read the last result, subscribe, call Inspect).

    Stations.statuses.changes() ─┐                        ┌─> Stations/<id>/LastResult/*, Counters/*
    StatusBoard.changes() ───────┴─> one task each ─> write┴─> Stations/<id>/Health/*   (clients subscribe)
    client ─ Call Stations/<id>/Inspect(PartId) ─> calls.inspect ─> Stations.submit ─> await shield ─> outputs

A change of `opcua` settings restarts the server; a change of stations adds or removes station objects
while it runs. Values are pushed by the two tasks; nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server

from edge_runtime.errors import ConfigError
from edge_runtime.opcua.calls import StationsView, inspect
from edge_runtime.opcua.certificates import ClientCertificates, check_pki_dir, own_certificate
from edge_runtime.opcua.config import OpcUaConfig
from edge_runtime.opcua.nodes import Health, StationNodes, node_id
from edge_runtime.opcua.security import Users, identity_tokens, security_policies
from edge_runtime.settings import OpcUaSettings, StationSettings
from edge_runtime.status import Board, StatusBoard

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0


@dataclass(slots=True)
class _Running:
    config: OpcUaConfig
    server: Server
    idx: int
    folder: Node
    endpoint: str
    stations: dict[str, StationNodes] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def cameras(self, station: str) -> tuple[str, ...]:
        return next((s.cameras for s in self.config.stations if s.id == station), ())


class OpcUaServer:
    """A part (parts.py): `async with` serves when `opcua.enabled`; apply(OpcUaConfig) adds or removes
    stations live and restarts the server for any other change (rolling back to the old settings when
    the new ones cannot start)."""

    def __init__(
        self,
        settings: OpcUaSettings,
        stations: tuple[StationSettings, ...],
        service: StationsView,
        board: StatusBoard,
    ) -> None:
        self.config = OpcUaConfig(settings, stations)
        self._service = service
        self._board = board
        self._running: _Running | None = None
        self._lock = asyncio.Lock()  # node changes (apply) vs. the writers

    @property
    def endpoint(self) -> str | None:
        """The server's opc.tcp URL (with the real port when settings.port is 0); None when stopped."""
        return None if self._running is None else self._running.endpoint

    # ---- the part contract ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._start(self.config)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    def check(self, config: OpcUaConfig) -> None:
        if config.settings.enabled:
            check_pki_dir(config.settings.pki_dir)

    async def apply(self, config: OpcUaConfig) -> list[str]:
        old = self.config
        if config == old:
            return []
        if config.settings != old.settings:
            await self._stop()
            try:
                await self._start(config)
            except Exception as exc:
                log.error("opcua: the new settings failed to start (%s); restoring the previous ones", exc)
                try:
                    await self._start(old)
                except Exception:
                    log.exception("opcua: the previous settings failed to start too")
                raise ConfigError(f"opcua: cannot start: {exc}") from exc
            self.config = config
            return ["opcua"]
        self.config = config
        running = self._running
        if running is None:
            return []
        async with self._lock:
            running.config = config
            changes = await self._set_stations(running, config.station_ids)
            board = self._board.snapshot()  # a station's cameras may have changed too
            for station, nodes in running.stations.items():
                await nodes.show_health(_health(board, running.cameras(station)))
            return changes

    # ---- start and stop -------------------------------------------------------------------------

    async def _start(self, config: OpcUaConfig) -> None:
        settings = config.settings
        if not settings.enabled:
            return
        _quiet_asyncua()
        own = await asyncio.to_thread(own_certificate, settings.pki_dir)
        certificates = ClientCertificates(settings.pki_dir, settings.trust_any_client_certificate)
        users = Users(settings.users, settings.allow_anonymous, settings.allow_unencrypted, certificates)
        server = Server(user_manager=users)
        await server.init()
        server.set_server_name("edge-runtime")
        server.product_uri = "urn:edge-runtime"
        await server.set_application_uri(own.application_uri)
        host = _advertised(settings.host)
        server.set_endpoint(f"opc.tcp://{host}:{settings.port}")
        server.socket_address = (settings.host, settings.port)  # bind there, announce the host name
        await server.load_certificate(str(own.cert_path))
        await server.load_private_key(str(own.key_path))
        policies = security_policies(settings.allow_unencrypted)
        server.set_security_policy(policies)
        server.set_identity_tokens(identity_tokens(settings.users, settings.allow_anonymous))
        server.set_certificate_validator(certificates)
        idx = await server.register_namespace(settings.namespace)
        root = await server.nodes.objects.add_object(
            node_id("EdgeRuntime", idx), ua.QualifiedName("EdgeRuntime", idx)
        )
        folder = await root.add_folder(node_id("Stations", idx), ua.QualifiedName("Stations", idx))
        running = _Running(config, server, idx, folder, "")
        await self._set_stations(running, config.station_ids)  # complete before the port opens
        await server.start()
        try:
            port = server.bserver.port if server.bserver is not None else settings.port
            running.endpoint = f"opc.tcp://{host}:{port}"
            running.tasks = [
                _task(self._follow_statuses(running), "opcua-statuses"),
                _task(self._follow_board(running), "opcua-board"),
            ]
        except BaseException:
            await _stop_server(server)
            raise
        self._running = running
        log.info(
            "opcua: serving %s (namespace %s = ns=%d); security policies %s; users %s%s; certificate %s,"
            " thumbprint %s; client certificates: %s",
            running.endpoint,
            settings.namespace,
            idx,
            ", ".join(p.name for p in policies),
            len(settings.users),
            ", anonymous allowed" if settings.allow_anonymous else "",
            own.cert_path,
            own.thumbprint,
            "any" if settings.trust_any_client_certificate else f"those in {settings.pki_dir / 'trusted'}",
        )

    async def _stop(self) -> None:
        running, self._running = self._running, None
        if running is None:
            return
        for task in running.tasks:
            task.cancel()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.gather(*running.tasks, return_exceptions=True)
        except TimeoutError:
            log.warning("opcua: the writers did not stop in %.0f s", STOP_TIMEOUT_S)
        await _stop_server(running.server)
        log.info("opcua: stopped %s", running.endpoint)

    # ---- stations -------------------------------------------------------------------------------

    async def _set_stations(self, running: _Running, ids: Iterable[str]) -> list[str]:
        wanted = list(ids)
        changes = []
        for station in [s for s in running.stations if s not in wanted]:
            await running.stations.pop(station).delete()
            changes.append(f"opcua station {station} removed")
        board = self._board.snapshot()
        for station in wanted:
            if station in running.stations:
                continue
            nodes = await StationNodes.create(
                running.server, running.idx, running.folder, station, self._inspect
            )
            running.stations[station] = nodes
            status = self._service.statuses.get(station)
            if status is not None:
                await nodes.show_status(status)
            await nodes.show_health(_health(board, running.cameras(station)))
            changes.append(f"opcua station {station} added")
        return changes

    async def _follow_statuses(self, running: _Running) -> None:
        async for statuses in self._service.statuses.changes():
            async with self._lock:
                for station, status in statuses.items():
                    nodes = running.stations.get(station)
                    if nodes is not None:
                        await nodes.show_status(status)

    async def _follow_board(self, running: _Running) -> None:
        async for board in self._board.changes():
            async with self._lock:
                for station, nodes in running.stations.items():
                    await nodes.show_health(_health(board, running.cameras(station)))

    # ---- Inspect ----------------------------------------------------------------------------------

    async def _inspect(self, station: str, args: tuple[ua.Variant, ...]) -> ua.CallMethodResult:
        return await inspect(self._service, station, args)


def _health(board: Board, cameras: tuple[str, ...]) -> Health:
    states = board.cameras()
    serving = board.model().serving
    return Health(
        camera_state=",".join(f"{c}={states[c].state.value if c in states else 'unknown'}" for c in cameras),
        model_ready=serving is not None,
        device="" if serving is None else serving.device,
    )


def _advertised(host: str) -> str:
    """The host name clients reach us by: a wildcard bind is announced as this machine's name."""
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def _quiet_asyncua() -> None:
    # asyncua logs every request (each read, browse and call) at INFO: keep it to warnings unless
    # someone set its level on purpose
    logger = logging.getLogger("asyncua")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _task(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coroutine, name=name)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("opcua: %s failed", task.get_name(), exc_info=task.exception())


async def _stop_server(server: Server) -> None:
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            # asyncua's stop waits out the 1 s sleep of its ServerStatus clock: end the clock first
            clock, server.iserver.time_task = server.iserver.time_task, None
            if clock is not None:
                clock.cancel()
                await asyncio.wait([clock])
            await server.stop()
    except Exception:
        log.exception("opcua: stopping the server failed")
