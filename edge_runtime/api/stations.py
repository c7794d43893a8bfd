"""Part triggers over HTTP (the three other paths: stations/mqtt_trigger.py, the `inspect` direct
method, OPC UA's Inspect): all go through the Stations part.

    GET  /stations                          every station's counters and last verdict
    POST /stations/{station}/trigger        {"partId": "4711", "plcTime": ..., "metadata": {...}}
                                            (or Content-Type text/plain: the bare part id)
                                            -> 200 the verdict, when it is ready (pass, fail or
                                               no_verdict: all three are answers)
                                            -> 202 + Location when asked with `Prefer: respond-async`
                                               or `?wait=false`
    GET  /stations/{station}/parts/{part}   200 the verdict | 202 pending | 404 not remembered

With triggers.key set, every route here needs `Authorization: Bearer <key>`. A repeated part id gets
the same verdict (and the same 200/202) for as long as it is remembered (triggers.remember_parts).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from edge_runtime.api.admin import object_body
from edge_runtime.api.body import BodyLimits, expect_continue, received_body
from edge_runtime.api.errors import ApiError
from edge_runtime.api.keys import bearer_matches
from edge_runtime.app_keys import BODIES, SETTINGS, STATIONS
from edge_runtime.stations.service import Stations
from edge_runtime.stations.triggers import BadTrigger, NotAccepting, UnknownStation, parse_trigger
from edge_runtime.stations.verdict import Verdict


def register_station_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("GET", "/stations", list_stations, expect_handler=expect_continue)
    add("POST", "/stations/{station}/trigger", trigger, expect_handler=expect_continue)
    add("GET", "/stations/{station}/parts/{part}", part, expect_handler=expect_continue)


async def list_stations(request: web.Request) -> web.Response:
    stations = _stations(request)
    return _json(200, {"stations": [s.to_dict() for _, s in sorted(stations.statuses.all().items())]})


async def trigger(request: web.Request) -> web.Response:
    received_at = time.time()  # before the body: the part was at the station when the request came
    stations = _stations(request)
    station = request.match_info["station"]
    body = await _trigger_body(request)
    try:
        future = stations.submit(parse_trigger(station, body, "http", received_at))
    except UnknownStation as exc:
        raise ApiError(404, "UnknownStation", str(exc)) from None
    except BadTrigger as exc:
        raise ApiError(400, "BadTrigger", str(exc)) from None
    except NotAccepting as exc:
        raise ApiError(503, "ShuttingDown", str(exc)) from None
    wait = "respond-async" not in request.headers.get("Prefer", "") and request.query.get("wait") != "false"
    if not wait and not future.done():
        return _pending(station, _part_of(body))
    verdict = await asyncio.shield(future)  # the client may leave; the part is judged all the same
    return _json(200, verdict.to_dict())


async def part(request: web.Request) -> web.Response:
    stations = _stations(request)
    station, part_id = request.match_info["station"], request.match_info["part"]
    if station not in stations.ids:
        raise ApiError(404, "UnknownStation", str(UnknownStation(station, stations.ids)))
    future = stations.recent(station, part_id)
    if future is None:
        raise ApiError(404, "UnknownPart", f"part {part_id[:128]!r} is not (or no longer) remembered")
    if not future.done():
        return _pending(station, part_id)
    verdict: Verdict = future.result()
    return _json(200, verdict.to_dict())


async def _trigger_body(request: web.Request) -> dict[str, Any] | str:
    """A JSON object, or (Content-Type text/plain) the bare part id, as simple PLC clients send it."""
    if request.content_type != "text/plain":
        return await object_body(request, '{"partId": "..."}')
    settings = request.app[SETTINGS].server
    async with received_body(request, BodyLimits.of(settings), request.app[BODIES]) as raw:
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ApiError(400, "BadTrigger", "a text/plain trigger is the part id in UTF-8") from None


def _part_of(body: dict[str, Any] | str) -> object:
    return body if isinstance(body, str) else body.get("partId", body.get("part_id"))


def _stations(request: web.Request) -> Stations:
    key = request.app[SETTINGS].triggers.key
    if key is not None and not bearer_matches(request, key):
        raise ApiError(401, "Unauthorized", "missing or wrong 'Authorization: Bearer <trigger key>' header")
    stations = request.app.get(STATIONS)
    if stations is None:
        raise ApiError(503, "NotReady", "the runtime is starting")
    return stations


def _pending(station: str, part_id: object) -> web.Response:
    location = f"/stations/{quote(station, safe='')}/parts/{quote(str(part_id), safe='')}"
    response = _json(202, {"station": station, "part_id": part_id, "status": "pending"})
    response.headers["Location"] = location
    return response


def _json(status: int, body: object) -> web.Response:
    return web.Response(
        status=status, body=(json.dumps(body) + "\n").encode(), headers={"Content-Type": "application/json"}
    )
