"""The OPC UA part as the composition root holds it, enabled or not: asyncua is imported and the
server built only when opcua.enabled, at start or when a twin patch enables it; a patch that disables
it stops the server. Without asyncua installed, enabling it is a ConfigError (the running
configuration stays), never a silent no-op."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Self

from edge_runtime.errors import ConfigError
from edge_runtime.opcua.config import OpcUaConfig
from edge_runtime.status import StatusBoard

if TYPE_CHECKING:
    from edge_runtime.opcua.calls import StationsView
    from edge_runtime.opcua.server import OpcUaServer


class OpcUaPart:
    def __init__(self, config: OpcUaConfig, service: StationsView, board: StatusBoard) -> None:
        self.config = config
        self._service = service
        self._board = board
        self.server: OpcUaServer | None = None

    async def __aenter__(self) -> Self:
        if self.config.settings.enabled:
            self.check(self.config)
            await self._start(self.config)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            await self.server.__aexit__(None, None, None)
            self.server = None

    @property
    def endpoint(self) -> str | None:
        return None if self.server is None else self.server.endpoint

    def check(self, config: OpcUaConfig) -> None:
        if not config.settings.enabled:
            return
        if importlib.util.find_spec("asyncua") is None:
            raise ConfigError("opcua.enabled needs the asyncua package: pip install 'edge-runtime[opcua]'")
        from edge_runtime.opcua.server import OpcUaServer

        (self.server or OpcUaServer(config.settings, config.stations, self._service, self._board)).check(
            config
        )

    async def apply(self, config: OpcUaConfig) -> list[str]:
        if config.settings.enabled and self.server is None:
            await self._start(config)
            changes = ["opcua started"]
        elif not config.settings.enabled and self.server is not None:
            await self.server.__aexit__(None, None, None)
            self.server = None
            changes = ["opcua stopped"]
        elif self.server is not None:
            changes = await self.server.apply(config)
        else:
            changes = []
        self.config = config
        return changes

    async def _start(self, config: OpcUaConfig) -> None:
        from edge_runtime.opcua.server import OpcUaServer

        server = OpcUaServer(config.settings, config.stations, self._service, self._board)
        await server.__aenter__()
        self.server = server
