"""The InferenceService part (edge_runtime/inference/service.py): readiness, admission (slot), the
inference pool, per-caller metrics and ROI mapping. Fake predictors are loaded through a real
ModelService (its loader), the way the app serves them."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import REGISTRY
from waiting import eventually

from edge_runtime.domain import (
    FULL_FRAME,
    BoundingBox,
    Frame,
    Prediction,
    PredictionResult,
    Roi,
    StageTimings,
    Task,
)
from edge_runtime.engine import PredictorOptions
from edge_runtime.inference.models import ModelService
from edge_runtime.inference.service import Capacity, InferenceService, ModelNotReady, Overloaded
from edge_runtime.settings import ServerSettings, build_settings
from edge_runtime.status import StatusBoard

SETTINGS = build_settings({})
BOX = BoundingBox(0.5, 0.5, 0.5, 0.5)  # the bottom-right quarter of whatever it was given
LABEL = Prediction("ok", 0.75)  # classification-like: no box to map
CAPACITY = Capacity(2, 4, 1.0)


class FakePredictor:
    """What the service uses of a Predictor. It records the thread of each call and the pixels it was
    given; `gate` (cleared) holds a call until the test opens it."""

    def __init__(self, name: str) -> None:
        sha1 = name.encode().hex().ljust(40, "0")[:40]
        self.spec = SimpleNamespace(
            model_id=name, sha1=sha1, task=Task.DETECTION, domain="general", labels=("stain", "ok")
        )
        self.device = "cpu"
        self.plan = SimpleNamespace(fallback_from=None)
        self.threads: list[threading.Thread] = []
        self.crops: list[NDArray[np.uint8]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def _call(self) -> None:
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.gate.wait(5), "gate never opened"

    def predict_bytes(self, data: bytes) -> PredictionResult:
        self._call()
        return PredictionResult(
            Task.DETECTION, (Prediction(data.decode(), 0.9, 0, BOX),), (8, 8), StageTimings()
        )

    def predict_frame(self, frame: NDArray[np.uint8]) -> PredictionResult:
        self._call()
        self.crops.append(frame)
        height, width = frame.shape[:2]
        return PredictionResult(
            Task.DETECTION, (Prediction("stain", 0.9, 0, BOX), LABEL), (width, height), StageTimings()
        )

    def close(self) -> None:
        pass


class Loader:
    """ModelService's loader: hands out `queue` in order (a predictor, or an error to raise); `gate`
    (cleared) holds a load until the test opens it."""

    def __init__(self) -> None:
        self.queue: list[FakePredictor | Exception] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, path: Path, options: PredictorOptions) -> FakePredictor:
        assert self.gate.wait(5), "load gate never opened"
        result = self.queue.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


class Harness:
    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self.stack = stack
        self.loader = Loader()
        self.predictors: list[FakePredictor] = []

    def predictor(self, name: str) -> FakePredictor:
        predictor = FakePredictor(name)
        self.predictors.append(predictor)
        return predictor

    async def service(
        self, capacity: Capacity = CAPACITY, default_model: Path | None = Path("fake-model")
    ) -> InferenceService:
        """Entered as app.py enters them: the service first, then its model service."""
        models = ModelService(
            StatusBoard(), lambda s: PredictorOptions(), self.loader, default_model, SETTINGS
        )
        service = await self.stack.enter_async_context(InferenceService(models, capacity))
        await self.stack.enter_async_context(models)
        return service

    async def load(self, service: InferenceService, result: FakePredictor | Exception) -> None:
        self.loader.queue.append(result)
        await service.models.wait(service.models.start(SETTINGS))


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with contextlib.AsyncExitStack() as stack:
        h = Harness(stack)
        yield h
        h.loader.gate.set()  # nothing may hold a load or a worker while the parts exit
        for predictor in h.predictors:
            predictor.gate.set()


def predictions(source: str) -> float:
    return REGISTRY.get_sample_value("edge_runtime_predictions_total", {"source": source}) or 0.0


def inflight() -> float:
    return REGISTRY.get_sample_value("edge_runtime_http_inflight_requests") or 0.0


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_capacity_of_server_settings() -> None:
    assert Capacity.of(ServerSettings(inference_workers=3, admission_wait_s=0.5)) == Capacity(3, 12, 0.5)
    assert Capacity.of(ServerSettings(inference_workers=2, max_inflight=5)).max_inflight == 5
    assert Capacity.of(ServerSettings()).workers >= 1


# ---------------------------------------------------------------------------------------------------
# predictor(): readiness


async def test_predictor_raises_model_not_ready_while_loading(harness: Harness) -> None:
    service = await harness.service()
    harness.loader.gate.clear()
    harness.loader.queue.append(fake := harness.predictor("a"))
    update = service.models.start(SETTINGS)
    await settle()
    with pytest.raises(ModelNotReady, match="model is loading") as raised:
        service.predictor()
    assert raised.value.error is None and service.serving is None
    with pytest.raises(ModelNotReady):
        await service.predict_bytes(b"x")
    assert fake.threads == []  # refused before it reached the pool
    harness.loader.gate.set()
    await service.models.wait(update)
    assert service.predictor() is fake and service.serving is fake


async def test_predictor_names_the_error_after_a_failed_load(harness: Harness) -> None:
    service = await harness.service()
    await harness.load(service, RuntimeError("corrupt export"))
    with pytest.raises(ModelNotReady, match="model failed to load: RuntimeError: corrupt export") as raised:
        service.predictor()
    assert raised.value.error == "RuntimeError: corrupt export"
    good = harness.predictor("good")
    await harness.load(service, good)
    assert service.predictor() is good
    await harness.load(service, RuntimeError("the update is broken"))  # the previous model keeps serving
    assert service.predictor() is good


async def test_predictor_says_when_no_model_is_configured(harness: Harness) -> None:
    service = await harness.service(default_model=None)
    await service.models.wait(service.models.start(SETTINGS))
    with pytest.raises(ModelNotReady, match="no model configured") as raised:
        service.predictor()
    assert raised.value.error is not None and "model.path or model.url" in raised.value.error


# ---------------------------------------------------------------------------------------------------
# slot(): admission


async def hold(service: InferenceService, name: str, admitted: list[str], release: asyncio.Event) -> None:
    async with service.slot():
        admitted.append(name)
        await release.wait()


async def test_slot_admits_max_inflight_then_waits_in_arrival_order(harness: Harness) -> None:
    service = await harness.service(Capacity(1, 2, 5.0))
    base = inflight()
    admitted: list[str] = []
    releases = {name: asyncio.Event() for name in "abcd"}
    tasks = {}
    for name in "abcd":
        tasks[name] = asyncio.create_task(hold(service, name, admitted, releases[name]))
        await settle()
    assert admitted == ["a", "b"]  # c and d wait, in that order
    assert inflight() == base + 2
    releases["b"].set()
    await eventually(lambda: admitted == ["a", "b", "c"], 2, "c admitted when b left")
    await settle()
    assert admitted == ["a", "b", "c"]  # d still waits: one slot freed, one admitted
    releases["a"].set()
    await eventually(lambda: admitted == ["a", "b", "c", "d"], 2, "d admitted when a left")
    for release in releases.values():
        release.set()
    await asyncio.gather(*tasks.values())
    assert inflight() == base


async def test_slot_raises_overloaded_after_the_bounded_wait(harness: Harness) -> None:
    service = await harness.service(Capacity(1, 1, 0.1))
    base = inflight()
    release = asyncio.Event()
    holder = asyncio.create_task(hold(service, "a", [], release))
    await settle()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Overloaded, match="all 1 inference slots are busy"):
        async with asyncio.timeout(2), service.slot():  # the timeout: a failing test, never a hang
            raise AssertionError("admitted past max_inflight")
    waited = loop.time() - started
    assert 0.1 <= waited < 1.0
    assert inflight() == base + 1  # the refused request was never counted in flight
    release.set()
    await holder
    async with service.slot():  # the refusal took no slot with it (else: Overloaded)
        assert inflight() == base + 1
    assert inflight() == base


# ---------------------------------------------------------------------------------------------------
# predict_bytes, offload: the inference pool


async def test_predict_bytes_runs_on_the_pool_and_returns_the_predictor_that_answered(
    harness: Harness,
) -> None:
    service = await harness.service()
    fake = harness.predictor("a")
    await harness.load(service, fake)
    answer = await service.predict_bytes(b"stain")
    assert answer.predictor is fake
    assert [p.tag_name for p in answer.result.predictions] == ["stain"]  # the result of these bytes
    assert fake.threads[0] is not threading.current_thread()
    assert fake.threads[0].name.startswith("inference")


async def test_a_swap_during_a_call_does_not_change_who_answers_it(harness: Harness) -> None:
    service = await harness.service()
    old, new = harness.predictor("old"), harness.predictor("new")
    await harness.load(service, old)
    old.gate.clear()
    call = asyncio.create_task(service.predict_bytes(b"x"))
    assert await asyncio.to_thread(old.entered.wait, 5)
    await harness.load(service, new)
    assert service.serving is new
    old.gate.set()
    assert (await call).predictor is old
    assert (await service.predict_bytes(b"x")).predictor is new


async def test_predictions_are_counted_per_caller(harness: Harness) -> None:
    service = await harness.service()
    await harness.load(service, harness.predictor("a"))
    http, upload = predictions("http"), predictions("unit-upload")
    await service.predict_bytes(b"x")
    await service.predict_bytes(b"x", caller="unit-upload")
    await service.predict_bytes(b"x", caller="unit-upload")
    assert predictions("http") == http + 1
    assert predictions("unit-upload") == upload + 2


async def test_offload_runs_on_the_same_bounded_pool(harness: Harness) -> None:
    service = await harness.service(Capacity(1, 4, 1.0))
    fake = harness.predictor("a")
    await harness.load(service, fake)
    assert await service.offload(divmod, 7, 2) == (3, 1)
    await service.predict_bytes(b"x")
    assert await service.offload(threading.current_thread) is fake.threads[0]  # one worker: the same thread
    fake.gate.clear()
    call = asyncio.create_task(service.predict_bytes(b"x"))
    assert await asyncio.to_thread(fake.entered.wait, 5)
    ran = threading.Event()
    offloaded = asyncio.create_task(service.offload(ran.set))
    await asyncio.sleep(0.05)
    assert not ran.is_set()  # it waits for the worker the prediction holds
    fake.gate.set()
    await asyncio.gather(call, offloaded)
    assert ran.is_set()


# ---------------------------------------------------------------------------------------------------
# predict_rois: camera frames


def position_frame(height: int = 100, width: int = 200) -> Frame:
    """Each pixel holds its own x (channel 0) and y (channel 1): a crop tells which pixels it has."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 0] = np.arange(width, dtype=np.uint8)[None, :]
    image[:, :, 1] = np.arange(height, dtype=np.uint8)[:, None]
    return Frame(image, 1_700_000_000.0, 1)


def pixels(crop: NDArray[np.uint8]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the frame region a crop of position_frame() covers."""
    xs, ys = crop[:, :, 0], crop[:, :, 1]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


async def test_predict_rois_maps_boxes_to_full_frame_fractions(harness: Harness) -> None:
    service = await harness.service()
    fake = harness.predictor("a")
    await harness.load(service, fake)
    left, corner = Roi("left", 0.0, 0.0, 0.5, 1.0), Roi("corner", 0.5, 0.5, 0.5, 0.5)
    cameras = predictions("camera")
    results = await service.predict_rois(position_frame(), (left, corner))
    assert [pixels(crop) for crop in fake.crops] == [(0, 0, 100, 100), (100, 50, 200, 100)]
    assert [roi for roi, _ in results] == [left, corner]
    assert [[p.bounding_box for p in found] for _, found in results] == [
        [BoundingBox(0.25, 0.5, 0.25, 0.5), None],
        [BoundingBox(0.75, 0.75, 0.25, 0.25), None],
    ]
    assert [found[0].tag_name for _, found in results] == ["stain", "stain"]
    assert all(found[1] == LABEL for _, found in results)  # no box: left as it came
    assert all(thread.name.startswith("inference") for thread in fake.threads)
    assert predictions("camera") == cameras + 2  # one per ROI


async def test_predict_rois_with_no_roi_predicts_the_full_frame(harness: Harness) -> None:
    service = await harness.service()
    fake = harness.predictor("a")
    await harness.load(service, fake)
    results = await service.predict_rois(position_frame(), ())
    assert [roi for roi, _ in results] == [FULL_FRAME]
    assert [pixels(crop) for crop in fake.crops] == [(0, 0, 200, 100)]
    assert results[0][1][0].bounding_box == BOX


async def test_predict_rois_uses_the_predictor_the_caller_took(harness: Harness) -> None:
    service = await harness.service()
    serving, taken = harness.predictor("serving"), harness.predictor("taken")
    await harness.load(service, serving)
    await service.predict_rois(position_frame(), (), taken)
    assert len(taken.crops) == 1 and serving.crops == []


# ---------------------------------------------------------------------------------------------------
# exit


async def test_exit_shuts_the_pool_down() -> None:
    loader = Loader()
    fake = FakePredictor("a")
    loader.queue.append(fake)
    models = ModelService(StatusBoard(), lambda s: PredictorOptions(), loader, Path("fake-model"), SETTINGS)
    async with InferenceService(models, CAPACITY) as service, models:
        await models.wait(models.start(SETTINGS))
        await service.predict_bytes(b"x")
        await service.offload(int)
        workers = {fake.threads[0], await service.offload(threading.current_thread)}
        assert all(t.is_alive() and t.name.startswith("inference") for t in workers)
    assert not any(t.is_alive() for t in workers)
    with pytest.raises(RuntimeError, match="shutdown"):
        await service.offload(int)
