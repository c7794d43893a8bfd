"""The Cameras part (edge_runtime/sources/cameras.py) on the synthetic conveyor: which cameras run,
their statuses on the board, live changes (add, remove, restart, reconfigure in place), and the exit.
The inference service and the delivery part are fakes of the sampler's protocols."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from waiting import eventually

from edge_runtime.domain import Event, Frame, Roi
from edge_runtime.engine import Predictor
from edge_runtime.errors import SourceError
from edge_runtime.events.snapshots import SnapshotStore
from edge_runtime.inference.service import RoiPredictions
from edge_runtime.redact import redact_url
from edge_runtime.settings import CameraSettings
from edge_runtime.sources.cameras import Cameras
from edge_runtime.sources.readers import FrameReader, StreamSpec
from edge_runtime.sources.sampler import Inference, Publisher
from edge_runtime.status import Board, CameraState, StatusBoard, camera_key

SYNTHETIC = "synthetic://conveyor"
T = TypeVar("T")


class FakeInference:
    """No model serves: samplers take frames and predict nothing."""

    def __init__(self) -> None:
        self.predicted = 0

    @property
    def serving(self) -> Predictor | None:
        return None

    async def predict_rois(
        self, frame: Frame, rois: tuple[Roi, ...], predictor: Predictor | None = None
    ) -> RoiPredictions:
        self.predicted += 1
        return []

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        return fn(*args)


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    @property
    def snapshots(self) -> SnapshotStore | None:
        return None

    async def publish(self, event: Event) -> None:
        self.events.append(event)


def camera(camera_id: str, url: str = SYNTHETIC, **fields: Any) -> CameraSettings:
    return CameraSettings(id=camera_id, url=url, **({"fps": 1.0} | fields))


def make_cameras(
    config: tuple[CameraSettings, ...], board: StatusBoard, **options: Any
) -> tuple[Cameras, FakeInference]:
    inference = FakeInference()
    publisher = FakePublisher()
    checked: tuple[Inference, Publisher] = (inference, publisher)  # the fakes keep the protocols
    return Cameras(config, *checked, board, **options), inference


async def board_shows(board: StatusBoard, predicate: Callable[[Board], bool], what: str) -> Board:
    """The first board (now, or after a change) that `predicate` accepts; captures push, never polled."""
    try:
        async with asyncio.timeout(5), contextlib.aclosing(board.changes()) as boards:
            async for snapshot in boards:
                if predicate(snapshot):
                    return snapshot
    except TimeoutError:
        pass
    raise AssertionError(f"not within 5 s: {what}")


def streaming(*camera_ids: str) -> Callable[[Board], bool]:
    def check(board: Board) -> bool:
        cameras = board.cameras()
        return all(c in cameras and cameras[c].state is CameraState.STREAMING for c in camera_ids)

    return check


def capture_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"capture-{name}"]


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as stack:
        yield stack


# ---------------------------------------------------------------------------------------------------
# entering


async def test_enter_starts_the_enabled_cameras_only(stack: contextlib.AsyncExitStack) -> None:
    board = StatusBoard()
    config = (camera("on"), camera("off", enabled=False))
    cameras, _ = make_cameras(config, board)
    await stack.enter_async_context(cameras)
    assert set(cameras.samplers) == {"on"}
    assert camera_key("on") in board.snapshot().entries  # shown from the start, before a frame
    shown = await board_shows(board, streaming("on"), "camera on streaming")
    assert set(shown.cameras()) == {"on"}
    assert capture_threads("off") == []
    with pytest.raises(KeyError):
        cameras.status("off")


async def test_a_streaming_camera_shows_its_progress_on_the_board(stack: contextlib.AsyncExitStack) -> None:
    board = StatusBoard()
    cameras, _ = make_cameras((camera("c1"),), board)
    await stack.enter_async_context(cameras)
    shown = (await board_shows(board, streaming("c1"), "c1 streaming")).cameras()["c1"]
    assert shown.url == SYNTHETIC and shown.frames >= 1 and shown.last_frame_at is not None
    assert shown.last_error is None and shown.failures == 0
    assert cameras.status("c1").state is CameraState.STREAMING


async def test_a_camera_that_cannot_open_shows_why(stack: contextlib.AsyncExitStack) -> None:
    def refuse(spec: StreamSpec) -> FrameReader:
        raise SourceError(f"cannot open {spec.url}: refused")

    board = StatusBoard()
    cameras, _ = make_cameras((camera("down", "rtsp://cam/down"),), board, opener=refuse)
    await stack.enter_async_context(cameras)
    shown = await board_shows(
        board, lambda b: b.cameras()["down"].state is CameraState.BACKOFF, "camera down in backoff"
    )
    status = shown.cameras()["down"]
    assert status.last_error == "cannot open rtsp://cam/down: refused"
    assert status.failures >= 1 and status.last_failure is not None
    assert status.last_failure.reason.value == "open_failed"


# ---------------------------------------------------------------------------------------------------
# apply


async def test_apply_adds_and_removes_cameras(stack: contextlib.AsyncExitStack) -> None:
    board = StatusBoard()
    c1, c2 = camera("c1"), camera("c2")
    cameras, _ = make_cameras((c1,), board)
    await stack.enter_async_context(cameras)
    assert await cameras.apply((c1, c2)) == ["camera c2 added"]
    assert cameras.config == (c1, c2)
    await board_shows(board, streaming("c1", "c2"), "c1 and c2 streaming")
    c2_thread = cameras.samplers["c2"].capture.thread
    assert c2_thread is not None
    heard: list[str] = []
    board.listen(heard.append)
    assert await cameras.apply((c1,)) == ["camera c2 removed"]
    assert "c2" not in cameras.samplers and not c2_thread.is_alive()
    assert camera_key("c2") not in board.snapshot().entries
    for _ in range(5):  # nothing the stopped capture said on its way out lands after the removal
        await asyncio.sleep(0)
    assert heard.count(camera_key("c2")) == 1 and camera_key("c2") not in board.snapshot().entries
    assert set(board.snapshot().cameras()) == {"c1"}


async def test_disabling_a_camera_removes_it_and_enabling_adds_it_back(
    stack: contextlib.AsyncExitStack,
) -> None:
    board = StatusBoard()
    cameras, _ = make_cameras((camera("c1"),), board)
    await stack.enter_async_context(cameras)
    assert await cameras.apply((camera("c1", enabled=False),)) == ["camera c1 removed"]
    assert cameras.samplers == {} and board.snapshot().cameras() == {}
    assert await cameras.apply((camera("c1"),)) == ["camera c1 added"]
    await board_shows(board, streaming("c1"), "c1 streaming again")


@pytest.mark.parametrize(
    "change",
    [{"url": SYNTHETIC + "?restart=1"}, {"stall_timeout_s": 7.0}, {"backoff_max_s": 10.0}],
    ids=["url", "stall_timeout_s", "backoff_max_s"],
)
async def test_a_stream_field_change_restarts_the_capture(
    stack: contextlib.AsyncExitStack, change: dict[str, Any]
) -> None:
    board = StatusBoard()
    cameras, _ = make_cameras((camera("c1"),), board)
    await stack.enter_async_context(cameras)
    await board_shows(board, streaming("c1"), "c1 streaming")
    old = cameras.samplers["c1"]
    old_thread = old.capture.thread
    assert old_thread is not None
    new = camera("c1", **change)
    assert await cameras.apply((new,)) == ["camera c1 changed"]
    sampler = cameras.samplers["c1"]
    assert sampler is not old and sampler.capture is not old.capture
    assert sampler.capture.settings == new and not old_thread.is_alive()
    assert capture_threads("c1") == [sampler.capture.thread]
    url = redact_url(new.url)
    await board_shows(
        board,
        lambda b: streaming("c1")(b) and b.cameras()["c1"].url == url,
        "the new capture streaming",
    )


async def test_a_sampling_change_is_applied_in_place(stack: contextlib.AsyncExitStack) -> None:
    board = StatusBoard()
    cameras, _ = make_cameras((camera("c1"),), board)
    await stack.enter_async_context(cameras)
    await board_shows(board, streaming("c1"), "c1 streaming")
    sampler = cameras.samplers["c1"]
    capture, thread = sampler.capture, sampler.capture.thread
    faster = camera(
        "c1",
        fps=5.0,
        rois=[{"name": "left", "x": 0, "y": 0, "width": 0.5, "height": 1}],
        rules=[{"tag": "stain"}],
    )
    assert await cameras.apply((faster,)) == ["camera c1 changed"]
    assert cameras.samplers["c1"] is sampler and sampler.capture is capture
    assert sampler.settings == faster and sampler.settings.fps == 5.0
    assert thread is not None and thread.is_alive() and capture_threads("c1") == [thread]
    assert await cameras.apply((faster,)) == []  # the same again: nothing to do


async def test_apply_reports_each_change_removals_first(stack: contextlib.AsyncExitStack) -> None:
    board = StatusBoard()
    cameras, _ = make_cameras((camera("a"), camera("b")), board)
    await stack.enter_async_context(cameras)
    wanted = (camera("c"), camera("b", fps=2.0), camera("d", enabled=False))
    assert await cameras.apply(wanted) == ["camera a removed", "camera c added", "camera b changed"]
    assert set(cameras.samplers) == {"b", "c"} and cameras.config == wanted
    assert await cameras.apply(wanted) == []


# ---------------------------------------------------------------------------------------------------
# what others use


async def test_latest_frame_of_a_running_camera_and_key_error_for_an_unknown_one(
    stack: contextlib.AsyncExitStack,
) -> None:
    board = StatusBoard()
    cameras, _ = make_cameras((camera("c1"),), board)
    await stack.enter_async_context(cameras)
    with pytest.raises(KeyError):
        cameras.latest_frame("nope")
    await eventually(lambda: cameras.latest_frame("c1") is not None, what="a frame from c1")
    frame = cameras.latest_frame("c1")
    assert frame is not None and frame.image.shape == (480, 640, 3) and frame.sequence >= 1
    await cameras.apply(())
    with pytest.raises(KeyError):
        cameras.latest_frame("c1")


# ---------------------------------------------------------------------------------------------------
# exit


async def test_exit_stops_every_capture_thread() -> None:
    board = StatusBoard()
    cameras, inference = make_cameras((camera("a"), camera("b"), camera("c")), board)
    async with cameras:
        await board_shows(board, streaming("a", "b", "c"), "every camera streaming")
        threads = [s.capture.thread for s in cameras.samplers.values()]
        assert len(threads) == 3 and all(t is not None and t.is_alive() for t in threads)
    assert not any(t is not None and t.is_alive() for t in threads)
    assert cameras.samplers == {} and board.snapshot().cameras() == {}
    assert inference.predicted == 0  # nothing served: the samplers never predicted
