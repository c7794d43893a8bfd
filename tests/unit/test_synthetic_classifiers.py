"""Classifiers end to end on synthetic exports: bytes -> Predictor -> predictions, expected values worked
out by hand: activations, export defaults, FP16 models, and OpenVINO (IR exports, the OpenVINO runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import synthetic
from onnx import numpy_helper
from PIL import Image
from synthetic import (
    CLASSIFIER_LABELS,
    cpu_options,
    encode,
    sigmoid,
    softmax,
)

from edge_runtime.backends.providers import BackendKind
from edge_runtime.domain import Task
from edge_runtime.engine import Predictor
from edge_runtime.model.loader import load_spec
from edge_runtime.model.spec import ModelFormat, Postprocess, Resize

# ============================================================================== classification


def model_weights(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return inits["dense_w"].astype(np.float64), inits["dense_b"].astype(np.float64)


COLOUR = (230, 40, 90)


def solid_png(colour: tuple[int, int, int] = COLOUR) -> bytes:
    return encode(Image.new("RGB", (50, 40), colour), "PNG")


def expected_logits(model: onnx.ModelProto, colour: tuple[int, int, int] = COLOUR) -> np.ndarray:
    """The classifier pools the image: a solid RGB colour in 0..1 gives logits = colour @ W + b."""
    weight, bias = model_weights(model)
    return np.asarray(colour, np.float64) / 255.0 @ weight + bias


@pytest.mark.parametrize(
    ("activation", "method", "postprocess"),
    [
        ("softmax", "ClassificationMultiClass", Postprocess.MULTICLASS),
        (None, "ClassificationMultiClass", Postprocess.MULTICLASS),  # logits -> softmax added
        ("sigmoid", "ClassificationMultiLabel", Postprocess.MULTILABEL),
        (None, "ClassificationMultiLabel", Postprocess.MULTILABEL),  # logits -> sigmoid added
    ],
)
def test_classification_activations(
    tmp_path: Path, activation: str | None, method: str, postprocess: Postprocess
) -> None:
    labels = ("l0", "l1", "l2", "l3")
    model = synthetic.classifier_model(len(labels), activation=activation, seed=3)
    folder = synthetic.write_export(
        tmp_path / "cls", model, labels, metadata=synthetic.classification_sidecar(method)
    )
    predictor = Predictor.load(folder, cpu_options())
    assert predictor.spec.postprocess is postprocess
    assert predictor.spec.task is Task.CLASSIFICATION
    logits = expected_logits(model)
    assert logits.min() < 0.0 or logits.max() > 1.0  # really logits, not probabilities
    if postprocess is Postprocess.MULTILABEL:
        expected = [sigmoid(v) for v in logits]
    else:
        expected = softmax(list(logits))
    result = predictor.predict_bytes(solid_png())
    assert [p.tag_name for p in result.predictions] == list(labels)  # labels.txt order, every label
    assert [p.probability for p in result.predictions] == pytest.approx(expected, abs=1e-6)
    assert all(p.tag_id is None and p.bounding_box is None for p in result.predictions)
    if postprocess is Postprocess.MULTILABEL:
        assert sum(expected) != pytest.approx(1.0, abs=1e-3)


def test_classifier_export_defaults(classifier_export: Path) -> None:
    spec = load_spec(classifier_export)
    assert spec.format is ModelFormat.ONNX
    assert spec.labels == CLASSIFIER_LABELS
    assert spec.input.name == "data" and spec.input.shape == (None, 3, 32, 32)
    assert spec.preprocess.resize is Resize.SHORTER_SIDE_TO_INPUT
    assert spec.preprocess.resize_target == (32, 32)
    assert spec.preprocess.bgr is False and spec.preprocess.scale == pytest.approx(1 / 255)
    # The sidecar's 256 -> 224 recipe is noted, not silently dropped.
    assert any("shorter side" in note for note in spec.notes)


# ============================================================================== FP16


@pytest.fixture(scope="module")
def fp_twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("twins")
    return {
        name: synthetic.write_export(
            root / name,
            synthetic.classifier_model(len(CLASSIFIER_LABELS), fp16=name == "fp16"),
            CLASSIFIER_LABELS,
            metadata=synthetic.classification_sidecar(),
            flavor="OnnxFloat16" if name == "fp16" else None,
        )
        for name in ("fp16", "fp32")
    }


def test_fp16_model_is_fed_float16_and_matches_fp32(fp_twins: dict[str, Path], jpeg_of) -> None:  # type: ignore[no-untyped-def]
    half = Predictor.load(fp_twins["fp16"], cpu_options())
    full = Predictor.load(fp_twins["fp32"], cpu_options())
    assert half.spec.input.dtype == "float16" and half.spec.preprocess.float16 is True
    assert full.spec.preprocess.float16 is False
    fed: list[np.dtype] = []
    run = half.backend.run

    def spy(tensor):  # type: ignore[no-untyped-def]
        fed.append(tensor.dtype)
        return run(tensor)

    half.backend.run = spy  # type: ignore[method-assign]
    for seed in range(4):
        data = jpeg_of(120, 90, seed)
        a = half.predict_bytes(data).predictions
        b = full.predict_bytes(data).predictions
        assert [p.tag_name for p in a] == [p.tag_name for p in b]
        assert [p.probability for p in a] == pytest.approx([p.probability for p in b], abs=1e-3)
    assert fed == [np.dtype(np.float16)] * 4


# ============================================================================== OpenVINO


@pytest.fixture(scope="module")
def ov_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("openvino")
    model = synthetic.classifier_model(len(CLASSIFIER_LABELS), seed=5, scale=6.0)
    onnx_dir = synthetic.write_export(
        root / "onnx", model, CLASSIFIER_LABELS, metadata=synthetic.classification_sidecar()
    )
    ir_dir = synthetic.save_openvino_ir(onnx_dir / "model.onnx", root / "ir", CLASSIFIER_LABELS)
    return {"onnx": onnx_dir, "ir": ir_dir}


def _compare(a: Predictor, b: Predictor, jpeg_of, tolerance: float) -> None:  # type: ignore[no-untyped-def]
    for seed in range(5):
        data = jpeg_of(160, 120, seed)
        pa = [p.probability for p in a.predict_bytes(data).predictions]
        pb = [p.probability for p in b.predict_bytes(data).predictions]
        assert int(np.argmax(pa)) == int(np.argmax(pb))
        assert pa == pytest.approx(pb, abs=tolerance)


def test_openvino_ir_export_loads_on_openvino_cpu(ov_exports: dict[str, Path], jpeg_of) -> None:  # type: ignore[no-untyped-def]
    ir = Predictor.load(ov_exports["ir"], cpu_options("openvino:CPU"))
    assert ir.spec.format is ModelFormat.OPENVINO
    assert ir.spec.model_path.name == "model.xml"
    assert ir.plan.backend is BackendKind.OPENVINO
    assert ir.device == "openvino:CPU"
    assert ir.spec.labels == CLASSIFIER_LABELS
    assert ir.spec.input.shape == (None, 3, 32, 32)
    # IR carries no Image.* metadata: the OpenVINO samples' RGB 0..1, the same as this ONNX twin's default.
    assert ir.spec.preprocess.bgr is False and ir.spec.preprocess.scale == pytest.approx(1 / 255)
    reference = Predictor.load(ov_exports["onnx"], cpu_options())
    _compare(ir, reference, jpeg_of, tolerance=3e-2)


def test_openvino_ir_with_cpu_request_runs_on_openvino(ov_exports: dict[str, Path]) -> None:
    ir = Predictor.load(ov_exports["ir"], cpu_options("cpu"))
    assert ir.plan.backend is BackendKind.OPENVINO and ir.device == "openvino:CPU"


def test_onnx_on_openvino_runtime(ov_exports: dict[str, Path], jpeg_of) -> None:  # type: ignore[no-untyped-def]
    via_ov = Predictor.load(ov_exports["onnx"], cpu_options("openvino:CPU"))
    assert via_ov.plan.backend is BackendKind.OPENVINO
    assert via_ov.spec.format is ModelFormat.ONNX
    assert via_ov.device == "openvino:CPU"
    reference = Predictor.load(ov_exports["onnx"], cpu_options())
    assert reference.plan.backend is BackendKind.ONNXRUNTIME
    _compare(via_ov, reference, jpeg_of, tolerance=3e-2)


@pytest.mark.parametrize("which", ["ir", "onnx"])
def test_openvino_cpu_matches_onnxruntime_in_fp32(ov_exports: dict[str, Path], jpeg_of, which: str) -> None:  # type: ignore[no-untyped-def]
    via_ov = Predictor.load(ov_exports[which], cpu_options("openvino:CPU"))
    reference = Predictor.load(ov_exports["onnx"], cpu_options())
    _compare(via_ov, reference, jpeg_of, tolerance=1e-5)


def test_openvino_auto_device(ov_exports: dict[str, Path]) -> None:
    predictor = Predictor.load(ov_exports["ir"], cpu_options("openvino"))
    assert predictor.plan.openvino_device == "AUTO"
    assert predictor.device.startswith("openvino:AUTO(") and "CPU" in predictor.device
