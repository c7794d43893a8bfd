"""Tiny ONNX graphs with the names, shapes and dtypes of AutoML for Images' documented ONNX contract
(how-to-inference-onnx-automl-image-models, ONNX_batch_model_generator_automl_for_images.py) and of the
generic detector layouts, plus `write_automl` / `write_generic` to lay them out as an export folder.

Detectors output constants we choose (their input only feeds a multiply by zero), so the expected boxes
are computed by hand through the letterbox / stretch, independently of any network. The classifier is
linear in the input's channel means, so its logits can be computed from the documented recipe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from synthetic import make_model

Dim = int | str | None


def _image_input(name: str, batch: Dim, height: Dim, width: Dim) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, 3, height, width])


def _zero_from(input_name: str) -> list[onnx.NodeProto]:
    """nodes making the scalar `zero` from the input (ReduceMean x 0), so constants depend on it."""
    return [
        helper.make_node("ReduceMean", [input_name], ["input_mean"], keepdims=0),
        helper.make_node("Mul", ["input_mean", "zero_const"], ["zero"]),
    ]


def constant_outputs(
    input_info: onnx.ValueInfoProto,
    outputs: Sequence[tuple[str, np.ndarray, Sequence[Dim]]],
) -> onnx.ModelProto:
    """A graph whose outputs are the given constants (name, value, declared shape): floats plus the
    input-derived zero, integers as they are."""
    nodes = _zero_from(input_info.name)
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero_const")]
    infos = []
    for name, value, shape in outputs:
        inits.append(numpy_helper.from_array(value, f"{name}_const"))
        if value.dtype == np.float32:
            nodes.append(helper.make_node("Add", ["zero", f"{name}_const"], [name]))
            infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        else:
            nodes.append(helper.make_node("Identity", [f"{name}_const"], [name]))
            infos.append(helper.make_tensor_value_info(name, TensorProto.INT64, list(shape)))
    return make_model(nodes, [input_info], infos, inits)


def automl_classifier(
    num_classes: int, size: int = 224, batch: Dim = "batch", seed: int = 3, scale: float = 6.0
) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """input1 [B, 3, size, size] -> channel means -> dense -> output1 [B, C] logits (no activation).
    Returns the model, its weight [3, C] and bias [C]."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((3, num_classes)) * scale).astype(np.float32)
    bias = rng.standard_normal(num_classes).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input1"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "w"], ["dense"]),
        helper.make_node("Add", ["dense", "b"], ["output1"]),
    ]
    model = make_model(
        nodes,
        [_image_input("input1", batch, size, size)],
        [helper.make_tensor_value_info("output1", TensorProto.FLOAT, [batch, num_classes])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return model, weight, bias


def automl_yolo(rows: np.ndarray, size: int = 640, batch: int | str = "batch") -> onnx.ModelProto:
    """input [B, 3, size, size] -> output [B, N, 5+C]: the rows given (cx, cy, w, h in input pixels,
    objectness, class probabilities), for every image of the batch; a second output like the export's
    per-scale heads, which the decoder must ignore."""
    rows = np.asarray(rows, np.float32)
    images = batch if isinstance(batch, int) else 1
    value = np.repeat(rows[None], images, axis=0)
    extra = np.zeros((images, 3, 2, 2, rows.shape[1]), np.float32)
    return constant_outputs(
        _image_input("input", batch, size, size),
        [
            ("output", value, [batch, "boxes", rows.shape[1]]),
            ("extra_head", extra, [batch, 3, 2, 2, rows.shape[1]]),
        ],
    )


def automl_box_lists(
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    order: Sequence[str] = ("boxes", "labels", "scores"),
    masks: bool = False,
    batch: int = 1,
    size: tuple[int, int] | None = (800, 600),
    input_batch: Dim = "batch",
) -> onnx.ModelProto:
    """input [B, 3, H, W] -> boxes_i [n, 4] (x1, y1, x2, y2 input pixels), labels_i [n] int64,
    scores_i [n] (+ masks_i [n, 1, H, W]) for i < batch, in `order` (RetinaNet: boxes, scores, labels).
    `size` (w, h) None: a dynamic input (Mask R-CNN takes any size)."""
    n = len(scores)
    values: dict[str, tuple[np.ndarray, list[Dim]]] = {
        "boxes": (np.asarray(boxes, np.float32).reshape(n, 4), ["prediction", 4]),
        "labels": (np.asarray(labels, np.int64).reshape(n), ["prediction"]),
        "scores": (np.asarray(scores, np.float32).reshape(n), ["prediction"]),
    }
    if masks:
        values["masks"] = (np.full((n, 1, 4, 4), 0.9, np.float32), ["prediction", 1, "height", "width"])
    kinds = [*order, "masks"] if masks else list(order)
    outputs: list[tuple[str, np.ndarray, Sequence[Dim]]] = []
    for index in range(batch):
        for kind in kinds:
            value, shape = values[kind]
            outputs.append((f"{kind}_{index}", value, shape))
    width, height = size if size else ("width", "height")
    return constant_outputs(_image_input("input", input_batch, height, width), outputs)


def head_model(
    input_name: str,
    heads: Sequence[tuple[str, np.ndarray]],
    size: tuple[int, int] = (640, 640),
    nhwc: bool = False,
) -> onnx.ModelProto:
    """A generic detector: one image input [1, 3, H, W] (or NHWC) -> the constant heads given (each
    [1, ...] as named), declared with their full static shapes."""
    w, h = size
    shape = [1, h, w, 3] if nhwc else [1, 3, h, w]
    info = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)
    return constant_outputs(info, [(name, np.asarray(v, np.float32), list(np.shape(v))) for name, v in heads])


def write_folder(
    folder: Path,
    model: onnx.ModelProto,
    labels: Sequence[str],
    labels_file: str = "labels.json",
    settings: Mapping[str, Any] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    if labels_file == "labels.json":
        (folder / "labels.json").write_text(json.dumps(list(labels)))
    else:
        (folder / labels_file).write_text("\n".join(labels) + "\n")
    if settings is not None:
        (folder / "settings.json").write_text(json.dumps(dict(settings)))
    return folder
