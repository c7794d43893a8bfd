"""A camera that inspects a substream (detect_url, 704x576) and keeps its main stream (url, 1920x1080)
for snapshots: relative ROIs land on the same scene in both, the predictor only sees the substream,
and the event's snapshot is the full-resolution frame with the ROI drawn where the part is.

The two streams are video files of one scene (16:9 squeezed anamorphically into PAL D1's 704x576, as
IP cameras do), read by the real PyAV reader through the Cameras part.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from waiting import eventually

from edge_runtime.domain import Event, Frame, Prediction, Roi
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.inference.service import RoiPredictions, predict_rois
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.cameras import Cameras
from edge_runtime.status import CameraState, StatusBoard

T = TypeVar("T")
MAIN, SUB = (1920, 1080), (704, 576)
# The part on the belt: a dark square, in scene fractions; the ROI around it.
PART = (0.60, 0.30, 0.15, 0.25)  # left, top, width, height
ROI = {"name": "station", "x": 0.55, "y": 0.25, "width": 0.25, "height": 0.35}


def scene(size: tuple[int, int]) -> NDArray[np.uint8]:
    """The same field of view at any size: a grey gradient belt and the dark part."""
    width, height = size
    xs = np.linspace(60, 200, width, dtype=np.float32)
    image = np.repeat(np.repeat(xs[None, :, None], height, axis=0), 3, axis=2).astype(np.uint8)
    left, top, w, h = PART
    image[
        round(top * height) : round((top + h) * height), round(left * width) : round((left + w) * width)
    ] = 20
    return image


def dark_share(crop: NDArray[np.uint8]) -> tuple[float, float, float]:
    """Where the part sits in a crop: its centre (fractions of the crop) and the dark pixels' share."""
    dark = crop.mean(axis=2) < 60
    ys, xs = np.nonzero(dark)
    return float(xs.mean() / crop.shape[1]), float(ys.mean() / crop.shape[0]), float(dark.mean())


def test_a_relative_roi_crops_the_same_scene_from_both_streams() -> None:
    roi = Roi(ROI["name"], ROI["x"], ROI["y"], ROI["width"], ROI["height"])
    seen: list[NDArray[np.uint8]] = []

    class Recorder:
        def predict_frame(self, frame: NDArray[np.uint8]) -> Any:
            seen.append(frame)
            return SimpleNamespace(predictions=(), timings=None)

    import edge_runtime.inference.service as service

    original = service.metrics.observe_prediction
    service.metrics.observe_prediction = lambda *_: None  # type: ignore[assignment]
    try:
        for size in (MAIN, SUB):
            predict_rois(Recorder(), Frame(scene(size), 0.0, 1), (roi,))
    finally:
        service.metrics.observe_prediction = original  # type: ignore[assignment]
    main, sub = seen
    assert main.shape[:2] == (378, 480) and sub.shape[:2] == (202, 176)  # 0.35 x 1080, 0.25 x 1920 ...
    placed_main, placed_sub = dark_share(main), dark_share(sub)
    # The part sits at the same place of the crop, and covers the same share of it, in both streams.
    assert placed_main == pytest.approx(placed_sub, abs=0.02)
    assert placed_main == pytest.approx((0.5, 0.5, (0.15 * 0.25) / (0.25 * 0.35)), abs=0.03)


# ---------------------------------------------------------------------------------------------------
# Through the Cameras part with the real reader


def write_video(path: Path, size: tuple[int, int], seconds: float = 3.0, fps: int = 10) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    image = scene(size)
    for _ in range(int(seconds * fps)):
        writer.write(image)
    writer.release()
    return path


class PartInference:
    """Serves a fake model that reports the part in every crop; records the frames it was given."""

    serving: Any = SimpleNamespace(spec=SimpleNamespace(labels=("part",), model_id="m", sha1="s"))

    def __init__(self) -> None:
        self.frames: list[tuple[int, int]] = []

    async def predict_rois(
        self, frame: Frame, rois: tuple[Roi, ...], predictor: Any = None
    ) -> RoiPredictions:
        image = await asyncio.to_thread(lambda: frame.image)
        self.frames.append((image.shape[1], image.shape[0]))
        return [(roi, (Prediction("part", 0.99, "0", None),)) for roi in rois]

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(fn, *args)


class Outlet:
    def __init__(self, snapshots: SnapshotStore) -> None:
        self.snapshots: SnapshotStore | None = snapshots
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as stack:
        yield stack


@pytest.mark.slow
async def test_the_substream_is_inspected_and_the_main_stream_is_the_snapshot(
    tmp_path: Path, stack: contextlib.AsyncExitStack
) -> None:
    main = write_video(tmp_path / "main.mp4", MAIN)
    sub = write_video(tmp_path / "sub.mp4", SUB)
    camera = CameraSettings(
        id="line1",
        url=str(main),
        detect_url=str(sub),
        fps=4,
        rois=(ROI,),
        rules=({"tag": "part", "k": 1, "n": 1},),
    )
    inference, outlet = PartInference(), Outlet(SnapshotStore(tmp_path / "snapshots", 10, 10**9))
    board = StatusBoard()
    cameras = await stack.enter_async_context(Cameras((camera,), inference, outlet, board))

    await eventually(lambda: outlet.events and outlet.events[0].snapshot, timeout=15, what="an event")
    status = cameras.status("line1")
    assert status.state is CameraState.STREAMING and status.stream is not None
    assert status.stream.resolution == SUB
    assert status.view is not None and status.view.stream is not None
    assert status.view.stream.resolution == MAIN and status.view.stream.decode == "keyframes"
    assert set(inference.frames) == {SUB}  # the predictor never saw the main stream

    saved = cv2.imread(str(next((tmp_path / "snapshots").glob(f"{outlet.events[0].id}*"))))
    assert saved.shape[:2] == (MAIN[1], MAIN[0])
    # The ROI is drawn around the part: its outline crosses the snapshot at the ROI's fractions.
    left, top = round(ROI["x"] * MAIN[0]), round(ROI["y"] * MAIN[1])
    right = round((ROI["x"] + ROI["width"]) * MAIN[0]) - 1
    plain = scene(MAIN).astype(np.int16)
    drawn = np.abs(saved.astype(np.int16) - plain).sum(axis=2) > 60
    middle = top + round(ROI["height"] * MAIN[1]) // 2
    assert drawn[middle, left - 2 : left + 3].any() and drawn[middle, right - 2 : right + 3].any()
    assert not drawn[middle, left + 20 : left + 40].any()  # inside the ROI, away from its label
    latest = cameras.latest_frame("line1")
    assert latest is not None and latest.image.shape[:2] == (MAIN[1], MAIN[0])
