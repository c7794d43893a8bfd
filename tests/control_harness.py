"""The Controller's test harness: the parts app.py builds, minus HTTP, with fakes around them.

Real parts (ModelService, InferenceService, Delivery over a real outbox, Cameras on the synthetic source)
with fakes for the dispatcher (FakeStarter/FakeDispatcher) and the model loader (FakeLoader). The
fixtures `make`, `loader`, `starter` and the autouse `_restore_root_log_level` are taken by a test module
with `make = control_harness.make` and so on (as tests/hostile_server.py's `server` is).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge_runtime.app import predictor_options
from edge_runtime.control import Controller
from edge_runtime.domain import Event
from edge_runtime.events.delivery import Delivery, DeliveryConfig
from edge_runtime.inference.models import ModelService
from edge_runtime.inference.service import Capacity, InferenceService
from edge_runtime.settings import build_settings
from edge_runtime.sources.cameras import Cameras
from edge_runtime.status import StatusBoard

SYNTHETIC = "synthetic://conveyor"


# ---------------------------------------------------------------------------------------------------
# helpers and fakes


def without_nulls(tree: Any) -> Any:
    """What a twin stores: keys whose value is null are not kept."""
    if isinstance(tree, dict):
        return {k: without_nulls(v) for k, v in tree.items() if v is not None}
    return tree


@pytest.fixture(autouse=True)
def _restore_root_log_level() -> Any:
    """log_level patches change the root logger: put it back for the next test."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def fake_predictor(name: str) -> Any:
    spec = SimpleNamespace(
        model_id=name,
        sha1=(name.encode().hex() + "0" * 40)[:40],
        task=SimpleNamespace(value="object-detection"),
        domain="general",
        labels=("stain",),
    )
    return SimpleNamespace(spec=spec, device="cpu", plan=SimpleNamespace(fallback_from=None), name=name)


class FakeDispatcher:
    sinks = ()

    def __init__(self, settings: DeliveryConfig) -> None:
        self.settings = settings
        self.closed_with: float | None = None
        self.published: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.published.append(event)

    async def backlog(self) -> dict[str, int]:
        return {}

    @property
    def closed(self) -> bool:
        return self.closed_with is not None

    async def close(self, drain_timeout: float = 5.0) -> None:
        assert not self.closed, "closed twice"
        self.closed_with = drain_timeout


class FakeStarter:
    """Delivery's start_dispatcher(config): a FakeDispatcher, or an error where `fail` says so."""

    def __init__(self) -> None:
        self.started: list[FakeDispatcher] = []
        self.fail: Callable[[DeliveryConfig], bool] = lambda settings: False
        self.delay = 0.0

    async def __call__(self, settings: DeliveryConfig) -> FakeDispatcher:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail(settings):
            raise OSError("broker unreachable")
        dispatcher = FakeDispatcher(settings)
        self.started.append(dispatcher)
        return dispatcher


class FakeLoader:
    """loader(path, options): the predictor or the error registered under the path's name.

    A path with a gate blocks until the gate is set; calls and their overlap are recorded."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self.gates: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self.calls: list[str] = []
        self.options: list[Any] = []
        self.threads: list[threading.Thread] = []
        self._active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def gate(self, name: str) -> threading.Event:
        self.entered[name] = threading.Event()
        self.gates[name] = threading.Event()
        return self.gates[name]

    def __call__(self, path: Path, options: Any) -> Any:
        name = Path(path).name
        with self._lock:
            self.calls.append(name)
            self.options.append(options)
            self.threads.append(threading.current_thread())
            self._active += 1
            self.max_active = max(self.max_active, self._active)
        try:
            if name in self.entered:
                self.entered[name].set()
            if name in self.gates:
                assert self.gates[name].wait(10), f"gate {name} never opened"
            result = self.results.get(name, fake_predictor(name))
            if isinstance(result, BaseException):
                raise result
            return result
        finally:
            with self._lock:
                self._active -= 1


async def wait_thread_event(event: threading.Event, timeout: float = 5.0) -> None:
    assert await asyncio.to_thread(event.wait, timeout), "thread event not set in time"


def base_data(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "events": {
            "outbox_path": str(tmp_path / "outbox.sqlite3"),
            "jsonl_path": None,
            "snapshot_dir": None,
        }
    }
    data.update(extra)
    return data


def camera(url: str = SYNTHETIC, **extra: Any) -> dict[str, Any]:
    return {"url": url, "fps": 1.0, **extra}


class Harness:
    """The parts app.py builds, minus HTTP: board, model service, inference, delivery, cameras."""

    def __init__(
        self,
        controller: Controller,
        board: StatusBoard,
        delivery: Delivery,
        cameras: Cameras,
        slot: ModelService,
    ) -> None:
        self.controller = controller
        self.board = board
        self.delivery = delivery
        self.cameras = cameras
        self.slot = slot  # the model service: the predictor in service


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
def starter() -> FakeStarter:
    return FakeStarter()


@pytest.fixture
async def make(tmp_path: Path, loader: FakeLoader, starter: FakeStarter) -> AsyncIterator[Callable[..., Any]]:
    async with contextlib.AsyncExitStack() as stack:

        async def factory(
            data: dict[str, Any] | None = None, default_model_path: Path | None = None
        ) -> Harness:
            settings = build_settings(data if data is not None else base_data(tmp_path))
            board = StatusBoard()
            models = ModelService(
                board, lambda s: predictor_options(s, 1), loader, default_model_path, settings
            )
            inference = await stack.enter_async_context(InferenceService(models, Capacity(1, 4, 1.0)))
            await stack.enter_async_context(models)
            delivery = Delivery(DeliveryConfig.of(settings), board, start_dispatcher=starter)
            await stack.enter_async_context(delivery)
            cameras = await stack.enter_async_context(Cameras(settings.cameras, inference, delivery, board))
            controller = Controller(settings, board, models, delivery, cameras)
            return Harness(controller, board, delivery, cameras, models)

        yield factory
        for gate in loader.gates.values():  # never leave a loader thread blocked
            gate.set()
