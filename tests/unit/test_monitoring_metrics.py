"""The metrics added for the dashboard and alerts (deploy/): model loads by outcome, each camera's
sampling period, and its overrun counter present from the start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control_harness import base_data, fake_predictor
from prometheus_client import REGISTRY

from edge_runtime.app import predictor_options
from edge_runtime.inference.models import ModelService
from edge_runtime.settings import CameraSettings, build_settings
from edge_runtime.sources.capture import Capture
from edge_runtime.sources.sampler import CameraSampler
from edge_runtime.status import StatusBoard


def loads(outcome: str) -> float:
    value = REGISTRY.get_sample_value("edge_runtime_model_loads_total", {"outcome": outcome})
    assert value is not None, f"no edge_runtime_model_loads_total{{outcome={outcome!r}}} series"
    return value


async def test_model_loads_are_counted_by_outcome(tmp_path: Path) -> None:
    def loader(path: Path, options: Any) -> Any:
        if path.name == "bad":
            raise ValueError("corrupt graph")
        return fake_predictor(path.name)

    def settings_for(name: str) -> Any:
        return build_settings(base_data(tmp_path, model={"path": str(tmp_path / name)}))

    configured = settings_for("good")
    models = ModelService(StatusBoard(), lambda s: predictor_options(s, 1), loader, None, configured)
    ready, failed = loads("ready"), loads("failed")  # both exist before any load
    async with models:
        assert (await models.wait(models.start(configured))).status == "ready"
        assert (loads("ready"), loads("failed")) == (ready + 1, failed)
        assert (await models.wait(models.start(settings_for("bad")))).status == "failed"
        assert (loads("ready"), loads("failed")) == (ready + 1, failed + 1)


class _Unused:
    """The sampler's inference and publisher: never called, the sampler does not run here."""


def test_sampling_period_follows_fps_and_overruns_start_at_zero() -> None:
    camera = "period-belt"
    settings = CameraSettings(id=camera, url="synthetic://conveyor", fps=4)
    sampler = CameraSampler(Capture(settings), _Unused(), _Unused())  # type: ignore[arg-type]
    labels = {"camera": camera}
    assert REGISTRY.get_sample_value("edge_runtime_camera_sampling_period_seconds", labels) == 0.25
    assert REGISTRY.get_sample_value("edge_runtime_camera_sampling_overruns_total", labels) == 0.0
    sampler.reconfigure(settings.model_copy(update={"fps": 0.5}))
    assert REGISTRY.get_sample_value("edge_runtime_camera_sampling_period_seconds", labels) == 2.0
