"""Run-time configuration: desired properties (module twin or admin API) -> new Settings -> applied live.

    effective settings = file/env/flags (the base) <- desired sections (model, cameras, sinks, events,
    log_level), merged per key; cameras, rules and ROIs are objects keyed by id/tag/name, so a twin
    patch can touch one camera or one rule.

A patch is validated whole (pydantic, then every part's check(): every sink is constructed) before
anything changes; an invalid one is rejected with the running configuration untouched and the error
kept for reporting. Then each changed slice goes to its part, in the order of SLICES: delivery first
(the only step that can still fail; it rolls itself back), the log level, the cameras, and last the
model (loaded in the background and swapped atomically once warmed up).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from edge_runtime import __version__
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.events.delivery import DeliveryConfig
from edge_runtime.inference.models import ModelService
from edge_runtime.opcua.config import OpcUaConfig
from edge_runtime.parts import Part
from edge_runtime.redact import scrub, scrub_tree
from edge_runtime.settings import CameraSettings, Settings, build_settings, merge_tree, rule_tag_problem
from edge_runtime.stations.service import StationsConfig
from edge_runtime.status import (
    CONFIG,
    MODEL,
    ConfigOutcome,
    ConfigStatus,
    LoadState,
    ModelStatus,
    StatusBoard,
)

log = logging.getLogger(__name__)

DESIRED_SECTIONS = ("model", "cameras", "sinks", "events", "log_level", "stations", "opcua")


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


class LogLevel:
    """The root logger's level as a part (it has nothing to enter or leave)."""

    def check(self, level: str) -> None:
        """Settings validation already refused unknown levels."""

    async def apply(self, level: str) -> list[str]:
        logging.getLogger().setLevel(level.upper())
        return [f"log_level={level}"]


class _Slice(Protocol):
    def check(self, config: Any) -> None: ...

    async def apply(self, config: Any) -> list[str]: ...


# (part name, its slice of the settings), applied in this order. Delivery goes first: it is the only
# part that can still fail late (a sink that cannot start), and it rolls itself back.
SLICES: tuple[tuple[str, Callable[[Settings], object]], ...] = (
    ("delivery", DeliveryConfig.of),
    ("logging", lambda s: s.log_level),
    ("cameras", lambda s: s.cameras),
    # After the cameras: a station may use a camera just added (never one just removed: validation).
    ("stations", StationsConfig.of),
    ("opcua", OpcUaConfig.of),
)


TWIN_STREAM_FIELDS = ("decoder", "decode", "clock")


class Controller:
    def __init__(
        self,
        settings: Settings,
        board: StatusBoard,
        models: ModelService,
        delivery: Part[DeliveryConfig],
        cameras: Part[tuple[CameraSettings, ...]],
        more: Mapping[str, _Slice] | None = None,
    ) -> None:
        """`more`: the optional parts by slice name (stations, opcua); a slice without a part is
        validated with the settings but applies nowhere."""
        self.settings = settings
        self._base = keyed_tree(settings)
        self._board = board
        self._models = models
        self._parts: dict[str, _Slice] = {
            "delivery": delivery,
            "logging": LogLevel(),
            "cameras": cameras,
            **(more or {}),
        }
        self.desired: dict[str, Any] = {}
        self.config = ConfigStatus()
        self._lock = asyncio.Lock()
        models.settle_with(self._settle_model)
        self._configured_update = 0  # the update that loads (or loaded) the configured model
        self._started_update: int | None = None  # set by _apply for its ApplyResult
        self._publish_config(self.config)

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """`listener()` after every change of the configuration's or the model's status, in order."""
        return self._board.listen(lambda key: listener() if key in (CONFIG, MODEL) else None)

    def _publish_config(self, config: ConfigStatus) -> None:
        self.config = config
        self._board.put(CONFIG, config)

    # ---- desired properties ----
    async def apply_desired(self, desired: Mapping[str, Any]) -> ApplyResult:
        """Apply a whole desired document (the twin's, with $version); returns what happened."""
        async with self._lock:
            return await self._apply_document(desired)

    async def patch(self, patch: Mapping[str, Any], keep_rejected: bool = True) -> ApplyResult:
        """Merge a desired-properties patch (null removes a key, like the twin) and apply the result.
        `keep_rejected=False` (the operator page): a patch that does not apply leaves the desired
        document as it was, checked and applied under one hold of the lock."""
        async with self._lock:  # merged under the lock: concurrent patches never undo each other
            if keep_rejected:
                return await self._apply_document(merge_patch(self.desired, patch))
            before = self.desired
            merged = merge_patch(before, patch)
            try:
                new = self._validate(merged)
            except Exception as exc:
                return ApplyResult(False, None, error=_reason(exc))
            result = await self._apply_document(merged, new)
            if not result.applied:
                self.desired = before
            return result

    async def check(self, patch: Mapping[str, Any]) -> str | None:
        """Whether a patch would apply, without applying or keeping it: None, else why not (what the
        operator page shows before anything changes)."""
        async with self._lock:
            try:
                self._validate(merge_patch(self.desired, patch))
            except Exception as exc:
                return _reason(exc)
        return None

    async def _apply_document(self, desired: Mapping[str, Any], valid: Settings | None = None) -> ApplyResult:
        """`valid`: the document's settings when the caller has validated it already."""
        version = desired.get("$version")
        version = version if isinstance(version, int) else None
        # The document is the twin's state even when rejected: the next patch builds on it.
        self.desired = dict(desired)
        self._started_update = None
        try:
            new = valid if valid is not None else self._validate(desired)
            changes = await self._apply(new)
        except Exception as exc:  # whatever the reason, the running configuration stays
            error = _reason(exc)
            log.error("desired configuration (version %s) rejected: %s", version, error)
            self._publish_config(ConfigStatus(version, ConfigOutcome.REJECTED, error))
            return ApplyResult(False, version, error=error)
        self.settings = new
        log.info("desired configuration (version %s) applied: %s", version, ", ".join(changes) or "no change")
        self._publish_config(ConfigStatus(version, ConfigOutcome.APPLIED, None, list(changes)))
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
        serving = self._models.predictor
        if serving is not None and new.model == self.settings.model:  # a new model is checked when loaded
            problem = rule_tag_problem(new, serving.spec.labels)
            if problem:
                raise ConfigError(problem)
        for name, slice_of in SLICES:
            if name in self._parts:
                self._parts[name].check(slice_of(new))
        return new

    async def _apply(self, new: Settings) -> list[str]:
        changes: list[str] = []
        for name, slice_of in SLICES:
            if name in self._parts and slice_of(new) != slice_of(self.settings):
                changes += await self._parts[name].apply(slice_of(new))
        if new.model != self.settings.model:  # the last step: nothing after it can reject the document
            self._started_update = self._start_model(new)
            changes.append("model")
        return changes

    # ---- the model ----
    @property
    def model_state(self) -> ModelStatus:
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

    async def wait_for_model(self, update: int | None = None) -> ModelStatus:
        """The outcome of model update `update` (default: the latest requested) once settled."""
        return await self._models.wait(update)

    async def reload_model(self) -> ModelStatus:
        """Load the configured model again and wait; raises EdgeRuntimeError if it fails."""
        async with self._lock:  # the configured model cannot change under the start
            update = self._start_model(self.settings)
        state = await self._models.wait(update)
        if state.status is not LoadState.READY:
            raise EdgeRuntimeError(state.error or f"model update {update} did not finish")
        return state

    async def _settle_model(self, update: int, state: ModelStatus) -> None:
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
            self._models.configure(self.settings)

    def model_status(self, state: ModelStatus | None = None) -> dict[str, Any]:
        """`state` (default: the latest load) with the configured model and the one serving."""
        return cast(dict[str, Any], scrub_tree(self._models.describe(state).to_dict()))

    # ---- status (getStatus, reported properties, admin API): read from the board ----
    def status(self) -> dict[str, Any]:
        board = self._board.snapshot()
        status = {
            "version": __version__,
            "model": self.model_status(),
            # State and reader only (no counters): the twin is patched when these change.
            "cameras": {
                cid: {
                    "state": s.state.value,
                    "last_error": s.last_error,
                    **({} if s.stream is None else {k: s.stream.to_dict()[k] for k in TWIN_STREAM_FIELDS}),
                }
                for cid, s in board.cameras().items()
            },
            "sinks": {name: s.to_dict() for name, s in board.sinks().items()},
            "config": board.config().to_dict(),
        }
        # The one place every status passes (getStatus, reported properties, admin): no credentials.
        return cast(dict[str, Any], scrub_tree(status))


def _reason(exc: Exception) -> str:
    """Why a document was refused, fit to show and report (no credentials)."""
    return scrub(str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}")


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
