"""Run-time configuration: desired properties (module twin or admin API) -> new Settings -> applied live.

    effective settings = file/env/flags (the base) <- desired sections (model, cameras, sinks, events,
    log_level), merged per key; cameras, rules and ROIs are objects keyed by id/tag/name, so a twin
    patch can touch one camera or one rule.

A patch is validated whole (pydantic, then every sink is constructed) before anything changes; an
invalid one is rejected with the running configuration untouched and the error kept for reporting.
Changes are applied per part: log level; cameras added, removed, restarted (stream fields) or
reconfigured in place (fps, ROIs, rules); the dispatcher swapped when sinks or event settings change;
the model reloaded or downloaded in the background and swapped atomically once warmed up.

The configured model (the desired document's model section, what a reload loads, what the status
shows as `configured`) is the one serving: a model update that fails is reported (the status shows
the attempt, its id and its error) and the configured model goes back to the one still serving,
unless a newer update is already on its way. Before any model has served, a failed one stays
configured, so a reload tries it again.

Every error, status and log line passes through edge_runtime/redact.py: URLs show no credentials.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edge_runtime import __version__
from edge_runtime.engine import Predictor
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.model_slot import ModelSlot
from edge_runtime.model_updates import Loader, ModelState, ModelUpdater, OptionsFor, in_daemon_thread
from edge_runtime.pipeline import Pipeline
from edge_runtime.redact import scrub, scrub_tree
from edge_runtime.settings import Settings, build_settings, merge_tree, rule_tag_problem
from edge_runtime.sinks.build import build_sinks

if TYPE_CHECKING:
    from edge_runtime.events.dispatcher import Dispatcher

log = logging.getLogger(__name__)
__all__ = ["ApplyResult", "Controller", "ModelState", "in_daemon_thread", "keyed_tree", "merge_patch"]

DESIRED_SECTIONS = ("model", "cameras", "sinks", "events", "log_level")

DispatcherStarter = Callable[[Settings, Pipeline], Awaitable["Dispatcher"]]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: bool
    version: int | None
    changes: tuple[str, ...] = ()
    error: str | None = None
    model_update: int | None = None  # the model update this started (wait_for_model(model_update))

    def to_dict(self) -> dict[str, object]:
        return {
            "applied": self.applied,
            "version": self.version,
            "changes": list(self.changes),
            "error": self.error,
            "model_update": self.model_update,
        }


@dataclass
class ConfigState:
    desired_version: int | None = None
    status: str = "base"  # base | applied | rejected
    error: str | None = None
    changes: list[str] = field(default_factory=list)


class Controller:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        model: ModelSlot,
        executor: Executor,
        options_for: OptionsFor,
        start_dispatcher: DispatcherStarter,
        loader: Loader = Predictor.load,
        default_model_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self._base = keyed_tree(settings)
        self._pipeline = pipeline
        self._model = model
        self._executor = executor
        self._start_dispatcher = start_dispatcher
        self.desired: dict[str, Any] = {}
        self.config = ConfigState()
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._models = ModelUpdater(
            model, options_for, loader, default_model_path, self._changed, self._settle_model
        )
        self._configured_update = 0  # the update that loads (or loaded) the configured model
        self._started_update: int | None = None  # set by _apply for its ApplyResult

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # ---- desired properties ----
    async def apply_desired(self, desired: Mapping[str, Any]) -> ApplyResult:
        """Apply a whole desired document (the twin's, with $version); returns what happened."""
        async with self._lock:
            return await self._apply_document(desired)

    async def patch(self, patch: Mapping[str, Any]) -> ApplyResult:
        """Merge a desired-properties patch (null removes a key, like the twin) and apply the result."""
        async with self._lock:  # merged under the lock: concurrent patches never undo each other
            return await self._apply_document(merge_patch(self.desired, patch))

    async def _apply_document(self, desired: Mapping[str, Any]) -> ApplyResult:
        version = desired.get("$version")
        version = version if isinstance(version, int) else None
        # The document is the twin's state even when rejected: the next patch builds on it.
        self.desired = dict(desired)
        self._started_update = None
        try:
            new = self._validate(desired)
            changes = await self._apply(new)
        except Exception as exc:  # whatever the reason, the running configuration stays
            error = scrub(str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}")
            self.config = ConfigState(version, "rejected", error)
            log.error("desired configuration (version %s) rejected: %s", version, error)
            self._changed()
            return ApplyResult(False, version, error=error)
        self.settings = new
        self.config = ConfigState(version, "applied", None, list(changes))
        log.info("desired configuration (version %s) applied: %s", version, ", ".join(changes) or "no change")
        self._changed()
        return ApplyResult(True, version, tuple(changes), model_update=self._started_update)

    def _validate(self, desired: Mapping[str, Any]) -> Settings:
        sections = {k: v for k, v in desired.items() if not k.startswith("$")}
        unknown = sorted(set(sections) - set(DESIRED_SECTIONS))
        if unknown:
            raise ConfigError(
                f"{unknown[0]!r} cannot be changed at run time (allowed: {', '.join(DESIRED_SECTIONS)});"
                " set it in the module's environment"
            )
        new = build_settings(merge_tree(self._base, sections))  # a null turns a base value off
        if new.events.outbox_path != self.settings.events.outbox_path:
            raise ConfigError("events.outbox_path cannot change at run time")
        serving = self._model.predictor
        if serving is not None and new.model == self.settings.model:  # a new model is checked when loaded
            problem = rule_tag_problem(new, serving.spec.labels)
            if problem:
                raise ConfigError(problem)
        # Construct (not start) every sink: unreadable certificates etc. reject the patch here.
        build_sinks(new, lambda: {}, None, self._pipeline.hub)
        return new

    async def _apply(self, new: Settings) -> list[str]:
        old = self.settings
        changes: list[str] = []
        # Sinks first: the only step that can still fail (a sink that cannot start); it rolls back.
        if new.sinks != old.sinks or new.events != old.events:
            await self._swap_dispatcher(old, new)
            changes.append("sinks")
        if new.log_level != old.log_level:
            logging.getLogger().setLevel(new.log_level.upper())
            changes.append(f"log_level={new.log_level}")
        changes += await self._apply_cameras(new)
        if new.model != old.model:  # the last step: nothing after it can reject the document
            self._started_update = self._start_model(new)
            changes.append("model")
        return changes

    async def _swap_dispatcher(self, old: Settings, new: Settings) -> None:
        # The old sinks close first: two MQTT clients with one client id would fight, and the old
        # one's "offline" must not land after the new one's "online". Events published meanwhile
        # wait in the outbox.
        previous = self._pipeline.dispatcher
        if previous is not None:
            await previous.close(drain_timeout=1.0)
        try:
            self._pipeline.dispatcher = await self._start_dispatcher(new, self._pipeline)
        except Exception as exc:
            log.error("new sinks failed to start (%s); restoring the previous ones", scrub(str(exc)))
            try:
                self._pipeline.dispatcher = await self._start_dispatcher(old, self._pipeline)
            except Exception:
                # The closed dispatcher stays: its publish still stores events in the outbox, so
                # nothing is lost; they go out once a configuration with working sinks is applied.
                log.critical("the previous sinks failed to start again: events wait in the outbox")
            raise ConfigError(f"sinks: cannot start: {type(exc).__name__}: {exc}") from exc

    async def _apply_cameras(self, new: Settings) -> list[str]:
        changes = []
        running = self._pipeline.samplers
        wanted = {c.id: c for c in new.cameras if c.enabled}
        for camera_id in [c for c in running if c not in wanted]:
            await self._pipeline.stop_camera(camera_id)
            changes.append(f"camera {camera_id} removed")
        for camera_id, camera in wanted.items():
            if camera_id not in running:
                self._pipeline.start_camera(camera, self._model, self._executor)
                changes.append(f"camera {camera_id} added")
            elif running[camera_id].settings != camera:
                await self._pipeline.update_camera(camera, self._model, self._executor)
                changes.append(f"camera {camera_id} changed")
        return changes

    # ---- the model (edge_runtime/model_updates.py) ----
    @property
    def model_state(self) -> ModelState:
        """The latest model load to begin (loading, ready or failed)."""
        return self._models.state

    @property
    def configured_update(self) -> int:
        """The model update that loads (or loaded) the configured model."""
        return self._configured_update

    def start_model_load(self, settings: Settings | None = None) -> int:
        """Load (download if model.url) and swap in the background; the old model serves meanwhile.

        Returns the update's id for wait_for_model. Without `settings`, the configured model."""
        return self._start_model(settings or self.settings)

    def _start_model(self, settings: Settings) -> int:
        update = self._models.start(settings, self.desired.get("model"))
        self._configured_update = update
        return update

    async def wait_for_model(self, update: int | None = None) -> ModelState:
        """The outcome of model update `update` (default: the latest requested) once settled."""
        return await self._models.wait(update)

    async def reload_model(self) -> ModelState:
        """Load the configured model again and wait; raises EdgeRuntimeError if it fails."""
        async with self._lock:  # the configured model cannot change under the start
            update = self._start_model(self.settings)
        state = await self._models.wait(update)
        if state.status != "ready":
            raise EdgeRuntimeError(state.error or f"model update {update} did not finish")
        return state

    async def _settle_model(self, update: int, state: ModelState) -> None:
        """After each load: keep the configured model the one serving when the latest update failed."""
        async with self._lock:  # patches read and replace the desired document under it too
            back = self._models.fall_back(update, state)
            if back is None:
                return  # succeeded, superseded, or nothing serves to go back to (a reload retries it)
            serving, model, section = back
            self._configured_update = serving
            if self.settings.model == model and self.desired.get("model") == section:
                return
            self.settings = self.settings.model_copy(update={"model": model})
            desired = {k: v for k, v in self.desired.items() if k != "model"}
            self.desired = desired if section is None else desired | {"model": section}
            log.warning(
                "model update %d failed: the configured model is again %s (update %d), which serves",
                update,
                self._models.source(self.settings),
                serving,
            )
        self._changed()

    def model_status(self, state: ModelState | None = None) -> dict[str, Any]:
        """`state` (default: the latest load) with the configured model and the one serving."""
        return cast(dict[str, Any], scrub_tree(self._models.describe(state, self.settings)))

    # ---- status (getStatus, reported properties, admin API) ----
    def status(self) -> dict[str, Any]:
        status = {
            "version": __version__,
            "model": self.model_status(),
            "cameras": {
                cid: {"state": s["state"], "last_error": s["last_error"]}
                for cid, s in self._pipeline.camera_statuses().items()
            },
            "sinks": self._pipeline.sink_statuses(),
            "config": {
                "desired_version": self.config.desired_version,
                "status": self.config.status,
                "error": self.config.error,
                "changes": self.config.changes,
            },
        }
        # The one place every status passes (getStatus, reported properties, admin): no credentials.
        return cast(dict[str, Any], scrub_tree(status))

    async def close(self) -> None:
        await self._models.close()


def keyed_tree(settings: Settings) -> dict[str, Any]:
    """Settings as a plain tree with cameras/rules/ROIs keyed by id/tag/name (the desired layout)."""
    tree = settings.model_dump()
    cameras = {}
    for camera in tree.pop("cameras"):
        camera["rules"] = {rule.pop("tag"): rule for rule in camera["rules"]}
        camera["rois"] = {roi.pop("name"): roi for roi in camera["rois"]}
        cameras[camera.pop("id")] = camera
    tree["cameras"] = cameras
    return tree


def merge_patch(document: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Twin semantics: objects merge recursively, null removes the key, anything else replaces."""
    out = dict(document)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):  # nulls inside a new object are dropped too (RFC 7386)
            current = out.get(key)
            out[key] = merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            out[key] = value
    return out
