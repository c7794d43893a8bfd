"""The files of an Azure Machine Learning "AutoML for Images" ONNX export, beside its model.onnx.

labels.json    a JSON list of class names; the model's class id is the index (the ONNX inference how-to:
               "if the ONNX model predicts a label ID as 2, then it corresponds to the label name given at
               the third index").
settings.json  optional: the MLflow model's inference settings (artifacts/settings.json of the run's
               mlflow-model, a flat JSON object of the training code's setting names), copied beside the
               model. Read: multilabel / task_type, valid_resize_size, valid_crop_size, img_size,
               box_score_thresh, nms_iou_thresh (box_iou_thresh), box_detections_per_img,
               enable_onnx_normalization, model_name; the hyperparameter reference's spellings
               (box_score_threshold, nms_iou_threshold, box_detections_per_image, image_size) too.

A wrong value is an error naming the file; an absent file or key means the documented default, except
where nothing can stand in for it (multi-class vs multi-label: `loader` says so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ModelLoadError

LABELS_JSON = "labels.json"
SETTINGS_JSON = "settings.json"
MULTILABEL_TASK = "image-classification-multilabel"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(path, f"not valid JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class AutoMLSettings:
    """settings.json, or nothing (`path` None)."""

    path: Path | None
    values: dict[str, Any] = field(default_factory=dict)

    def _first(self, keys: tuple[str, ...]) -> tuple[str, Any] | None:
        for key in keys:
            if self.values.get(key) is not None:
                return key, self.values[key]
        return None

    def _bad(self, key: str, value: Any, wanted: str) -> ModelLoadError:
        assert self.path is not None
        return ModelLoadError(self.path, f"{key} is {value!r}, expected {wanted}")

    def fraction(self, *keys: str) -> float | None:
        """A number in [0, 1] under the first of `keys` that is set."""
        found = self._first(keys)
        if found is None:
            return None
        key, value = found
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise self._bad(key, value, "a number from 0 to 1")
        return float(value)

    def count(self, *keys: str) -> int | None:
        """A positive whole number under the first of `keys` that is set."""
        found = self._first(keys)
        if found is None:
            return None
        key, value = found
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole or value < 1:
            raise self._bad(key, value, "a whole number of at least 1")
        return int(value)

    def flag(self, key: str) -> bool | None:
        found = self._first((key,))
        if found is None:
            return None
        if not isinstance(found[1], bool):
            raise self._bad(key, found[1], "true or false")
        return found[1]

    def text(self, key: str) -> str | None:
        found = self._first((key,))
        return None if found is None else str(found[1])

    @property
    def multilabel(self) -> bool | None:
        """What the file says about multi-label classification: `multilabel`, else `task_type`."""
        flag = self.flag("multilabel")
        if flag is not None:
            return flag
        task = self.text("task_type")
        return None if task is None else task.lower() == MULTILABEL_TASK


@dataclass(frozen=True, slots=True)
class AutoMLFiles:
    labels: tuple[str, ...]
    labels_path: Path
    settings: AutoMLSettings


def read_labels_json(path: Path) -> tuple[str, ...]:
    data = _read_json(path)
    if not isinstance(data, list) or not all(isinstance(label, str) for label in data):
        raise ModelLoadError(path, "expected a JSON list of label names (strings)")
    if not data:
        raise ModelLoadError(path, "the labels list is empty")
    return tuple(data)


def read_settings_json(path: Path) -> AutoMLSettings:
    if not path.is_file():
        return AutoMLSettings(None)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ModelLoadError(path, "expected a JSON object of inference settings")
    return AutoMLSettings(path, {str(key): value for key, value in data.items()})


def read_automl(root: Path) -> AutoMLFiles | None:
    """labels.json (+ settings.json) in `root`; None when there is no labels.json."""
    path = root / LABELS_JSON
    if not path.is_file():
        return None
    return AutoMLFiles(read_labels_json(path), path, read_settings_json(root / SETTINGS_JSON))
