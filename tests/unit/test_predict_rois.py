"""predict_rois: each ROI's crop is predicted and its boxes are mapped back to full-frame fractions; on the
demo model a stain is found inside the ROI, at the same place as on the whole frame, and not outside it."""

from __future__ import annotations

import numpy as np
import pytest
from factories import T0
from numpy.typing import NDArray

from edge_runtime.backends.providers import parse_device
from edge_runtime.demo.model import BELT_GREY, build_demo_export
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
from edge_runtime.engine import Predictor, PredictorOptions
from edge_runtime.inference.service import predict_rois
from edge_runtime.model.imaging import ImageLimits
from edge_runtime.model.loader import LoadOptions


class FakePredictor:
    """Records the crops it is given; answers one box covering the whole crop plus a classification."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def predict_frame(self, frame: NDArray[np.uint8]) -> PredictionResult:
        self.shapes.append(frame.shape)
        predictions = (
            Prediction("stain", 0.9, 0, BoundingBox(0.0, 0.0, 1.0, 1.0)),
            Prediction("glare", 0.4, None, None),
        )
        return PredictionResult(Task.DETECTION, predictions, (frame.shape[1], frame.shape[0]), StageTimings())


def test_predict_rois_crops_each_roi_and_maps_boxes_back() -> None:
    frame = Frame(np.zeros((480, 640, 3), np.uint8), T0, 1)
    rois = (FULL_FRAME, Roi("q", 0.5, 0.5, 0.5, 0.5), Roi("left", 0.0, 0.25, 0.25, 0.5))
    fake = FakePredictor()
    results = predict_rois(fake, frame, rois)
    assert fake.shapes == [(480, 640, 3), (240, 320, 3), (240, 160, 3)]
    assert [roi for roi, _ in results] == list(rois)
    for roi, predictions in results:
        box, classification = predictions
        assert box.bounding_box == BoundingBox(roi.x, roi.y, roi.width, roi.height)
        assert (box.tag_name, box.probability, box.tag_id) == ("stain", 0.9, 0)
        assert classification == Prediction("glare", 0.4, None, None)  # passed through unchanged


@pytest.fixture(scope="module")
def demo_predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    folder = build_demo_export(tmp_path_factory.mktemp("demo") / "model")
    options = PredictorOptions(
        device=parse_device("cpu"), threads=1, load=LoadOptions(), limits=ImageLimits()
    )
    predictor = Predictor.load(folder, options)
    return predictor


def belt_with_stain(top: int, left: int, size: int = 96) -> NDArray[np.uint8]:
    image = np.full((480, 640, 3), BELT_GREY, np.uint8)
    image[top : top + size, left : left + size] = 20
    return image


QUADRANT = Roi("bottom-right", 0.5, 0.5, 0.5, 0.5)


def test_predict_rois_on_the_demo_model_finds_a_stain_inside_the_roi(demo_predictor: Predictor) -> None:
    top, left = 320, 400  # rows 320..416, columns 400..496: inside the bottom-right quadrant
    stain = (left / 640, top / 480, (left + 96) / 640, (top + 96) / 480)
    frame = Frame(belt_with_stain(top, left), T0, 1)
    [(roi, in_roi), (_, in_full)] = predict_rois(demo_predictor, frame, (QUADRANT, FULL_FRAME))
    assert roi is QUADRANT
    assert in_roi, "the stain inside the ROI was not found"
    assert in_full
    for prediction in in_roi:
        assert prediction.tag_name == "stain" and prediction.probability > 0.5
        box = prediction.bounding_box
        assert box is not None
        # Full-frame coordinates, inside the quadrant ...
        assert box.left >= 0.5 - 1e-6 and box.top >= 0.5 - 1e-6
        assert box.left + box.width <= 1.0 + 1e-6 and box.top + box.height <= 1.0 + 1e-6
        # ... and on the stain (its centre within the stain, give or take half a cell).
        cx, cy = box.left + box.width / 2, box.top + box.height / 2
        assert stain[0] - 0.05 <= cx <= stain[2] + 0.05, (cx, stain)
        assert stain[1] - 0.07 <= cy <= stain[3] + 0.07, (cy, stain)

    # The same stain seen on the whole frame lands in the same place.
    def centre(predictions: tuple[Prediction, ...]) -> tuple[float, float]:
        boxes = [p.bounding_box for p in predictions if p.bounding_box is not None]
        return (
            float(np.mean([b.left + b.width / 2 for b in boxes])),
            float(np.mean([b.top + b.height / 2 for b in boxes])),
        )

    assert centre(in_roi) == pytest.approx(centre(in_full), abs=0.05)
    assert centre(in_roi) == pytest.approx(((stain[0] + stain[2]) / 2, (stain[1] + stain[3]) / 2), abs=0.05)


def test_predict_rois_on_the_demo_model_ignores_a_stain_outside_the_roi(demo_predictor: Predictor) -> None:
    frame = Frame(belt_with_stain(40, 60), T0, 1)  # top-left quadrant
    [(_, in_roi), (_, in_full)] = predict_rois(demo_predictor, frame, (QUADRANT, FULL_FRAME))
    assert in_roi == ()
    assert in_full and all(p.bounding_box is not None and p.bounding_box.left < 0.5 for p in in_full)


def test_predict_rois_clean_belt_finds_nothing(demo_predictor: Predictor) -> None:
    frame = Frame(np.full((480, 640, 3), BELT_GREY, np.uint8), T0, 1)
    assert [p for _, p in predict_rois(demo_predictor, frame, (QUADRANT, FULL_FRAME))] == [(), ()]
