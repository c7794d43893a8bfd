"""The ModelService part: the predictor in service, and model updates without a restart.

An update resolves the model (downloads it if model.url), loads it, warms it up and swaps it in
atomically.

Every update gets an id (1, 2, ...) and its own outcome: `wait(update)` answers for that update, not
for whichever came last. Loads run one after another in a daemon thread (never on an inference
worker, never holding up the exit), in the order requested, so the last one requested ends up
serving if it succeeds. A failure leaves the previous predictor serving; the owner's `settle` hook
hears every outcome (the controller uses it to keep the configured model the one serving). Requests
in flight keep the predictor they took, so a swap never cuts one short.

Its status (the latest load, the configured model, the one serving) is pushed to the status board at
every change; `ready` is set once a model serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Self, TypeVar

from edge_runtime import metrics
from edge_runtime.engine import Predictor, PredictorOptions
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.model.download import DownloadRequest, download_model
from edge_runtime.redact import redact_url, scrub
from edge_runtime.settings import ModelSettings, Settings, rule_tag_problem
from edge_runtime.status import MODEL, LoadState, ModelStatus, Serving, StatusBoard

log = logging.getLogger(__name__)
T = TypeVar("T")

OptionsFor = Callable[[Settings], PredictorOptions]
Loader = Callable[[Path, PredictorOptions], Predictor]
Settle = Callable[[int, ModelStatus], Awaitable[None]]


def model_source(settings: Settings, default_model_path: Path | None = None) -> str:
    """What a status shows for the model `settings` name: the path, or the URL redacted."""
    m = settings.model
    if m.url is not None:
        return redact_url(m.url.get_secret_value())
    path = m.path or default_model_path
    return "" if path is None else str(path)


def describe_failure(exc: BaseException, settings: Settings) -> str:
    """An error message safe to log and report: library messages may quote the URL."""
    text = str(exc) if isinstance(exc, EdgeRuntimeError) else f"{type(exc).__name__}: {exc}"
    url = settings.model.url
    return scrub(text, url.get_secret_value()) if url is not None else scrub(text)


class ModelService:
    KEEP = 32  # outcomes kept for wait(update) (the latest and the serving one are always kept)

    def __init__(
        self,
        board: StatusBoard,
        options_for: OptionsFor,
        loader: Loader,
        default_model_path: Path | None,
        configured: Settings,
    ) -> None:
        self._board = board
        self._options_for = options_for
        self._loader = loader
        self._default_model_path = default_model_path
        self._settle: Settle | None = None
        self.predictor: Predictor | None = None  # requests take a reference once
        self.ready = asyncio.Event()  # set once a model serves
        self._configured = self.source(configured)
        self.state = ModelStatus(configured=self._configured)  # the latest load to begin
        self._publish()
        self.serving: int | None = None  # the update whose predictor serves
        self.latest = 0  # the latest update requested
        self._lock = asyncio.Lock()
        self._updates: dict[int, asyncio.Task[ModelStatus]] = {}
        # What each update loads: its model settings and the owner's tag for them (the controller's
        # desired model section), kept for the updates pending and the one serving (to go back to).
        self._configs: dict[int, tuple[ModelSettings, Any]] = {}

    def settle_with(self, settle: Settle) -> None:
        """The owner's hook, run after every outcome (the controller's fall-back to the serving model)."""
        self._settle = settle

    @property
    def error(self) -> str | None:
        """Why nothing serves: the latest load failed before any model served."""
        if self.predictor is None and self.state.status is LoadState.FAILED:
            return self.state.error
        return None

    def source(self, settings: Settings) -> str:
        return model_source(settings, self._default_model_path)

    def configure(self, settings: Settings) -> None:
        """The configured model changed without a load (the controller went back to the serving one)."""
        self._configured = self.source(settings)
        self._publish()

    def _publish(self) -> None:
        serving = self.predictor
        shown = replace(self.state, configured=self._configured)
        if serving is not None:
            spec = serving.spec
            shown = replace(shown, serving=Serving(spec.model_id, spec.sha1, serving.device))
        self.state = shown
        self._board.put(MODEL, shown)

    def start(self, settings: Settings, tag: Any = None) -> int:
        """Queue a load (download if model.url) and swap; returns the update's id for wait()."""
        self.latest += 1
        update = self.latest
        self._configured = self.source(settings)  # shown with the next status (the load's start)
        self._configs[update] = (settings.model, tag)
        self._updates[update] = asyncio.create_task(
            self._run(update, settings), name=f"model-update-{update}"
        )
        self._forget_old()
        return update

    def _forget_old(self) -> None:
        for update in sorted(self._updates)[: -self.KEEP]:
            if update not in (self.latest, self.serving) and self._updates[update].done():
                del self._updates[update]

    async def wait(self, update: int | None = None) -> ModelStatus:
        """The outcome of `update` (default: the latest requested) once it has settled.

        With no update requested yet, the current state."""
        wanted = self.latest if update is None else update
        task = self._updates.get(wanted)
        if task is None:
            if wanted in (0, self.state.update):
                return self.state
            raise KeyError(f"model update {wanted} is unknown or forgotten")
        await asyncio.gather(asyncio.shield(task), return_exceptions=True)
        if task.cancelled() or task.exception() is not None:
            return self.state  # closed meanwhile
        return task.result()

    def fall_back(self, update: int, state: ModelStatus) -> tuple[int, ModelSettings, Any] | None:
        """Once `update` settled: the serving update's (id, model settings, tag) to configure again
        where `update` is the latest requested, failed, and a model serves; None otherwise."""
        serving = self.serving
        if state.status is not LoadState.FAILED or update != self.latest or serving not in self._configs:
            return None  # nothing serves: the failed model stays configured, a reload retries it
        model, tag = self._configs[serving]
        return serving, model, tag

    def describe(self, state: ModelStatus | None = None) -> ModelStatus:
        """`state` (an update's outcome; default: the latest load) with today's configured and serving."""
        if state is None:
            return self.state
        return replace(state, configured=self.state.configured, serving=self.state.serving)

    async def _run(self, update: int, settings: Settings) -> ModelStatus:
        # Loads run one after another (never cancelled halfway), in the order requested.
        async with self._lock:
            state = await self._load_and_swap(update, settings)
        pending = {u for u, task in self._updates.items() if not task.done()}
        keep = pending | {self.latest, self.serving}  # what can still be configured or gone back to
        self._configs = {u: c for u, c in self._configs.items() if u in keep}
        if self._settle is not None:
            try:
                await self._settle(update, state)
            except Exception:  # the outcome stands whatever the hook did
                log.exception("model update %d: settling failed", update)
        return state

    async def _load_and_swap(self, update: int, settings: Settings) -> ModelStatus:
        source = self.source(settings)
        self.state = ModelStatus(LoadState.LOADING, source, None, update)
        self._publish()
        try:
            path, options = await self._resolve(settings)
            # A thread of its own: loading must not take an inference worker away from requests,
            # and a daemon one: a long compile must not hold up the process exit after SIGTERM.
            predictor = await in_daemon_thread(self._loader, path, options)
            problem = rule_tag_problem(settings, predictor.spec.labels)
            if problem:
                predictor.close()
                raise ConfigError(problem)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: the old model keeps serving, the error is reported
            error = describe_failure(exc, settings)
            self.state = replace(self.state, status=LoadState.FAILED, error=error)
            log.error(
                "model update %d (%s) failed (%s); %s",
                update,
                source,
                error,
                "still serving the previous model" if self.predictor else "no model",
            )
            self._publish()
            metrics.MODEL_LOADS.labels("failed").inc()
            return self.state
        # Requests in flight hold the old predictor; it is freed when the last of them finishes.
        self.predictor = predictor
        self.ready.set()
        _model_metrics(predictor)
        self.serving = update
        self.state = replace(self.state, status=LoadState.READY)
        metrics.MODEL_LOADS.labels("ready").inc()
        log.info(
            "model update %d: swapped in %s (%s) on %s",
            update,
            predictor.spec.model_id,
            predictor.spec.sha1[:12],
            predictor.device,
        )
        self._publish()
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
            load = replace(options.load, resize=m.resize, verify_sha1=m.verify_sha1, extract_dir=extract)
            return path, PredictorOptions(options.device, options.threads, load, options.limits)
        local = m.path or self._default_model_path
        if local is None:
            raise ConfigError(
                "no model configured: set model.path or model.url (e.g. through the module twin)"
            )
        return local, options

    async def __aenter__(self) -> Self:
        metrics.MODEL_READY.set(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
        metrics.MODEL_READY.set(0)

    async def close(self) -> None:
        tasks = [task for task in self._updates.values() if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _model_metrics(predictor: Predictor) -> None:
    spec = predictor.spec
    metrics.MODEL_INFO.clear()
    metrics.MODEL_INFO.labels(
        spec.model_id,
        spec.sha1,
        spec.task.value,
        spec.domain,
        predictor.device,
        predictor.plan.fallback_from or "",
    ).set(1)
    metrics.MODEL_READY.set(1)


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
