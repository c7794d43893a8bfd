"""The OPC UA server's slice of the settings (importable without asyncua: the controller needs it)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_runtime.settings import OpcUaSettings, Settings, StationSettings


@dataclass(frozen=True, slots=True)
class OpcUaConfig:
    """The OPC UA server's slice of the settings."""

    settings: OpcUaSettings
    stations: tuple[StationSettings, ...]

    @classmethod
    def of(cls, settings: Settings) -> OpcUaConfig:
        return cls(settings.opcua, settings.stations)

    @property
    def station_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.stations if s.enabled)
