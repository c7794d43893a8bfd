"""One model card (edge_runtime/model_card.py) for `inspect`, `/health/ready` and the model status."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import synthetic
from synthetic import CLASSIFIER_LABELS, cpu_options

from edge_runtime.backends.providers import Availability
from edge_runtime.engine import Predictor
from edge_runtime.model_card import ModelCard


@pytest.fixture(scope="module")
def classifier(classifier_export: Path) -> Predictor:
    return Predictor.load(classifier_export, cpu_options())


def readiness_as_health_ready_built_it(predictor: Predictor) -> dict[str, object]:
    """The "model" object api/routes.py health_ready built by hand before the card existed."""
    spec = predictor.spec
    return {
        "id": spec.model_id,
        "sha1": spec.sha1,
        "path": str(spec.shown_path),
        "task": spec.task.value,
        "domain": spec.domain,
        "flavour": spec.flavour,
        "postprocess": spec.postprocess.value,
        "labels": list(spec.labels),
        "device": predictor.device,
        "device_reason": predictor.plan.reason,
        "fallback_from": predictor.plan.fallback_from,
        "warmup_ms": round(predictor.warmup_seconds * 1000, 2),
    }


def test_readiness_is_the_health_ready_model_object(classifier: Predictor) -> None:
    readiness = ModelCard.of(classifier).readiness()
    expected = readiness_as_health_ready_built_it(classifier)
    assert readiness == expected
    assert list(readiness) == list(expected)  # the JSON's key order too


def test_full_card(classifier: Predictor, classifier_export: Path) -> None:
    available = Availability(("CPUExecutionProvider",), ("CPU",))
    card = ModelCard.of(classifier, available).to_dict()
    assert list(card) == [
        "model",
        "format",
        "task",
        "domain",
        "flavour",
        "postprocess",
        "decoder",
        "labels",
        "sha1",
        "iteration_id",
        "input",
        "outputs",
        "preprocessing",
        "detection",
        "devices_available",
        "runtime",
        "device",
        "device_reason",
        "fallback_from",
        "warmup_ms",
        "notes",
    ]
    assert card["model"] == str(classifier_export)
    assert card["labels"] == list(CLASSIFIER_LABELS)
    assert card["input"] == {
        "name": "data",
        "shape": [None, 3, 32, 32],
        "dtype": "float32",
        "layout": "NCHW",
        "colour": "RGB",
        "range": "0..1",
    }
    assert card["outputs"] == [{"name": "model_output", "shape": [None, 3], "dtype": "float32"}]
    assert card["detection"] is None
    assert card["devices_available"] == {"onnxruntime": ["CPUExecutionProvider"], "openvino": ["CPU"]}
    assert (card["runtime"], card["device"], card["fallback_from"]) == ("onnxruntime", "cpu", None)


def test_devices_are_detected_only_when_asked(classifier: Predictor) -> None:
    assert ModelCard.of(classifier).to_dict()["devices_available"] is None


def test_detection_card(tmp_path: Path) -> None:
    root = synthetic.write_export(
        tmp_path / "det",
        synthetic.yolo_model(2),
        ("a", "b"),
        domain_type="ObjectDetection",
        metadata=synthetic.yolo_sidecar(),
    )
    card = ModelCard.of(Predictor.load(root, cpu_options()))
    detection = card.to_dict()["detection"]
    assert isinstance(detection, dict)
    assert detection["max_detections"] == 20 and detection["anchors"][0] == [0.57273, 0.677385]
    assert (card.colour, card.value_range) == ("BGR", "0..255")
    assert card.readiness()["task"] == "detection"


def test_the_card_is_a_frozen_value(classifier: Predictor) -> None:
    card = ModelCard.of(classifier)
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.device = "cuda"  # type: ignore[misc]
    assert card == ModelCard.of(classifier)
