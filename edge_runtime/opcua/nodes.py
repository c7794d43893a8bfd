"""One station's object in the OPC UA address space, shaped after OPC 40100 (Machine Vision) without
claiming conformance: its last result, its counters, its health and the Inspect method.

Node ids are strings in our namespace, stable across restarts and documented in the README:

    ns=<idx>;s=EdgeRuntime                          object under Objects
    ns=<idx>;s=Stations                             folder
    ns=<idx>;s=Stations/<id>                        the station
    ns=<idx>;s=Stations/<id>/LastResult/<name>      PartId, Verdict, Reason, Detail, Defects, TriggeredAt,
                                                    DecidedAt, ModelId, ResultJson
    ns=<idx>;s=Stations/<id>/Counters/<name>        Parts, Passes, Fails, NoVerdicts, Pending
    ns=<idx>;s=Stations/<id>/Health/<name>          CameraState, ModelReady, Device
    ns=<idx>;s=Stations/<id>/Inspect                method: PartId -> Verdict, Reason, ResultJson
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from edge_runtime.stations.status import StationStatus
from edge_runtime.stations.verdict import Verdict

String, DateTime, UInt64, UInt32, Boolean = (
    ua.VariantType.String,
    ua.VariantType.DateTime,
    ua.VariantType.UInt64,
    ua.VariantType.UInt32,
    ua.VariantType.Boolean,
)
NULL_TIME = ua.get_win_epoch()  # 1601-01-01: OPC UA's "no time" (encodes as 0)

# (folder, variable, type, value before the first verdict)
VARIABLES: tuple[tuple[str, str, ua.VariantType, Any], ...] = (
    ("LastResult", "PartId", String, ""),
    ("LastResult", "Verdict", String, ""),
    ("LastResult", "Reason", String, ""),
    ("LastResult", "Detail", String, ""),
    ("LastResult", "Defects", String, []),
    ("LastResult", "TriggeredAt", DateTime, NULL_TIME),
    ("LastResult", "DecidedAt", DateTime, NULL_TIME),
    ("LastResult", "ModelId", String, ""),
    ("LastResult", "ResultJson", String, ""),
    ("Counters", "Parts", UInt64, 0),
    ("Counters", "Passes", UInt64, 0),
    ("Counters", "Fails", UInt64, 0),
    ("Counters", "NoVerdicts", UInt64, 0),
    ("Counters", "Pending", UInt32, 0),
    ("Health", "CameraState", String, ""),
    ("Health", "ModelReady", Boolean, False),
    ("Health", "Device", String, ""),
)
TYPES = {f"{folder}/{name}": kind for folder, name, kind, _ in VARIABLES}

InspectHandler = Callable[[str, tuple[ua.Variant, ...]], Awaitable[ua.CallMethodResult]]


@dataclass(frozen=True, slots=True)
class Health:
    """What a station depends on: its cameras' states, and the model in service."""

    camera_state: str  # "cam1=streaming,cam2=stalled"
    model_ready: bool
    device: str


def result_values(verdict: Verdict | None) -> dict[str, Any]:
    if verdict is None:
        return {}
    return {
        "LastResult/PartId": verdict.part_id,
        "LastResult/Verdict": verdict.verdict.value,
        "LastResult/Reason": "" if verdict.reason is None else verdict.reason.value,
        "LastResult/Detail": verdict.detail,
        "LastResult/Defects": [d.tag for d in verdict.defects],
        "LastResult/TriggeredAt": _utc(verdict.triggered_at),
        "LastResult/DecidedAt": _utc(verdict.decided_at),
        "LastResult/ModelId": verdict.model_id or "",
        "LastResult/ResultJson": result_json(verdict),
    }


def result_json(verdict: Verdict) -> str:
    return json.dumps(verdict.to_dict(), separators=(",", ":"))


def counter_values(status: StationStatus) -> dict[str, Any]:
    return {
        "Counters/Parts": status.parts,
        "Counters/Passes": status.passes,
        "Counters/Fails": status.fails,
        "Counters/NoVerdicts": status.no_verdicts,
        "Counters/Pending": status.pending,
    }


def health_values(health: Health) -> dict[str, Any]:
    return {
        "Health/CameraState": health.camera_state,
        "Health/ModelReady": health.model_ready,
        "Health/Device": health.device,
    }


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


class StationNodes:
    """Writes only what changed; a verdict rewrites its whole LastResult (one notification set per part)."""

    def __init__(self, server: Server, idx: int, station: str, root: Node) -> None:
        self._server = server
        self._idx = idx
        self.station = station
        self._root = root
        self._shown: dict[str, Any] = {}
        self._last_id: str | None = None

    @classmethod
    async def create(
        cls, server: Server, idx: int, parent: Node, station: str, inspect: InspectHandler
    ) -> StationNodes:
        base = f"Stations/{station}"
        root = await parent.add_object(node_id(base, idx), ua.QualifiedName(station, idx))
        folders = {}
        for folder in dict.fromkeys(f for f, *_ in VARIABLES):
            folders[folder] = await root.add_object(
                node_id(f"{base}/{folder}", idx), ua.QualifiedName(folder, idx)
            )
        for folder, name, kind, initial in VARIABLES:
            node = await folders[folder].add_variable(
                node_id(f"{base}/{folder}/{name}", idx), ua.QualifiedName(name, idx), initial, kind
            )
            if isinstance(initial, list):
                # asyncua leaves an array variable's rank unset (and its write_array_dimensions is scalar)
                await node.write_value_rank(ua.ValueRank.OneDimension)
                dimensions = ua.Variant([0], ua.VariantType.UInt32)
                await node.write_attribute(AttributeIds.ArrayDimensions, ua.DataValue(dimensions))
            # variables are read-only for clients: asyncua's default access level is CurrentRead

        async def call(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
            return await inspect(station, args)

        await root.add_method(
            node_id(f"{base}/Inspect", idx),
            ua.QualifiedName("Inspect", idx),
            call,
            [_argument("PartId", "the part to inspect: 1..128 printable characters")],
            [
                _argument("Verdict", "pass | fail | no_verdict"),
                _argument("Reason", "why no verdict (empty when pass or fail)"),
                _argument("ResultJson", "the whole verdict, as published to the sinks"),
            ],
        )
        return cls(server, idx, station, root)

    def node_id(self, path: str) -> ua.NodeId:
        return node_id(f"Stations/{self.station}/{path}", self._idx)

    async def show_status(self, status: StationStatus) -> None:
        values = counter_values(status)
        if status.last is not None and status.last.id != self._last_id:
            self._last_id = status.last.id
            values |= result_values(status.last)
            await self._write(values, force=tuple(result_values(status.last)))
        else:
            await self._write(values)

    async def show_health(self, health: Health) -> None:
        await self._write(health_values(health))

    async def delete(self) -> None:
        await self._server.delete_nodes([self._root], recursive=True)

    async def _write(self, values: dict[str, Any], force: tuple[str, ...] = ()) -> None:
        now = ua.DateTime.now(UTC)
        for path, value in values.items():
            if path not in force and self._shown.get(path, _UNSET) == value:
                continue
            self._shown[path] = value
            variant = ua.Variant(value, TYPES[path])
            await self._server.write_attribute_value(
                self.node_id(path), ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)
            )


def node_id(path: str, idx: int) -> ua.NodeId:
    return ua.NodeId(ua.String(path), ua.Int16(idx))


def _argument(name: str, description: str) -> ua.Argument:
    argument = ua.Argument()
    argument.Name = name
    argument.DataType = ua.NodeId(ua.Int32(ObjectIds.String))
    argument.ValueRank = ua.ValueRank.Scalar
    argument.Description = ua.LocalizedText(description)
    return argument


_UNSET: object = object()
