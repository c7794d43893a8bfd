"""Detectors end to end on synthetic exports: bytes -> Predictor -> predictions, expected values worked
out by hand: the General (compact) YOLO grid, [S1] SSD, and OpenVINO NoPostProcess exports (RegionYolo, raw
S1 outputs)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import synthetic
from synthetic import (
    cpu_options,
    encode,
    logit,
    pattern_image,
    sigmoid,
    softmax,
)

from edge_runtime.domain import Prediction, Task
from edge_runtime.engine import Predictor
from edge_runtime.model.loader import load_spec
from edge_runtime.model.spec import DEFAULT_YOLO_ANCHORS, ModelFormat, Postprocess, Resize

# ============================================================================== YOLO grid (General compact)

YOLO_LABELS = ("bolt", "nut")
PER_ANCHOR = 5 + len(YOLO_LABELS)
ROWS, COLS = 14, 19  # a 640x480 image -> 608x448 (pixel count 512^2, align 32) -> 14 x 19 cells
OFF = -12.0  # objectness logit of every cell we do not set: sigmoid(-12) * 0.5 = 3e-6, far below 0.10
BIG = (math.log(3 / 1.87), math.log(3 / 2.06))  # tw, th making an anchor-1 box exactly 3 x 3 cells


@dataclass(frozen=True)
class Cell:
    row: int
    col: int
    anchor: int
    tx: float = 0.0
    ty: float = 0.0
    tw: float = 0.0
    th: float = 0.0
    obj: float = OFF
    classes: tuple[float, float] = (0.0, 0.0)

    def probs(self) -> list[float]:
        objectness = sigmoid(self.obj)
        return [objectness * p for p in softmax(self.classes)]

    def box(self, anchors: tuple[tuple[float, float], ...]) -> tuple[float, float, float, float]:
        """(left, top, width, height) before clipping, the export's formulas."""
        x = (sigmoid(self.tx) + self.col) / COLS
        y = (sigmoid(self.ty) + self.row) / ROWS
        w = math.exp(self.tw) * anchors[self.anchor][0] / COLS
        h = math.exp(self.th) * anchors[self.anchor][1] / ROWS
        return x - w / 2, y - h / 2, w, h


def objectness_for(prob: float, classes: tuple[float, float], cls: int) -> float:
    """The objectness logit that makes class `cls` score exactly `prob`."""
    return logit(prob / softmax(classes)[cls])


def big(row: int, col: int, prob: float, classes: tuple[float, float], cls: int = 0) -> Cell:
    return Cell(row, col, 1, tw=BIG[0], th=BIG[1], obj=objectness_for(prob, classes, cls), classes=classes)


CELLS = {
    # a plain detection with every box parameter set
    "P1": Cell(2, 3, 0, tx=1.0, ty=-0.5, tw=math.log(2), th=0.3, obj=2.0, classes=(3.0, 0.0)),
    # class 1 wins
    "P2": Cell(9, 11, 2, obj=0.5, classes=(0.0, 3.0)),
    # bottom-right cell, biggest anchor: runs past the image -> clipped; its class 1 (0.276) comes back later
    "P3": Cell(13, 18, 4, obj=1.0, classes=(0.5, 0.0)),
    # just below / just above the 0.10 threshold
    "P4": Cell(5, 15, 1, obj=logit(0.0995), classes=(0.0, -10.0)),
    "P5": Cell(9, 1, 1, obj=logit(0.1005), classes=(0.0, -10.0)),
    # same class, neighbours (IoU 0.5 > 0.45): only P6 survives
    "P6": big(11, 5, 0.6, (5.0, 0.0)),
    "P7": big(11, 6, 0.5, (5.0, 0.0)),
    # neighbours with different best classes: both survive (top row: boxes clipped at the top)
    "P8": big(0, 13, 0.7, (5.0, 0.0)),
    "P9": big(0, 14, 0.65, (0.0, 5.0), cls=1),
    # P11 loses class 0 to P10 and re-enters with its next-best class
    "P10": big(4, 7, 0.8, (4.0, 0.0)),
    "P11": Cell(4, 8, 1, tw=BIG[0], th=BIG[1], obj=logit(0.9), classes=(0.2, 0.0)),
}

# Worked out by hand from the export's algorithm: (cell, class) in selection order. Ten candidates
# (P1-P3, P5-P11) -> at most ten NMS rounds, all used.
EXPECTED_ORDER = [
    ("P1", 0),  # 0.839
    ("P10", 0),  # 0.800  (zeroes class 0 of P11)
    ("P8", 0),  # 0.700  (zeroes class 0 of P9, whose best is class 1 anyway)
    ("P9", 1),  # 0.650
    ("P6", 0),  # 0.600  (suppresses P7: its class 1 is 0.003)
    ("P2", 1),  # 0.593
    ("P3", 0),  # 0.455
    ("P11", 1),  # 0.405  re-entered
    ("P3", 1),  # 0.276  the selected box itself, again, with its other class
    ("P5", 0),  # 0.1005 just above the threshold; P4 (0.0995) never is a candidate
]


def yolo_grid() -> np.ndarray:
    grid = np.zeros((1, 5 * PER_ANCHOR, ROWS, COLS), np.float32)
    grid[0, 4::PER_ANCHOR] = OFF
    for cell in CELLS.values():
        values = [cell.tx, cell.ty, cell.tw, cell.th, cell.obj, *cell.classes]
        for k, value in enumerate(values):
            grid[0, cell.anchor * PER_ANCHOR + k, cell.row, cell.col] = value
    return grid


def clip(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    left, top = min(max(box[0], 0.0), 1.0), min(max(box[1], 0.0), 1.0)
    right, bottom = min(max(box[0] + box[2], 0.0), 1.0), min(max(box[1] + box[3], 0.0), 1.0)
    return left, top, right - left, bottom - top


def as_tuple(p: Prediction) -> tuple[float, float, float, float]:
    assert p.bounding_box is not None
    b = p.bounding_box
    return b.left, b.top, b.width, b.height


DOUBLED = tuple(v * 2 for pair in DEFAULT_YOLO_ANCHORS for v in pair)


@pytest.fixture(scope="module")
def yolo_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("yolo")
    model = synthetic.yolo_model(len(YOLO_LABELS), grid=yolo_grid())
    return {
        "default": synthetic.write_export(
            root / "default",
            model,
            YOLO_LABELS,
            domain_type="ObjectDetection",
            metadata=synthetic.yolo_sidecar(biases=()),
        ),
        "doubled": synthetic.write_export(
            root / "doubled",
            model,
            YOLO_LABELS,
            domain_type="ObjectDetection",
            metadata=synthetic.yolo_sidecar(biases=DOUBLED),
        ),
    }


@pytest.fixture(scope="module")
def yolo_predictor(yolo_exports: dict[str, Path]) -> Predictor:
    return Predictor.load(yolo_exports["default"], cpu_options())


@pytest.fixture(scope="module")
def photo_640x480() -> bytes:
    return encode(pattern_image(640, 480, seed=9), "JPEG")


def test_yolo_spec(yolo_predictor: Predictor) -> None:
    spec = yolo_predictor.spec
    assert spec.task is Task.DETECTION and spec.postprocess is Postprocess.YOLO
    assert spec.preprocess.resize is Resize.PIXEL_COUNT_ALIGN32
    assert spec.preprocess.resize_target == (512, 512)
    assert spec.preprocess.input_size is None
    assert spec.preprocess.bgr is True and spec.preprocess.scale == 1.0
    assert spec.detection.prob_threshold == 0.10
    assert spec.detection.max_detections == 20
    assert spec.detection.iou_threshold == 0.45
    assert spec.detection.anchors == DEFAULT_YOLO_ANCHORS  # Biases "[]" -> the export's hard-coded anchors


def test_yolo_detections_match_the_hand_computed_list(
    yolo_predictor: Predictor, photo_640x480: bytes
) -> None:
    result = yolo_predictor.predict_bytes(photo_640x480)
    assert result.task is Task.DETECTION
    assert result.image_size == (640, 480)
    got = result.predictions
    assert [(p.tag_name, p.tag_id) for p in got] == [(YOLO_LABELS[c], c) for _, c in EXPECTED_ORDER]
    for prediction, (name, cls) in zip(got, EXPECTED_ORDER, strict=True):
        cell = CELLS[name]
        assert prediction.probability == pytest.approx(cell.probs()[cls], abs=1e-6), name
        assert as_tuple(prediction) == pytest.approx(clip(cell.box(DEFAULT_YOLO_ANCHORS)), abs=1e-6), name
    probabilities = [p.probability for p in got]
    # selection order, which for this grid is also descending probability
    assert probabilities == sorted(probabilities, reverse=True)
    assert min(probabilities) > 0.10


def test_yolo_hand_values_spot_checks(yolo_predictor: Predictor, photo_640x480: bytes) -> None:
    got = yolo_predictor.predict_bytes(photo_640x480).predictions
    # P1 written out in full: x = (sigmoid(1) + 3) / 19, w = 2 * 0.573 / 19, y = (sigmoid(-.5) + 2) / 14 ...
    x, y = (1 / (1 + math.exp(-1.0)) + 3) / 19, (1 / (1 + math.exp(0.5)) + 2) / 14
    w, h = 2 * 0.573 / 19, math.exp(0.3) * 0.677 / 14
    p1 = got[0]
    assert as_tuple(p1) == pytest.approx((x - w / 2, y - h / 2, w, h), abs=1e-6)
    e3 = math.exp(3.0)
    assert p1.probability == pytest.approx(1 / (1 + math.exp(-2.0)) * e3 / (e3 + 1), abs=1e-6)
    # P3 (bottom-right, anchor 9.77 x 9.17 cells) ends at the image border.
    p3 = got[6]
    left, top, width, height = as_tuple(p3)
    assert left + width == pytest.approx(1.0) and top + height == pytest.approx(1.0)
    assert left == pytest.approx((18.5 - 9.77 / 2) / 19, abs=1e-6)
    # P8 (top row) starts above the image -> clipped to 0.
    assert as_tuple(got[2])[1] == 0.0
    assert as_tuple(got[2])[3] == pytest.approx(2 / 14, abs=1e-6)
    # P7 never appears: it overlaps P6 (IoU 0.5) with the same class.
    assert not any(
        as_tuple(p)[0] == pytest.approx(clip(CELLS["P7"].box(DEFAULT_YOLO_ANCHORS))[0], abs=1e-6) for p in got
    )


def test_yolo_anchors_come_from_the_sidecar_biases(
    yolo_exports: dict[str, Path], photo_640x480: bytes
) -> None:
    predictor = Predictor.load(yolo_exports["doubled"], cpu_options())
    anchors = tuple(zip(DOUBLED[0::2], DOUBLED[1::2], strict=True))
    assert np.allclose(predictor.spec.detection.anchors, anchors, rtol=0, atol=1e-12)
    got = predictor.predict_bytes(photo_640x480).predictions
    # P2 (tw = th = 0): the box is exactly the (doubled) anchor-2 size.
    p2 = next(p for p in got if p.tag_id == 1 and p.probability == pytest.approx(CELLS["P2"].probs()[1]))
    assert as_tuple(p2) == pytest.approx(clip(CELLS["P2"].box(anchors)), abs=1e-6)
    assert as_tuple(p2)[2] == pytest.approx(2 * 3.34 / 19, abs=1e-6)


def test_yolo_precise_custom_vision_biases_move_boxes_slightly(tmp_path: Path, photo_640x480: bytes) -> None:
    folder = synthetic.write_export(
        tmp_path / "precise",
        synthetic.yolo_model(len(YOLO_LABELS), grid=yolo_grid()),
        YOLO_LABELS,
        domain_type="ObjectDetection",
        metadata=synthetic.yolo_sidecar(),  # the 0.57273, 0.677385, ... values real sidecars carry
    )
    predictor = Predictor.load(folder, cpu_options())
    anchors = tuple(
        zip(synthetic.CUSTOM_VISION_BIASES[0::2], synthetic.CUSTOM_VISION_BIASES[1::2], strict=True)
    )
    assert np.allclose(predictor.spec.detection.anchors, anchors, rtol=0, atol=1e-12)
    p1 = predictor.predict_bytes(photo_640x480).predictions[0]
    assert as_tuple(p1) == pytest.approx(clip(CELLS["P1"].box(anchors)), abs=1e-6)
    assert as_tuple(p1) != pytest.approx(clip(CELLS["P1"].box(DEFAULT_YOLO_ANCHORS)), abs=1e-5)


def uniform_yolo_bias() -> np.ndarray:
    """Every cell: anchor 0 fires (0.95, class 0), boxes half a cell wide (no overlaps); other anchors off."""
    bias = np.zeros(5 * PER_ANCHOR, np.float32)
    bias[4::PER_ANCHOR] = OFF
    bias[2] = math.log(0.5 / DEFAULT_YOLO_ANCHORS[0][0])
    bias[3] = math.log(0.5 / DEFAULT_YOLO_ANCHORS[0][1])
    bias[4] = 3.0
    bias[6] = -10.0  # class 1 logit
    return bias


@pytest.fixture(scope="module")
def uniform_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_export(
        tmp_path_factory.mktemp("uniform") / "export",
        synthetic.yolo_model(len(YOLO_LABELS), channel_bias=uniform_yolo_bias()),
        YOLO_LABELS,
        domain_type="ObjectDetection",
        metadata=synthetic.yolo_sidecar(biases=()),
    )


@pytest.mark.parametrize(("width", "height", "cols"), [(100, 80, 18), (640, 480, 19), (480, 640, 14)])
def test_yolo_grid_follows_the_input_and_keeps_20(
    uniform_yolo: Path, width: int, height: int, cols: int
) -> None:
    # 100x80 -> 576x480 -> 18 x 15 cells; 640x480 -> 19 x 14; 480x640 -> 14 x 19. Every cell scores the same,
    # so the export keeps the first 20 in row-major order.
    predictor = Predictor.load(uniform_yolo, cpu_options())
    got = predictor.predict_bytes(encode(pattern_image(width, height, seed=1), "PNG")).predictions
    assert len(got) == 20
    expected_prob = sigmoid(3.0) * softmax([0.0, -10.0])[0]
    assert all(p.probability == pytest.approx(expected_prob, abs=1e-6) and p.tag_id == 0 for p in got)
    rows = 32 * math.ceil(int(height * math.sqrt(512 * 512 / (width * height))) / 32) // 32
    for k, p in enumerate(got):
        row, col = divmod(k, cols)
        left, top, w, h = as_tuple(p)
        assert left + w / 2 == pytest.approx((col + 0.5) / cols, abs=1e-6)
        assert top + h / 2 == pytest.approx((row + 0.5) / rows, abs=1e-6)
        assert w == pytest.approx(0.5 / cols, abs=1e-6)


def test_yolo_without_sidecar_but_with_manifest(tmp_path: Path) -> None:
    # 2019 detection exports have a manifest and no metadata_properties.json: YOLO, 512 x 512 pixel target.
    folder = synthetic.write_export(
        tmp_path / "od2019",
        synthetic.yolo_model(len(YOLO_LABELS), channel_bias=uniform_yolo_bias(), metadata=None),
        YOLO_LABELS,
        domain_type="ObjectDetection",
    )
    predictor = Predictor.load(folder, cpu_options())
    assert predictor.spec.postprocess is Postprocess.YOLO
    assert predictor.spec.preprocess.resize_target == (512, 512)
    assert predictor.spec.preprocess.bgr is True and predictor.spec.preprocess.scale == 1.0  # YOLO default
    assert predictor.spec.detection.anchors == DEFAULT_YOLO_ANCHORS


def test_yolo_without_manifest_uses_the_512_pixel_target(tmp_path: Path) -> None:
    folder = synthetic.write_export(
        tmp_path / "bare",
        synthetic.yolo_model(len(YOLO_LABELS), channel_bias=uniform_yolo_bias()),
        YOLO_LABELS,
        manifest=False,
    )
    predictor = Predictor.load(folder, cpu_options())
    assert predictor.spec.postprocess is Postprocess.YOLO  # recognised from the 4-D output alone
    assert predictor.spec.preprocess.resize is Resize.PIXEL_COUNT_ALIGN32
    got = predictor.predict_bytes(encode(pattern_image(640, 480, seed=1), "PNG")).predictions
    first = as_tuple(got[0])
    # 640x480 -> 608x448 -> 19 columns: the first cell's box is centred at 0.5 / 19.
    assert first[0] + first[2] / 2 == pytest.approx(0.5 / 19, abs=1e-6)
    assert predictor.spec.preprocess.resize_target == (512, 512)


def test_yolo_fp16_model_matches_fp32(
    tmp_path: Path, photo_640x480: bytes, yolo_predictor: Predictor
) -> None:
    folder = synthetic.write_export(
        tmp_path / "fp16",
        synthetic.yolo_model(len(YOLO_LABELS), grid=yolo_grid(), fp16=True),
        YOLO_LABELS,
        domain_type="ObjectDetection",
        metadata=synthetic.yolo_sidecar(biases=()),
        flavor="ONNXFloat16",
    )
    predictor = Predictor.load(folder, cpu_options())
    assert predictor.spec.preprocess.float16 is True
    half = predictor.predict_bytes(photo_640x480).predictions
    full = yolo_predictor.predict_bytes(photo_640x480).predictions
    assert [(p.tag_id, p.tag_name) for p in half] == [(p.tag_id, p.tag_name) for p in full]
    for a, b in zip(half, full, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-3)
        assert as_tuple(a) == pytest.approx(as_tuple(b), abs=1e-3)


# ============================================================================== [S1] detection (SSD)

SSD_LABELS = ("car", "bus", "bike")
SSD_BOXES = [
    [0.1, 0.2, 0.4, 0.6],  # 0.30 bus
    [0.5, 0.5, 1.2, 0.9],  # 0.90 car: x2 past the border
    [0.0, 0.0, 0.5, 0.5],  # 0.005 -> below 0.01, dropped
    [-0.1, -0.05, 0.3, 0.25],  # 0.50 bike: starts outside the image
    [0.7, 0.1, 0.8, 0.2],  # 0.02 car: just above 0.01
]
SSD_SCORES = [0.3, 0.9, 0.005, 0.5, 0.02]
SSD_CLASSES = [1, 0, 0, 2, 0]


@pytest.fixture(scope="module")
def ssd_predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    folder = synthetic.write_export(
        tmp_path_factory.mktemp("ssd") / "export",
        synthetic.ssd_model(SSD_BOXES, SSD_SCORES, SSD_CLASSES),
        SSD_LABELS,
        domain_type="ObjectDetection",
        metadata=synthetic.sidecar("SSD", "Stretch", 320),
    )
    return Predictor.load(folder, cpu_options())


def test_ssd_spec(ssd_predictor: Predictor) -> None:
    spec = ssd_predictor.spec
    assert spec.task is Task.DETECTION and spec.postprocess is Postprocess.SSD
    assert spec.domain == "General (compact) [S1]"
    assert spec.input.name == "image_tensor"
    assert spec.preprocess.resize is Resize.STRETCH
    assert spec.preprocess.input_size == (320, 320) and spec.preprocess.resize_target == (320, 320)
    assert spec.preprocess.bgr is False and spec.preprocess.scale == 1.0  # [S1]: RGB 0..255
    assert spec.detection.prob_threshold == 0.01
    assert [o.dtype for o in spec.outputs] == ["float32", "float32", "int64"]


def test_ssd_predictions(ssd_predictor: Predictor) -> None:
    result = ssd_predictor.predict_bytes(encode(pattern_image(500, 200, seed=2), "JPEG"))
    got = [(p.tag_name, p.tag_id, round(p.probability, 6), as_tuple(p)) for p in result.predictions]
    expected = [
        ("car", 0, 0.9, (0.5, 0.5, 0.5, 0.4)),
        ("bike", 2, 0.5, (0.0, 0.0, 0.3, 0.25)),
        ("bus", 1, 0.3, (0.1, 0.2, 0.3, 0.4)),
        ("car", 0, 0.02, (0.7, 0.1, 0.1, 0.1)),
    ]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g[3] == pytest.approx(e[3], abs=1e-6)


# ============================================================================== OpenVINO NoPostProcess


@pytest.fixture(scope="module")
def region_yolo_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Every cell: anchor 0 objectness sigmoid(3), classes softmax(2, 0), boxes half a cell; other anchors off.
    bias = np.zeros(5 * PER_ANCHOR, np.float32)
    bias[4::PER_ANCHOR] = OFF
    bias[2] = math.log(0.5 / DEFAULT_YOLO_ANCHORS[0][0])
    bias[3] = math.log(0.5 / DEFAULT_YOLO_ANCHORS[0][1])
    bias[4] = 3.0
    bias[5] = 2.0
    return synthetic.region_yolo_ir_export(
        tmp_path_factory.mktemp("region") / "export", YOLO_LABELS, bias, DEFAULT_YOLO_ANCHORS
    )


def test_openvino_nopostprocess_yolo_spec(region_yolo_export: Path) -> None:
    spec = load_spec(region_yolo_export)
    assert spec.format is ModelFormat.OPENVINO
    assert spec.postprocess is Postprocess.YOLO_ACTIVATED
    assert spec.task is Task.DETECTION
    # Anchors come from the RegionYolo layer (stored as float32 in the IR).
    assert np.allclose(spec.detection.anchors, DEFAULT_YOLO_ANCHORS, atol=1e-6)
    assert (spec.detection.prob_threshold, spec.detection.max_detections) == (0.01, 64)
    assert spec.preprocess.input_size == (416, 416) and spec.preprocess.resize is Resize.STRETCH


def test_openvino_nopostprocess_yolo_predicts(region_yolo_export: Path) -> None:
    predictor = Predictor.load(region_yolo_export, cpu_options("openvino:CPU"))
    got = predictor.predict_bytes(encode(pattern_image(320, 240, seed=4), "PNG")).predictions
    assert len(got) == 64  # 169 cells score (almost exactly) the same; the NMS keeps 64
    expected = sigmoid(3.0) * softmax([2.0, 0.0])[0]
    cells = set()
    for p in got:
        left, top, width, height = as_tuple(p)
        assert p.tag_name == "bolt" and p.probability == pytest.approx(expected, abs=5e-3)
        col, row = (left + width / 2) * 13 - 0.5, (top + height / 2) * 13 - 0.5  # centred on a 13 x 13 cell
        assert col == pytest.approx(round(col), abs=1e-2) and row == pytest.approx(round(row), abs=1e-2)
        assert width == pytest.approx(0.5 / 13, abs=1e-3) and height == pytest.approx(0.5 / 13, abs=1e-3)
        cells.add((round(row), round(col)))
    assert len(cells) == 64 and all(0 <= r < 13 and 0 <= c < 13 for r, c in cells)


def test_openvino_nopostprocess_s1_raw_outputs(tmp_path: Path) -> None:
    onnx_dir = synthetic.write_export(
        tmp_path / "onnx",
        synthetic.raw_ssd_model(
            [[0.5, 0.5, 0.2, 0.4], [0.52, 0.5, 0.2, 0.4], [0.9, 0.1, 0.4, 0.4]],
            [[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.3, 0.05, 0.65]],  # column 0: background
        ),
        ("fish", "crab"),
    )
    folder = synthetic.save_openvino_ir(onnx_dir / "model.onnx", tmp_path / "ir", ("fish", "crab"))
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest.update(DomainType="ObjectDetection", Flavor="NoPostProcess")
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    predictor = Predictor.load(folder, cpu_options("openvino:CPU"))
    spec = predictor.spec
    assert spec.postprocess is Postprocess.SSD_RAW and spec.task is Task.DETECTION
    assert (spec.detection.prob_threshold, spec.detection.iou_threshold, spec.detection.max_detections) == (
        0.01,
        0.5,
        64,
    )
    got = predictor.predict_bytes(encode(pattern_image(64, 64, seed=1), "PNG")).predictions
    # Box 1 overlaps box 0 (IoU 0.82 > 0.5) and loses "fish"; box 0 and box 1 both keep "crab" 0.1 but box 0
    # comes first and takes box 1's "crab" with it; box 2 (crab 0.65) is on its own, clipped at the right.
    names = [(p.tag_name, round(p.probability, 2)) for p in got]
    assert names == [("fish", 0.8), ("crab", 0.65), ("crab", 0.1)]
    assert as_tuple(got[0]) == pytest.approx((0.4, 0.3, 0.2, 0.4), abs=2e-3)
    assert as_tuple(got[1]) == pytest.approx((0.7, 0.0, 0.3, 0.3), abs=2e-3)
