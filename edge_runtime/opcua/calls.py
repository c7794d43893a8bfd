"""The Inspect method: an OPC UA call -> a trigger (source "opcua") -> the stations service -> the
verdict as output arguments, or a Bad status code that the client's stack raises."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from edge_runtime.latest import Latest
from edge_runtime.opcua.nodes import result_json
from edge_runtime.stations.status import StationStatus
from edge_runtime.stations.triggers import BadTrigger, NotAccepting, UnknownStation, parse_trigger
from edge_runtime.stations.verdict import Trigger, Verdict

log = logging.getLogger(__name__)

SOURCE = "opcua"


class StationsView(Protocol):
    """What the server needs of the stations service (edge_runtime.stations.service.Stations)."""

    statuses: Latest[str, StationStatus]  # pushed after every verdict, and one per station at start

    def submit(self, trigger: Trigger) -> asyncio.Future[Verdict]:
        """Raises UnknownStation, NotAccepting; idempotent per (station, part id)."""
        ...


async def inspect(service: StationsView, station: str, args: tuple[ua.Variant, ...]) -> ua.CallMethodResult:
    if not args:
        return _answer(StatusCodes.BadArgumentsMissing)
    if len(args) > 1:
        return _answer(StatusCodes.BadTooManyArguments)
    part_id = args[0].Value
    if not isinstance(part_id, str):
        return _answer(StatusCodes.BadTypeMismatch, StatusCodes.BadTypeMismatch)
    try:
        future = service.submit(parse_trigger(station, part_id, SOURCE, time.time()))
    except BadTrigger as exc:
        log.info("opcua: Inspect at %s refused: %s", station, exc)
        return _answer(StatusCodes.BadInvalidArgument, StatusCodes.BadInvalidArgument)
    except NotAccepting:
        return _answer(StatusCodes.BadShutdown)
    except UnknownStation:  # removed while the call was on its way
        return _answer(StatusCodes.BadNotFound)
    try:
        # a caller that goes away (disconnect, timeout) must not cancel the part's inspection
        verdict = await asyncio.shield(future)
    except Exception:
        log.exception("opcua: Inspect at %s failed", station)
        return _answer(StatusCodes.BadInternalError)
    result = _answer(StatusCodes.Good, StatusCodes.Good)
    result.OutputArguments = [
        ua.Variant(verdict.verdict.value, ua.VariantType.String),
        ua.Variant("" if verdict.reason is None else verdict.reason.value, ua.VariantType.String),
        ua.Variant(result_json(verdict), ua.VariantType.String),
    ]
    return result


def _answer(code: int, argument: int | None = None) -> ua.CallMethodResult:
    result = ua.CallMethodResult()
    result.StatusCode = ua.StatusCode(ua.UInt32(code))
    if argument is not None:
        result.InputArgumentResults = [ua.StatusCode(ua.UInt32(argument))]
    return result
