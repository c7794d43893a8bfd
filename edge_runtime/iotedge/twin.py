"""Module twin and direct methods over the shared HubClient.

On (re)connection the whole twin is read and its desired properties applied; later patches are
applied in order (patches not newer than the applied $version are skipped). Reported properties
(version, model, camera states, sinks, last configuration result) are patched when they change: the
agent wakes on the status board's changes (never on a timer) and reads Controller.status(), already
scrubbed of credentials. A hub that reconnects shows on the board too: the whole twin is read again.
A desired model that fails to load is reported (model.status "failed", model.error, model.update)
while model.configured names the model still serving: the controller's desired document goes back to
it, so a later patch or reload builds on the serving model, and only a newer desired document (a new
$version) tries the model again.
Everything runs on the event loop: the SDK's handler threads only enqueue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Self

from edge_runtime.control import Controller
from edge_runtime.iotedge.hub import TwinChannel
from edge_runtime.iotedge.methods import DirectMethods
from edge_runtime.redact import scrub
from edge_runtime.status import StatusBoard

log = logging.getLogger(__name__)


RESYNC: dict[str, Any] = {}  # sentinel (compared by identity): read and apply the whole twin again


def _newer(version: object, applied: int | None) -> bool:
    return not isinstance(version, int) or applied is None or version > applied


class TwinAgent:
    RETRY_S = 2.0  # after a failed twin read or report

    def __init__(
        self, hub: TwinChannel, controller: Controller, methods: DirectMethods, board: StatusBoard
    ) -> None:
        self._hub = hub
        self._controller = controller
        self._methods = methods
        self._board = board
        self._patches: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # or RESYNC
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._reported: dict[str, Any] = {}
        self._was_connected = True
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="twin"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        await self._hub.connected_once.wait()
        await self._hub.listen(self._patches.put_nowait, self._requests.put_nowait)
        self._tasks.append(asyncio.create_task(self._serve_methods(), name="twin-methods"))
        await self._sync_whole_twin()
        self._tasks.append(asyncio.create_task(self._report(), name="twin-report"))
        # One consumer applies everything in order: patches and whole-twin resyncs never interleave.
        while True:
            patch = await self._patches.get()
            try:
                if patch is RESYNC:
                    await self._sync_whole_twin()
                elif _newer(patch.get("$version"), self._controller.config.desired_version):
                    await self._controller.patch(patch)
            except Exception:  # the twin must keep listening whatever one patch did
                log.exception("twin: applying desired properties failed")

    async def _sync_whole_twin(self) -> None:
        while True:
            try:
                twin = await self._hub.get_twin()
                break
            except Exception as exc:  # the hub can drop right after connecting: try again
                log.warning("twin: cannot read the twin (%s); retrying", scrub(str(exc)))
                await asyncio.sleep(self.RETRY_S)
        desired = twin.get("desired") or {}
        if _newer(desired.get("$version"), self._controller.config.desired_version):
            await self._controller.apply_desired(desired)

    async def _serve_methods(self) -> None:
        while True:
            request = await self._requests.get()
            try:
                status, payload = await self._methods.call(request.name, request.payload)
            except Exception as exc:  # a method must always be answered
                log.exception("direct method %s failed", request.name)
                status, payload = 500, {"error": scrub(f"{type(exc).__name__}: {exc}")}
            try:
                await self._hub.respond(request, status, payload)
            except Exception as exc:
                log.warning("direct method %s: could not answer (%s)", request.name, exc)

    async def _report(self) -> None:
        async for _ in self._board.changes():  # the board as it is now, then after every change
            while not await self._report_once():
                await asyncio.sleep(self.RETRY_S)

    async def _report_once(self) -> bool:
        """Report what changed; False when the hub refused it (try again)."""
        connected = self._hub.connected
        if connected and not self._was_connected:
            self._patches.put_nowait(RESYNC)  # patches sent while we were away are in the twin
        self._was_connected = connected
        current = reported_properties(self._controller.status())
        patch = reported_patch(self._reported, current)
        if not patch or not connected:
            return True  # a reconnect is a change on the board: reported then
        try:
            await self._hub.patch_reported(patch)
        except Exception as exc:
            log.warning("twin: reporting failed (%s); will retry", scrub(str(exc)))
            return False
        self._reported = current
        return True


def reported_properties(status: dict[str, Any]) -> dict[str, Any]:
    """The status in twin form: objects only (no arrays), keys without '.', '$', '#' or spaces."""
    config = dict(status["config"])
    config["changes"] = "; ".join(config.get("changes") or [])
    return {
        "version": status["version"],
        "model": status["model"],
        "cameras": status["cameras"],
        "sinks": {name: {"connected": s.get("connected")} for name, s in status["sinks"].items()},
        "config": config,
    }


def reported_patch(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """What changed, with null for keys that disappeared (twin merge semantics)."""
    patch: dict[str, Any] = {}
    for key, value in current.items():
        old = previous.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            sub = reported_patch(old, value)
            if sub:
                patch[key] = sub
        elif value != old or key not in previous:
            patch[key] = value
    for key in previous.keys() - current.keys():
        patch[key] = None
    return patch
