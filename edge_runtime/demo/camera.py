"""The demo's camera: the synthetic conveyor with rules tuned to its known defects."""

from __future__ import annotations

from edge_runtime.settings import CameraSettings, RuleSettings, Settings

DEMO_CAMERA = CameraSettings(
    id="demo-conveyor",
    url="synthetic://conveyor",
    fps=4.0,
    rules=(RuleSettings(tag="*", min_probability=0.5, k=2, n=3, clear_after=3, cooldown_s=2.0),),
)


def with_demo_camera(settings: Settings) -> Settings:
    return settings.model_copy(update={"cameras": (DEMO_CAMERA,)})
