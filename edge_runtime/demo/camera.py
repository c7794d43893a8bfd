"""The demo's camera: the synthetic conveyor with rules tuned to its known defects, and a station on it
(`POST /stations/demo/trigger {"partId": "p1"}` judges a part)."""

from __future__ import annotations

from edge_runtime.settings import CameraSettings, DefectSettings, RuleSettings, Settings, StationSettings
from edge_runtime.sources.decoding import DecodeMode

DEMO_CAMERA = CameraSettings(
    id="demo-conveyor",
    url="synthetic://conveyor",
    fps=4.0,
    decode=DecodeMode.ALL,  # a station's camera decodes every frame
    rules=(RuleSettings(tag="*", min_probability=0.5, k=2, n=3, clear_after=3, cooldown_s=2.0),),
)
DEMO_STATION = StationSettings(
    id="demo", cameras=(DEMO_CAMERA.id,), frames=2, defects=(DefectSettings(tag="stain"),)
)


def with_demo_camera(settings: Settings) -> Settings:
    """The demo camera, and its station unless stations are configured (they cannot name it)."""
    return settings.model_copy(
        update={"cameras": (DEMO_CAMERA,), "stations": settings.stations or (DEMO_STATION,)}
    )
