"""Readiness follows real inferences: InferenceHealth, its metric, and warm-up over every tensor shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synthetic
from prometheus_client import REGISTRY
from synthetic import cpu_options, encode, pattern_image

from edge_runtime.engine import HEALTH_WINDOW, InferenceHealth, Predictor
from edge_runtime.errors import ImageTooLargeError, InferenceError

LABELS = ("bolt", "nut")
METRIC = "edge_runtime_inference_failures_total"
# yolo_model(grid=...) runs at one input size only: 640x480 -> 608x448 -> 14 rows x 19 columns of cells.
ONLY_SHAPE_THAT_RUNS = (640, 480)
FAILING_WARMUP_SIZES = ["480x640", "1920x1080", "1080x1920", "512x512", "2048x512"]


def failures_total() -> float:
    return REGISTRY.get_sample_value(METRIC) or 0.0


# ------------------------------------------------------------------------------------------ InferenceHealth


def test_failing_needs_three_judged_and_half_failed() -> None:
    health = InferenceHealth(window=6)
    assert not health.failing and health.recent_failures == (0, 0) and health.last_error is None
    health.record(False, "first")
    health.record(False, "second")
    assert health.recent_failures == (2, 2) and not health.failing  # only two judged
    health.record(True)
    assert health.recent_failures == (2, 3) and health.failing  # 2 of 3
    health.record(True)
    assert health.recent_failures == (2, 4) and health.failing  # exactly half
    health.record(True)
    assert health.recent_failures == (2, 5) and not health.failing
    assert health.last_error == "second"  # successes do not clear it


def test_the_window_forgets_old_outcomes() -> None:
    health = InferenceHealth(window=4)
    for _ in range(10):
        health.record(False, "broken")
    assert health.recent_failures == (4, 4) and health.failing
    for expected in [(3, 4), (2, 4), (1, 4), (0, 4)]:
        health.record(True)
        assert health.recent_failures == expected
    assert not health.failing and health.last_error == "broken"
    assert InferenceHealth().recent_failures == (0, 0) and HEALTH_WINDOW == 20


def test_each_failure_counts_in_the_metric() -> None:
    health = InferenceHealth()
    before = failures_total()
    health.record(True)
    health.record(False, "a")
    health.record(False)  # no message: counted, last_error kept
    health.record(True)
    assert failures_total() == before + 2
    assert health.last_error == "a"


# ------------------------------------------------------------------------------------------------- warm-up


def one_shape_yolo_grid() -> np.ndarray:
    per_anchor = 5 + len(LABELS)
    grid = np.zeros((1, 5 * per_anchor, 14, 19), np.float32)
    grid[:, 4::per_anchor] = -12.0  # no cell fires: predictions stay empty and quick
    return grid


@pytest.fixture(scope="module")
def one_shape_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_export(
        tmp_path_factory.mktemp("one-shape") / "export",
        synthetic.yolo_model(len(LABELS), grid=one_shape_yolo_grid()),
        LABELS,
        domain_type="ObjectDetection",
        metadata=synthetic.yolo_sidecar(),
    )


def test_a_model_that_runs_at_one_size_loads_and_names_the_sizes_it_fails(
    one_shape_export: Path, caplog: pytest.LogCaptureFixture
) -> None:
    predictor = Predictor.load(one_shape_export, cpu_options())
    assert predictor.warmup_sizes()[0] == ONLY_SHAPE_THAT_RUNS
    assert sorted(predictor.shape_failures) == sorted(FAILING_WARMUP_SIZES)
    assert all(message for message in predictor.shape_failures.values())
    assert "fails on images of" in caplog.text and "480x640" in caplog.text
    assert predictor.health.recent_failures == (0, 0) and predictor.health.last_error is None


def test_warm_up_probes_do_not_count_as_inference_failures(one_shape_export: Path) -> None:
    # The metric says "Inferences on which the loaded model failed (HTTP answers 500 ...)": the five
    # warm-up probes are no such answer, and health is reset after them for the same reason.
    before = failures_total()
    Predictor.load(one_shape_export, cpu_options())
    assert failures_total() == before


def test_predicting_a_failing_shape_raises_and_is_recorded(one_shape_export: Path) -> None:
    predictor = Predictor.load(one_shape_export, cpu_options())
    assert predictor.predict_bytes(encode(pattern_image(*ONLY_SHAPE_THAT_RUNS), "JPEG")).predictions == ()
    before = failures_total()
    portrait = encode(pattern_image(480, 640), "JPEG")
    with pytest.raises(InferenceError) as info:
        predictor.predict_bytes(portrait)
    assert predictor.health.recent_failures == (1, 2) and not predictor.health.failing
    assert predictor.health.last_error == str(info.value)
    with pytest.raises(InferenceError):
        predictor.predict_bytes(portrait)
    assert predictor.health.recent_failures == (2, 3) and predictor.health.failing
    assert failures_total() == before + 2


def test_images_refused_before_inference_are_not_model_failures(one_shape_export: Path) -> None:
    predictor = Predictor.load(one_shape_export, cpu_options())
    before = failures_total()
    with pytest.raises(ImageTooLargeError):
        predictor.predict_bytes(encode(pattern_image(1, 300_000), "PNG"))  # 0 x 280576 after align32
    assert predictor.health.recent_failures == (0, 0) and failures_total() == before


def test_a_fixed_input_classifier_warms_up_once(
    classifier_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[tuple[int, int]] = []
    predict_image = Predictor.predict_image

    def counting(self: Predictor, image: object, decode_seconds: float = 0.0) -> object:
        sizes.append(image.size)  # type: ignore[attr-defined]
        return predict_image(self, image, decode_seconds)  # type: ignore[arg-type]

    monkeypatch.setattr(Predictor, "predict_image", counting)
    before = failures_total()
    predictor = Predictor.load(classifier_export, cpu_options())
    assert sizes == [(640, 480)] and predictor.warmup_sizes() == [(640, 480)]
    assert predictor.shape_failures == {} and predictor.warmup_seconds > 0
    assert predictor.health.recent_failures == (0, 0) and failures_total() == before
    for size in [(480, 640), (2048, 512), (33, 17)]:  # any image size: one tensor shape
        predictor.predict_bytes(encode(pattern_image(*size), "PNG"))
    assert predictor.health.recent_failures == (0, 3)
