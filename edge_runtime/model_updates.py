"""Model updates without a restart: resolve (download if model.url), load, warm up, swap atomically.

Loads run one after another in a daemon thread (never on an inference worker, never holding up the
exit); the last one requested wins. A failure leaves the previous predictor serving and is reported
through `state`. Requests in flight keep the predictor they took, so a swap never cuts one short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge_runtime.engine import Predictor, PredictorOptions
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.model.download import DownloadRequest, download_model
from edge_runtime.model.loader import LoadOptions
from edge_runtime.model_slot import ModelSlot
from edge_runtime.redact import redact_url
from edge_runtime.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

OptionsFor = Callable[[Settings], PredictorOptions]
Loader = Callable[[Path, PredictorOptions], Predictor]


@dataclass
class ModelState:
    status: str = "loading"  # loading | ready | failed
    source: str = ""  # path or redacted URL
    error: str | None = None


class ModelUpdater:
    def __init__(
        self,
        slot: ModelSlot,
        options_for: OptionsFor,
        loader: Loader,
        default_model_path: Path | None,
        on_change: Callable[[], None],
    ) -> None:
        self._slot = slot
        self._options_for = options_for
        self._loader = loader
        self._default_model_path = default_model_path
        self._changed = on_change
        self.state = ModelState()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[ModelState] | None = None
        self._tasks: set[asyncio.Task[ModelState]] = set()

    def start(self, settings: Settings) -> asyncio.Task[ModelState]:
        """Load (download if model.url) and swap in the background; the old model serves meanwhile."""
        # Loads run one after another (never cancelled halfway): the last one requested wins.
        self._task = asyncio.create_task(self._load_and_swap(settings), name="model-load")
        self._tasks.add(self._task)
        self._task.add_done_callback(self._tasks.discard)
        return self._task

    async def wait(self) -> ModelState:
        """Wait for the model load in progress, if any; returns the resulting state."""
        if self._task is not None:
            await asyncio.gather(asyncio.shield(self._task), return_exceptions=True)
        return self.state

    async def reload(self, settings: Settings) -> None:
        """Load `settings`' model again and wait; raises EdgeRuntimeError if it fails."""
        state = await asyncio.shield(self.start(settings))  # this load's own outcome
        if state.status == "failed":
            raise EdgeRuntimeError(state.error or "model load failed")

    async def _load_and_swap(self, settings: Settings) -> ModelState:
        async with self._lock:
            return await self._load_and_swap_now(settings)

    async def _load_and_swap_now(self, settings: Settings) -> ModelState:
        m = settings.model
        self.state = ModelState("loading", redact_url(m.url.get_secret_value()) if m.url else str(m.path))
        self._changed()
        try:
            path, options = await self._resolve(settings)
            self.state.source = self.state.source if m.url else str(path)
            # A thread of its own: loading must not take an inference worker away from requests,
            # and a daemon one: a long compile must not hold up the process exit after SIGTERM.
            predictor = await in_daemon_thread(self._loader, path, options)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: the old model keeps serving, the error is reported
            error = str(exc) if isinstance(exc, EdgeRuntimeError) else f"{type(exc).__name__}: {exc}"
            self.state = ModelState("failed", self.state.source, error)
            if self._slot.predictor is None:
                self._slot.error = error
            log.error(
                "model load failed (%s); %s",
                error,
                "still serving the previous model" if self._slot.predictor else "no model",
            )
            self._changed()
            return self.state
        # Requests in flight hold the old predictor; it is freed when the last of them finishes.
        self._slot.set(predictor)
        self.state = ModelState("ready", self.state.source)
        log.info(
            "model swapped: %s (%s) on %s",
            predictor.spec.model_id,
            predictor.spec.sha1[:12],
            predictor.device,
        )
        self._changed()
        return self.state

    async def _resolve(self, settings: Settings) -> tuple[Path, PredictorOptions]:
        m = settings.model
        options = self._options_for(settings)
        if m.url is not None:
            assert m.sha256 is not None  # settings validation
            request = DownloadRequest(
                m.url.get_secret_value(),
                m.sha256,
                m.download_dir,
                m.max_download_bytes,
                m.download_timeout_s,
                m.download_ca_file,
            )
            path = await download_model(request)
            extract = m.download_dir / m.sha256.lower()
            load = LoadOptions(resize=m.resize, verify_sha1=m.verify_sha1, extract_dir=extract)
            return path, PredictorOptions(options.device, options.threads, load, options.limits)
        local = m.path or self._default_model_path
        if local is None:
            raise ConfigError(
                "no model configured: set model.path or model.url (e.g. through the module twin)"
            )
        return local, options

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def in_daemon_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run fn in a daemon thread; the future gets its result on the calling loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # cancelled meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (fn(*args), None)
        except BaseException as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="model-load", daemon=True).start()
    return future
