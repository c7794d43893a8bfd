"""AutoML for Images detectors per the documented ONNX contract, on constant-output graphs whose expected
boxes are worked out by hand through the letterbox (YOLOv5) or the stretch (Faster R-CNN, RetinaNet,
Mask R-CNN), so the decode is tested independently of any network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from layout_graphs import automl_box_lists, automl_yolo, constant_outputs, write_folder
from onnx import TensorProto, helper
from PIL import Image
from rounded_predictions import rounded
from synthetic import cpu_options

from edge_runtime.domain import Task
from edge_runtime.engine import Predictor
from edge_runtime.errors import ModelLoadError
from edge_runtime.model.loader import load_spec
from edge_runtime.model.spec import Postprocess, Resample, Resize
from edge_runtime.model_card import ModelCard

LABELS = ("can", "bottle")
# Rows in input pixels of a 640 x 640 letterbox: cx, cy, w, h, objectness, P(can), P(bottle).
ROWS = np.array(
    [
        [320, 320, 64, 48, 0.9, 0.2, 0.8],  # A: bottle 0.72
        [320, 320, 64, 48, 0.9, 0.7, 0.3],  # B: can 0.63 on A's place: another class, kept
        [324, 320, 64, 48, 0.7, 0.1, 0.9],  # C: bottle 0.63, IoU 0.88 with A: suppressed
        [100, 500, 30, 30, 0.5, 0.15, 0.1],  # D: 0.075 < 0.1: dropped
        [320, 90, 40, 40, 0.95, 0.9, 0.1],  # E: can 0.855, its top 10 px in the padding
    ],
    np.float32,
)


def load_refusal(root: Path, match: str) -> str:
    """The file load_spec(root) names when it refuses the folder with a ModelLoadError matching `match`."""
    with pytest.raises(ModelLoadError, match=match) as info:
        load_spec(root)
    return info.value.path


@pytest.fixture
def yolo(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "yolo", automl_yolo(ROWS), LABELS)


def test_yolov5_spec(yolo: Path) -> None:
    spec = load_spec(yolo)
    assert (spec.task, spec.postprocess, spec.domain) == (
        Task.DETECTION,
        Postprocess.OBJECTNESS,
        "AutoML for Images: YOLOv5",
    )
    recipe = spec.preprocess
    assert (recipe.resize, recipe.input_size, recipe.resample) == (
        Resize.LETTERBOX_NO_UPSCALE,
        (640, 640),
        Resample.CV2_LINEAR,
    )
    assert (recipe.bgr, recipe.scale, recipe.mean, recipe.std, recipe.batch) == (
        False,
        1 / 255,
        (0.0,) * 3,
        (1.0,) * 3,
        1,
    )
    params = spec.detection
    assert (params.prob_threshold, params.iou_threshold, params.max_detections) == (0.1, 0.5, 300)
    assert spec.decoder_outputs == ("output",)  # the first output; the per-scale heads are ignored


def test_yolov5_boxes_through_the_letterbox_by_hand(yolo: Path) -> None:
    predictor = Predictor.load(yolo, cpu_options())
    # 1280 x 960: r = 0.5 -> 640 x 480 at top 80. A: x 288..352, y 296..344 -> (288, 216)/(640, 480)
    got = rounded(predictor.predict_image(Image.new("RGB", (1280, 960))).predictions)
    assert got == [
        ("can", 0, 0.855, (0.46875, 0.0, 0.0625, 0.0625)),  # E: y 70..110 - 80 = -10..30, clipped at 0
        ("bottle", 1, 0.72, (0.45, 0.45, 0.1, 0.1)),
        ("can", 0, 0.63, (0.45, 0.45, 0.1, 0.1)),
    ]
    # 320 x 240 is not scaled up: centred at (160, 200). A: x 288..352 - 160 = 128..192 over 320,
    # y 296..344 - 200 = 96..144 over 240
    small = rounded(predictor.predict_image(Image.new("RGB", (320, 240))).predictions)
    assert small[1] == ("bottle", 1, 0.72, (0.4, 0.4, 0.2, 0.2))


def test_thresholds_come_from_settings_json_and_configuration_wins(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "y", automl_yolo(ROWS), LABELS, settings={"box_score_thresh": 0.7, "nms_iou_thresh": 0.95}
    )
    spec = load_spec(root)
    assert (spec.detection.prob_threshold, spec.detection.iou_threshold) == (0.7, 0.95)
    image = Image.new("RGB", (1280, 960))
    # 0.7: only E (0.855) and A (0.72); IoU 0.95 would keep C, but C (0.63) is under 0.7 anyway
    assert [
        p.probability for p in Predictor.load(root, cpu_options()).predict_image(image).predictions
    ] == pytest.approx([0.855, 0.72])
    configured = Predictor.load(root, cpu_options(score_threshold=0.5, max_detections=3))
    # configuration: 0.5 lets B and C in; settings.json's IoU 0.95 keeps C beside A
    assert [p.probability for p in configured.predict_image(image).predictions] == pytest.approx(
        [0.855, 0.72, 0.63]
    )


def test_at_most_300_detections(tmp_path: Path) -> None:
    rows = np.array(
        [[8 + 16 * (i % 40), 8 + 16 * (i // 40), 10, 10, 0.9, 0.9, 0.0] for i in range(400)], np.float32
    )
    root = write_folder(tmp_path / "y", automl_yolo(rows), LABELS)
    assert (
        len(Predictor.load(root, cpu_options()).predict_image(Image.new("RGB", (640, 640))).predictions)
        == 300
    )


def test_yolov5_wrong_label_count_names_labels_json(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "y", automl_yolo(ROWS), ("a", "b", "c"))
    named = load_refusal(root, "3 labels, but the model's outputs fit objectness with 2 classes")
    assert named == str(root / "labels.json")


def test_yolov5_fixed_batch(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "y", automl_yolo(ROWS, batch=2), LABELS)
    predictor = Predictor.load(root, cpu_options())
    assert predictor.spec.preprocess.batch == 2 and "fixed batch 2" in predictor.spec.preprocess.describe()
    assert len(predictor.predict_image(Image.new("RGB", (1280, 960))).predictions) == 3


def test_yolov5_fixed_batch_mismatch_names_the_model(tmp_path: Path) -> None:
    rows = np.repeat(ROWS[None], 2, axis=0)
    model = constant_outputs(
        helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 3, 640, 640]),
        [("output", rows, [3, 5, 7])],
    )
    root = write_folder(tmp_path / "y", model, LABELS)
    named = load_refusal(root, "fixed batch mismatch: input 'input' takes 2 images but output 'output' has 3")
    assert named == str(root / "model.onnx")


# ----------------------------------------------------------------------- Faster R-CNN, RetinaNet, Mask R-CNN

RCNN_LABELS = ("--bg--", "scratch", "dent")  # class ids index labels.json directly
BOXES = [[80, 60, 240, 180], [400, 300, 880, 700], [0, 0, 8, 6]]  # x1, y1, x2, y2 in 800 x 600 input pixels
CLASSES = [1, 2, 2]
SCORES = [0.9, 0.5, 0.2]  # 0.2 < box_score_thresh 0.3
EXPECTED = [
    ("scratch", 1, 0.9, (0.1, 0.1, 0.2, 0.2)),
    ("dent", 2, 0.5, (0.5, 0.5, 0.5, 0.5)),  # x2 = 880 / 800 > 1: clipped
]


@pytest.mark.parametrize(
    ("order", "masks", "variant"),
    [
        (("boxes", "labels", "scores"), False, "Faster R-CNN"),
        (("boxes", "scores", "labels"), False, "RetinaNet"),
        (("boxes", "labels", "scores"), True, "Mask R-CNN"),
    ],
)
def test_box_lists_by_hand(tmp_path: Path, order: tuple[str, ...], masks: bool, variant: str) -> None:
    model = automl_box_lists(
        BOXES, CLASSES, SCORES, order=order, masks=masks, size=None if masks else (800, 600)
    )
    root = write_folder(
        tmp_path / "rcnn", model, RCNN_LABELS, settings={"model_name": "fasterrcnn_resnet50_fpn"}
    )
    predictor = Predictor.load(root, cpu_options())
    spec = predictor.spec
    assert spec.postprocess is Postprocess.BOX_LISTS and spec.domain.startswith(
        f"AutoML for Images: {variant} ("
    )
    assert spec.decoder_outputs == ("boxes_0", "labels_0", "scores_0")
    recipe = spec.preprocess
    assert (recipe.resize, recipe.input_size, recipe.resample) == (
        Resize.STRETCH,
        (800, 600),
        Resample.BICUBIC,
    )
    assert (recipe.mean, recipe.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (spec.detection.prob_threshold, spec.detection.max_detections) == (0.3, 100)
    assert rounded(predictor.predict_image(Image.new("RGB", (1000, 700))).predictions) == EXPECTED
    if masks:
        assert any("masks are not returned" in note for note in spec.notes)
        assert any("dynamic" in note for note in spec.notes)


def test_box_lists_settings(tmp_path: Path) -> None:
    model = automl_box_lists(BOXES, CLASSES, SCORES)
    root = write_folder(
        tmp_path / "r", model, RCNN_LABELS, settings={"box_score_threshold": 0.1, "box_detections_per_img": 1}
    )
    predictions = Predictor.load(root, cpu_options()).predict_image(Image.new("RGB", (80, 60))).predictions
    assert [p.tag_name for p in predictions] == ["scratch"]  # at most 1


def test_box_lists_fixed_batch(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "r", automl_box_lists(BOXES, CLASSES, SCORES, batch=2), RCNN_LABELS)
    predictor = Predictor.load(root, cpu_options())
    assert predictor.spec.preprocess.batch == 2
    assert rounded(predictor.predict_image(Image.new("RGB", (1000, 700))).predictions) == EXPECTED


def test_box_lists_fixed_batch_mismatch(tmp_path: Path) -> None:
    model = automl_box_lists(BOXES, CLASSES, SCORES, batch=2, input_batch=4)
    root = write_folder(tmp_path / "r", model, RCNN_LABELS)
    named = load_refusal(root, "fixed batch mismatch: input 'input' takes 4 images but the outputs are for 2")
    assert named == str(root / "model.onnx")


def test_box_lists_incomplete_batch(tmp_path: Path) -> None:
    model = automl_box_lists(BOXES, CLASSES, SCORES, batch=2)
    kept = [o for o in model.graph.output if o.name != "labels_1"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.checker.check_model(model)
    root = write_folder(tmp_path / "r", model, RCNN_LABELS)
    named = load_refusal(root, r"image 1 has \['boxes', 'scores'\], expected")
    assert named == str(root / "model.onnx")


def test_a_label_id_outside_labels_json_fails_the_warm_up(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "r", automl_box_lists(BOXES, [1, 7, 2], SCORES), RCNN_LABELS)
    with pytest.raises(ModelLoadError, match="class 7 but there are 3 labels"):
        Predictor.load(root, cpu_options())


def test_the_model_card(yolo: Path) -> None:
    card = ModelCard.of(Predictor.load(yolo, cpu_options())).to_dict()
    assert (card["format"], card["postprocess"]) == ("onnx", "objectness")
    assert str(card["decoder"]).startswith("[B, N, 5+C] cx,cy,w,h in input pixels, objectness x best class")
    assert str(card["preprocessing"]).startswith(
        "letterbox-no-upscale (target 640x640, input 640x640, cv2-linear)"
    )
    assert card["detection"] == {
        "prob_threshold": 0.1,
        "iou_threshold": 0.5,
        "max_detections": 300,
        "anchors": [],
    }
    assert "no settings.json: AutoML's documented defaults are used" in card["notes"]  # type: ignore[operator]
