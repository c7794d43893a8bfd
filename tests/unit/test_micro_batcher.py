"""The micro-batcher: same-shape inputs within the window run as one batch, in order; a full group
goes at once; shapes and models never mix; a failure reaches every caller of the batch; and the real
meter model answers the same batched as alone."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime.app import predictor_options
from edge_runtime.domain import Prediction, PredictionResult, StageTimings, Task
from edge_runtime.engine import Predictor, Prepared
from edge_runtime.inference.batcher import MicroBatcher
from edge_runtime.settings import build_settings

METER = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "customvision-models"
    / "onnx-converted-meter-compact"
)


def prepared(value: float, shape: tuple[int, ...] = (1, 3, 4, 4)) -> Prepared:
    return Prepared(np.full(shape, value, np.float32), None, (4, 4), 0.0, 0.0)


class Recorder:
    """A batchable predictor that answers each input with its own value."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[float]] = []
        self.fail = fail

    def infer(self, items: list[Prepared]) -> list[PredictionResult]:
        self.batches.append([float(i.tensor.flat[0]) for i in items])
        if self.fail:
            raise RuntimeError("backend exploded")
        return [
            PredictionResult(
                Task.CLASSIFICATION, (Prediction("v", float(i.tensor.flat[0])),), (4, 4), StageTimings()
            )
            for i in items
        ]


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(2)
    yield executor
    executor.shutdown()


async def test_inputs_within_the_window_run_as_one_batch_in_order(pool: ThreadPoolExecutor) -> None:
    batcher = MicroBatcher(pool, window_s=0.05, max_batch=8)
    model = Recorder()
    results = await asyncio.gather(*(batcher.infer(model, prepared(n)) for n in range(5)))
    assert model.batches == [[0, 1, 2, 3, 4]]
    assert [r.predictions[0].probability for r in results] == [0, 1, 2, 3, 4]


async def test_a_full_group_goes_at_once_and_the_rest_waits_for_the_window(pool: ThreadPoolExecutor) -> None:
    batcher = MicroBatcher(pool, window_s=0.2, max_batch=3)
    model = Recorder()
    started = time.monotonic()
    first = await asyncio.gather(*(batcher.infer(model, prepared(n)) for n in range(3)))
    assert time.monotonic() - started < 0.15  # full: no waiting for the window
    assert len(first) == 3
    started = time.monotonic()
    await batcher.infer(model, prepared(9))
    waited = time.monotonic() - started
    assert 0.18 < waited < 0.5  # alone: it waited the window, and not much more
    assert model.batches == [[0, 1, 2], [9]]


async def test_shapes_and_models_never_share_a_batch(pool: ThreadPoolExecutor) -> None:
    batcher = MicroBatcher(pool, window_s=0.03, max_batch=8)
    a, b = Recorder(), Recorder()
    await asyncio.gather(
        batcher.infer(a, prepared(1)),
        batcher.infer(a, prepared(2, (1, 3, 8, 8))),
        batcher.infer(b, prepared(3)),
        batcher.infer(a, prepared(4)),
    )
    assert sorted(a.batches) == [[1, 4], [2]]
    assert b.batches == [[3]]


async def test_a_failed_batch_fails_each_of_its_callers(pool: ThreadPoolExecutor) -> None:
    batcher = MicroBatcher(pool, window_s=0.02, max_batch=8)
    outcomes = await asyncio.gather(
        *(batcher.infer(Recorder(fail=True), prepared(n)) for n in range(1)),
        return_exceptions=True,
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    model = Recorder(fail=True)
    outcomes = await asyncio.gather(
        *(batcher.infer(model, prepared(n)) for n in range(3)), return_exceptions=True
    )
    assert len(model.batches) == 1 and all(isinstance(o, RuntimeError) for o in outcomes)


async def test_a_caller_that_leaves_does_not_break_the_batch(pool: ThreadPoolExecutor) -> None:
    batcher = MicroBatcher(pool, window_s=0.05, max_batch=8)
    model = Recorder()
    leaving = asyncio.ensure_future(batcher.infer(model, prepared(1)))
    staying = asyncio.ensure_future(batcher.infer(model, prepared(2)))
    await asyncio.sleep(0.01)
    leaving.cancel()
    assert (await staying).predictions[0].probability == 2


@pytest.mark.skipif(not METER.is_dir(), reason=f"{METER} missing")
async def test_the_meter_model_answers_the_same_batched_as_alone(pool: ThreadPoolExecutor) -> None:
    predictor = Predictor.load(METER, predictor_options(build_settings({"model": {"device": "cpu"}}), 1))
    assert predictor.batchable
    rng = np.random.default_rng(3)
    images = []
    for n in range(6):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (240 + n, 320, 3), dtype=np.uint8)).save(buffer, "JPEG")
        images.append(buffer.getvalue())
    alone = [predictor.predict_bytes(data) for data in images]
    batcher = MicroBatcher(pool, window_s=0.05, max_batch=8)
    batched = await asyncio.gather(*(batcher.infer(predictor, predictor.prepare_bytes(d)) for d in images))
    for one, many in zip(alone, batched, strict=True):
        assert [p.tag_name for p in one.predictions] == [p.tag_name for p in many.predictions]
        for p, q in zip(one.predictions, many.predictions, strict=True):
            assert abs(p.probability - q.probability) <= 1e-5
