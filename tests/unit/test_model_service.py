"""The model service (edge_runtime/inference/models.py): loads and updates, fall-back to the serving
model, reload, close, and in_daemon_thread; through the Controller where a model update starts there.

Unit level, on tests/control_harness.py: a fake model loader (FakeLoader), and the real loader on the
demo export.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import control_harness
import pytest
from control_harness import FakeLoader, FakeStarter, base_data, wait_thread_event

from edge_runtime.app import predictor_options
from edge_runtime.control import Controller
from edge_runtime.errors import EdgeRuntimeError, ModelLoadError
from edge_runtime.events.delivery import Delivery, DeliveryConfig
from edge_runtime.inference.models import ModelService, in_daemon_thread
from edge_runtime.inference.service import Capacity, InferenceService
from edge_runtime.settings import build_settings
from edge_runtime.sources.cameras import Cameras
from edge_runtime.status import CameraState, CameraStatus, StatusBoard, camera_key

# The shared fixtures (tests/control_harness.py); the autouse one puts the root log level back.
_restore_root_log_level = control_harness._restore_root_log_level
loader = control_harness.loader
starter = control_harness.starter
make = control_harness.make


# ---------------------------------------------------------------------------------------------------
# in_daemon_thread


async def test_in_daemon_thread_returns_the_result_from_a_daemon_thread() -> None:
    seen: list[threading.Thread] = []

    def work(a: int, b: int) -> int:
        seen.append(threading.current_thread())
        return a + b

    assert await in_daemon_thread(work, 2, 3) == 5
    assert seen[0] is not threading.main_thread() and seen[0].daemon


async def test_in_daemon_thread_raises_the_error_and_survives_cancellation() -> None:
    def fail() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await in_daemon_thread(fail)

    release = threading.Event()
    done = threading.Event()

    def slow() -> int:
        release.wait(5)
        done.set()
        return 1

    future = in_daemon_thread(slow)
    future.cancel()
    release.set()
    await wait_thread_event(done)
    await asyncio.sleep(0.05)  # the thread's settle() runs on the loop: must not raise InvalidStateError
    assert future.cancelled()


# ---------------------------------------------------------------------------------------------------
# Controller: the model


async def test_model_patch_loads_in_the_background_and_swaps(make: Any, loader: FakeLoader) -> None:
    h = await make()
    states: list[tuple[str, str]] = []
    h.controller.on_change(
        lambda: states.append((h.controller.config.status, h.controller.model_state.status))
    )
    result = await h.controller.patch({"model": {"path": "/models/alpha"}})
    assert result.applied and result.changes == ("model",)
    state = await h.controller.wait_for_model()
    assert state.status == "ready" and state.error is None and state.source == "/models/alpha"
    assert h.slot.predictor.name == "alpha"
    assert loader.calls == ["alpha"]
    assert loader.threads[0] is not threading.main_thread() and loader.threads[0].daemon
    model = h.controller.status()["model"]
    assert model["id"] == "alpha" and model["status"] == "ready" and model["device"] == "cpu"
    assert model["sha1"] == h.slot.predictor.spec.sha1
    # The document is reported applied first, then the load's own progress.
    assert states == [("applied", "loading"), ("applied", "loading"), ("applied", "ready")]


async def test_model_load_failure_keeps_the_old_predictor(make: Any, loader: FakeLoader) -> None:
    h = await make()
    await h.controller.patch({"model": {"path": "/models/good"}})
    await h.controller.wait_for_model()
    loader.results["bad"] = ValueError("corrupt graph")
    result = await h.controller.patch({"model": {"path": "/models/bad"}})
    assert result.applied  # the document is fine; the load fails in the background
    state = await h.controller.wait_for_model()
    assert state.status == "failed" and state.error == "ValueError: corrupt graph"
    assert state.source == "/models/bad"
    assert h.slot.predictor.name == "good" and h.slot.error is None
    model = h.controller.status()["model"]
    assert model["status"] == "failed" and model["error"] == "ValueError: corrupt graph"
    assert model["id"] == "good"


async def test_model_load_failure_without_a_model_sets_the_slot_error(make: Any, loader: FakeLoader) -> None:
    h = await make()
    loader.results["bad"] = ModelLoadError("/models/bad", "no model.onnx")
    await h.controller.patch({"model": {"path": "/models/bad"}})
    state = await h.controller.wait_for_model()
    assert state.status == "failed"
    assert state.error == str(loader.results["bad"])  # an EdgeRuntimeError is reported verbatim
    assert h.slot.predictor is None and h.slot.error == state.error
    # A later good load clears the slot's error.
    await h.controller.patch({"model": {"path": "/models/good"}})
    assert (await h.controller.wait_for_model()).status == "ready"
    assert h.slot.error is None and h.slot.predictor.name == "good"


async def test_no_model_configured(make: Any, loader: FakeLoader) -> None:
    h = await make()
    assert (await h.controller.wait_for_model()).status == "loading"  # nothing started yet
    h.controller.start_model_load()
    state = await h.controller.wait_for_model()
    assert state.status == "failed" and "no model configured" in (state.error or "")
    assert loader.calls == []


async def test_default_model_path_is_used_without_model_path(make: Any, loader: FakeLoader) -> None:
    h = await make(default_model_path=Path("/models/demo"))
    h.controller.start_model_load()
    state = await h.controller.wait_for_model()
    assert state.status == "ready" and state.source == "/models/demo" and loader.calls == ["demo"]


async def test_model_url_source_is_redacted(make: Any, loader: FakeLoader) -> None:
    h = await make()
    await h.controller.patch(
        {"model": {"url": "http://example.invalid/m.zip?sig=SECRET", "sha256": "b" * 64}}
    )
    state = await h.controller.wait_for_model()
    assert state.status == "failed" and "https" in (state.error or "")
    assert "SECRET" not in state.source and "SECRET" not in (state.error or "")
    assert state.source.startswith("http://example.invalid/m.zip")
    assert loader.calls == []


async def test_model_url_is_downloaded_then_loaded_from_the_verified_file(
    make: Any, loader: FakeLoader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests: list[Any] = []

    async def fake_download(request: Any) -> Path:
        requests.append(request)
        return tmp_path / "downloaded.zip"

    monkeypatch.setattr("edge_runtime.inference.models.download_model", fake_download)
    h = await make()
    sha = "AB" * 32
    url = "https://blob.example/models/v7.zip?sv=1&sig=SECRET"
    await h.controller.patch(
        {"model": {"url": url, "sha256": sha, "download_dir": str(tmp_path / "models"), "verify_sha1": False}}
    )
    state = await h.controller.wait_for_model()
    assert state.status == "ready" and h.slot.predictor.name == "downloaded.zip"
    assert state.source == "https://blob.example/models/v7.zip?***"
    (request,) = requests
    assert request.url == url and request.sha256 == sha and request.directory == tmp_path / "models"
    assert loader.calls == ["downloaded.zip"]
    (options,) = loader.options
    assert options.load.extract_dir == tmp_path / "models" / sha.lower()
    assert options.load.verify_sha1 is False


async def test_back_to_back_loads_run_in_order_and_the_last_one_serves(make: Any, loader: FakeLoader) -> None:
    h = await make()
    first_gate = loader.gate("first")
    await h.controller.patch({"model": {"path": "/models/first"}})
    await wait_thread_event(loader.entered["first"])
    await h.controller.patch({"model": {"path": "/models/second"}})
    await asyncio.sleep(0.05)
    assert loader.calls == ["first"]  # the second waits for the first
    assert h.controller.model_state.source == "/models/first"
    first_gate.set()
    state = await h.controller.wait_for_model()
    assert state.status == "ready" and state.source == "/models/second"
    assert loader.calls == ["first", "second"] and loader.max_active == 1
    assert h.slot.predictor.name == "second"


async def test_back_to_back_loads_last_one_wins_even_if_the_first_fails(
    make: Any, loader: FakeLoader
) -> None:
    h = await make()
    gate = loader.gate("first")
    loader.results["first"] = RuntimeError("boom")
    h.controller.start_model_load(build_settings({"model": {"path": "/m/first"}}))
    await wait_thread_event(loader.entered["first"])
    h.controller.start_model_load(build_settings({"model": {"path": "/m/second"}}))
    gate.set()
    state = await h.controller.wait_for_model()
    assert state.status == "ready" and h.slot.predictor.name == "second"


async def test_reload_model_succeeds_and_raises_on_failure(
    make: Any, loader: FakeLoader, tmp_path: Path
) -> None:
    h = await make(base_data(tmp_path, model={"path": "/models/m"}))
    await h.controller.reload_model()
    assert h.slot.predictor.name == "m" and h.controller.model_state.status == "ready"
    loader.results["m"] = ValueError("disk gone")
    with pytest.raises(EdgeRuntimeError, match="ValueError: disk gone"):
        await h.controller.reload_model()
    assert h.slot.predictor.name == "m"  # still serving the previous load
    assert loader.calls == ["m", "m"]


async def test_reload_model_raises_even_when_another_load_is_queued(
    make: Any, loader: FakeLoader, tmp_path: Path
) -> None:
    h = await make(base_data(tmp_path, model={"path": "/models/m"}))
    gate = loader.gate("m")
    loader.results["m"] = ValueError("disk gone")
    loader.gate("next")
    reload = asyncio.create_task(h.controller.reload_model())
    await wait_thread_event(loader.entered["m"])
    h.controller.start_model_load(build_settings({"model": {"path": "/models/next"}}))
    gate.set()
    try:
        with pytest.raises(EdgeRuntimeError, match="disk gone"):
            await asyncio.wait_for(reload, 5)
    finally:
        loader.gates["next"].set()
        await h.controller.wait_for_model()


async def test_close_cancels_a_load_in_progress_without_swapping(make: Any, loader: FakeLoader) -> None:
    h = await make()
    gate = loader.gate("slow")
    update = h.controller.start_model_load(build_settings({"model": {"path": "/m/slow"}}))
    await wait_thread_event(loader.entered["slow"])
    await asyncio.wait_for(h.slot.close(), 2)  # the model service owns the loads
    state = await asyncio.wait_for(h.controller.wait_for_model(update), 1)  # cancelled: no outcome
    assert state.status == "loading"
    gate.set()
    await asyncio.sleep(0.05)
    assert h.slot.predictor is None and h.controller.model_state.status == "loading"


async def test_each_model_update_gets_its_own_outcome(make: Any, loader: FakeLoader) -> None:
    """Item 13: a good update followed at once by a bad one: each waiter hears its own outcome."""
    h = await make()
    gate = loader.gate("good")
    loader.results["missing"] = ModelLoadError("/models/missing", "no such export")
    first = await h.controller.patch({"model": {"path": "/models/good"}})
    await wait_thread_event(loader.entered["good"])
    second = await h.controller.patch({"model": {"path": "/models/missing"}})
    assert first.model_update is not None and second.model_update is not None
    assert second.model_update > first.model_update
    waiting_first = asyncio.create_task(h.controller.wait_for_model(first.model_update))
    waiting_second = asyncio.create_task(h.controller.wait_for_model(second.model_update))
    gate.set()
    good, bad = await asyncio.wait_for(asyncio.gather(waiting_first, waiting_second), 5)
    assert (good.status, good.source, good.error, good.update) == (
        "ready",
        "/models/good",
        None,
        first.model_update,
    )
    assert bad.status == "failed" and "no such export" in (bad.error or "")
    assert bad.update == second.model_update and bad.source == "/models/missing"
    assert h.slot.predictor.name == "good"
    # An outcome stays answerable after the fact, and a patch without a model change starts none.
    assert (await h.controller.wait_for_model(first.model_update)).status == "ready"
    assert (await h.controller.patch({"log_level": "INFO"})).model_update is None


async def test_failed_model_update_leaves_the_serving_model_configured(
    make: Any, loader: FakeLoader, tmp_path: Path
) -> None:
    """Item 18: the failed model is reported, but the configured model stays the one serving."""
    h = await make(base_data(tmp_path, model={"path": "/models/base"}))
    h.controller.start_model_load()
    assert (await h.controller.wait_for_model()).status == "ready"
    await h.controller.patch({"model": {"path": "/models/good", "device": "cpu"}})
    assert (await h.controller.wait_for_model()).status == "ready"
    serving_desired = dict(h.controller.desired)
    serving_model = h.controller.settings.model
    changes: list[str] = []
    h.controller.on_change(lambda: changes.append(h.controller.model_state.status))

    loader.results["missing"] = ModelLoadError("/models/missing", "no such export")
    result = await h.controller.patch({"model": {"path": "/models/missing"}})
    state = await h.controller.wait_for_model(result.model_update)
    assert state.status == "failed"
    assert h.controller.settings.model == serving_model  # what a reload loads
    assert h.controller.desired == serving_desired  # the next patch builds on the serving model
    assert h.controller.configured_update < (result.model_update or 0)
    model = h.controller.status()["model"]
    assert model["status"] == "failed" and "no such export" in model["error"]
    assert model["source"] == "/models/missing" and model["update"] == result.model_update
    assert model["configured"] == "/models/good" and model["id"] == "good"
    assert changes[-1] == "failed"  # listeners (the twin reporter) hear of the change back

    # A reload reloads the serving model; the same model asked for again answers with its outcome.
    assert (await h.controller.reload_model()).status == "ready"
    assert loader.calls[-1] == "good" and h.controller.model_state.source == "/models/good"
    again = await h.controller.patch({"model": {"path": "/models/good"}})
    assert again.applied and again.model_update is None
    assert (await h.controller.wait_for_model(h.controller.configured_update)).status == "ready"
    # Other sections still patch normally on top of the serving model.
    assert (await h.controller.patch({"log_level": "DEBUG"})).applied
    assert h.controller.settings.model == serving_model


async def test_a_failed_update_superseded_by_a_pending_one_changes_nothing(
    make: Any, loader: FakeLoader
) -> None:
    h = await make()
    await h.controller.patch({"model": {"path": "/models/first"}})
    await h.controller.wait_for_model()
    gate = loader.gate("bad")
    loader.results["bad"] = ValueError("corrupt")
    bad = await h.controller.patch({"model": {"path": "/models/bad"}})
    await wait_thread_event(loader.entered["bad"])
    newer = await h.controller.patch({"model": {"path": "/models/newer"}})
    gate.set()
    assert (await h.controller.wait_for_model(bad.model_update)).status == "failed"
    assert h.controller.desired["model"] == {"path": "/models/newer"}  # not put back: newer is coming
    assert (await h.controller.wait_for_model(newer.model_update)).status == "ready"
    assert str(h.controller.settings.model.path) == "/models/newer" and h.slot.predictor.name == "newer"
    # ...and when the newer one fails too, the configured model goes back to the one serving.
    loader.results["newest"] = ValueError("corrupt")
    last = await h.controller.patch({"model": {"path": "/models/newest"}})
    assert (await h.controller.wait_for_model(last.model_update)).status == "failed"
    assert h.controller.desired["model"] == {"path": "/models/newer"}


async def test_a_failed_model_with_nothing_serving_stays_configured(make: Any, loader: FakeLoader) -> None:
    h = await make()
    loader.results["bad"] = ValueError("corrupt")
    result = await h.controller.patch({"model": {"path": "/models/bad"}})
    assert (await h.controller.wait_for_model(result.model_update)).status == "failed"
    assert h.controller.desired["model"] == {"path": "/models/bad"}  # nothing to go back to
    assert h.controller.status()["model"]["configured"] == "/models/bad"
    del loader.results["bad"]  # the file was fixed: a reload now loads it
    assert (await h.controller.reload_model()).status == "ready" and h.slot.predictor.name == "bad"


async def test_model_errors_and_statuses_never_carry_credentials(
    make: Any, loader: FakeLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "https://u:SECRET@127.0.0.1:99999/m.zip?sig=TOKEN"

    async def failing_download(request: Any) -> Path:  # what aiohttp says: the URL itself
        raise ModelLoadError("x", f"download failed: InvalidUrlClientError {request.url}")

    monkeypatch.setattr("edge_runtime.inference.models.download_model", failing_download)
    h = await make()
    result = await h.controller.patch({"model": {"url": url, "sha256": "c" * 64}})
    state = await h.controller.wait_for_model(result.model_update)
    assert state.status == "failed"
    assert state.source == "https://***@127.0.0.1:99999/m.zip?***"
    text = repr(h.controller.status()) + repr(state)
    assert "SECRET" not in text and "TOKEN" not in text and "u:" not in text
    # a camera error that quotes its URL is scrubbed in the status too
    error = "cannot open rtsp://admin:SECRET@cam/s?TOKEN"
    h.board.put(
        camera_key("c"), CameraStatus("c", "rtsp://***@cam/s", CameraState.BACKOFF, 0, 0, 0, 0, None, error)
    )
    assert h.controller.status()["cameras"]["c"]["last_error"] == "cannot open rtsp://***@cam/s?***"


async def test_real_predictor_load_on_the_demo_export(tmp_path: Path, starter: FakeStarter) -> None:
    from edge_runtime.demo.model import build_demo_export
    from edge_runtime.engine import Predictor

    export = build_demo_export(tmp_path / "demo")
    settings = build_settings(base_data(tmp_path, model={"path": str(export), "device": "cpu"}))
    board = StatusBoard()
    slot = ModelService(board, lambda s: predictor_options(s, 1), Predictor.load, None, settings)
    async with (
        slot,
        InferenceService(slot, Capacity(1, 4, 1.0)) as inference,
        Delivery(DeliveryConfig.of(settings), board, start_dispatcher=starter) as delivery,
        Cameras(settings.cameras, inference, delivery, board) as cameras,
    ):
        controller = Controller(settings, board, slot, delivery, cameras)
        await controller.reload_model()
        assert slot.predictor is not None and slot.predictor.spec.model_id == "edge-runtime-demo"
        model = controller.status()["model"]
        assert model["status"] == "ready" and model["id"] == "edge-runtime-demo" and len(model["sha1"]) == 40
        # A folder that is no export: the load fails, the demo model keeps serving.
        empty = tmp_path / "empty"
        empty.mkdir()
        controller.start_model_load(build_settings(base_data(tmp_path, model={"path": str(empty)})))
        state = await controller.wait_for_model()
        assert state.status == "failed" and state.error
        assert slot.predictor.spec.model_id == "edge-runtime-demo"
