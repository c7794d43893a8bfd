"""Camera, rule and ROI settings: what builds, what is refused (and that the error names the problem),
the rule defaults."""

from __future__ import annotations

import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.settings import RuleSettings, build_settings


def camera(**fields: object) -> dict[str, object]:
    return {"id": "line1-top", "url": "synthetic://conveyor", **fields}


def test_a_valid_camera_builds() -> None:
    settings = build_settings(
        {
            "cameras": [
                camera(
                    rois=[{"name": "station-a", "x": 0.5, "y": 0.0, "width": 0.5, "height": 1.0}],
                    rules=[{"tag": "scratch", "k": 3, "n": 3}, {"tag": "*"}],
                ),
                camera(id="line2_B", url="rtsp://u:p@10.0.0.2/s"),
            ]
        }
    )
    first = settings.cameras[0]
    assert first.rois[0].x + first.rois[0].width == 1.0
    assert [r.tag for r in first.rules] == ["scratch", "*"]
    assert settings.cameras[1].rules == ()  # no implicit rule: no rules, no events


@pytest.mark.parametrize(
    "data",
    [
        {"cameras": [camera(rules=[{"tag": "x", "k": 4, "n": 3}])]},
        {"cameras": [camera(rules=[{"k": 0}])]},
        {"cameras": [camera(rules=[{"min_probability": 1.5}])]},
        {"cameras": [camera(rules=[{"clear_after": 0}])]},
        {"cameras": [camera(rules=[{"cooldown_s": -1}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": 0.6, "y": 0.0, "width": 0.5, "height": 0.5}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": 0.0, "y": 0.7, "width": 0.5, "height": 0.31}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": 1.0, "y": 0.0, "width": 0.1, "height": 0.5}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": -0.1, "y": 0.0, "width": 0.1, "height": 0.5}])]},
        {"cameras": [camera(rois=[{"name": "r", "x": 0.0, "y": 0.0, "width": 0.0, "height": 0.5}])]},
        {"cameras": [camera(rois=[{"name": "a b", "x": 0.0, "y": 0.0, "width": 0.5, "height": 0.5}])]},
        {"cameras": [camera(), camera(url="rtsp://other/s")]},
        {"cameras": [camera(id="line 1")]},
        {"cameras": [camera(id="../etc")]},
        {"cameras": [camera(id="")]},
        {"cameras": [camera(id="x" * 65)]},
        {"cameras": [camera(url="  ")]},
        {"cameras": [camera(fps=0)]},
        {"cameras": [camera(unknown_field=1)]},
    ],
    ids=[
        "k>n",
        "k=0",
        "probability>1",
        "clear_after=0",
        "negative-cooldown",
        "roi-right-of-frame",
        "roi-below-frame",
        "roi-x=1",
        "roi-negative-x",
        "roi-zero-width",
        "roi-bad-name",
        "duplicate-ids",
        "id-with-space",
        "id-with-slash",
        "empty-id",
        "id-too-long",
        "empty-url",
        "fps-0",
        "unknown-field",
    ],
)
def test_bad_camera_settings_are_config_errors(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="invalid settings"):
        build_settings(data)


def test_config_error_names_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"k \(4\) must not exceed n \(3\)"):
        build_settings({"cameras": [camera(rules=[{"tag": "x", "k": 4, "n": 3}])]})
    with pytest.raises(ConfigError, match="reaches outside the frame"):
        build_settings(
            {"cameras": [camera(rois=[{"name": "r", "x": 0.6, "y": 0, "width": 0.5, "height": 1}])]}
        )
    with pytest.raises(ConfigError, match=r"camera ids must be unique: \['line1-top'\]"):
        build_settings({"cameras": [camera(), camera()]})


def test_rule_defaults() -> None:
    rule = RuleSettings()
    assert (rule.tag, rule.min_probability, rule.k, rule.n, rule.clear_after) == ("*", 0.5, 2, 3, 3)
    assert rule.emit_ended is True and rule.cooldown_s == 10.0 and rule.min_box_area == 0.0
