"""Build the demo defect detector: a hand-made YOLO-grid ONNX graph in Custom Vision export layout.

It looks at a light-grey conveyor belt: a 32x32 cell whose mean grey level is far below the belt
("stain") or far above it ("glare") is reported as a defect. The graph has the exact signature of a
General (compact) detection export (dynamic NCHW BGR 0..255 input, [1, 5*(5+C), H/32, W/32] output),
so the whole real decode path (YOLO decode, NMS, boxes) runs on it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from edge_runtime.model.spec import DEFAULT_YOLO_ANCHORS

DEMO_LABELS = ("stain", "glare")
BELT_GREY = 170  # the synthetic belt's grey level
DARK_BELOW = 110  # a cell darker than this is a stain
BRIGHT_ABOVE = 225  # a cell brighter than this is glare


def _conv_weights() -> tuple[np.ndarray, np.ndarray]:
    """1x1 conv from [darkness, brightness] features to the 5 anchors x (5 + 2 classes) channels."""
    anchors = len(DEFAULT_YOLO_ANCHORS)
    per_anchor = 5 + len(DEMO_LABELS)
    weight = np.zeros((anchors * per_anchor, 2, 1, 1), np.float32)
    bias = np.zeros((anchors * per_anchor,), np.float32)
    for a, (aw, ah) in enumerate(DEFAULT_YOLO_ANCHORS):
        base = a * per_anchor
        bias[base + 2] = math.log(1.0 / aw)  # box width = exactly one cell
        bias[base + 3] = math.log(1.0 / ah)
        if a == 0:
            weight[base + 4, :, 0, 0] = (0.25, 0.25)  # objectness grows with either feature
            bias[base + 4] = -3.0
            weight[base + 5, :, 0, 0] = (0.2, -0.2)  # stain logit
            weight[base + 6, :, 0, 0] = (-0.2, 0.2)  # glare logit
        else:
            bias[base + 4] = -12.0  # other anchors never fire
    return weight, bias


def build_demo_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight, bias = _conv_weights()
    nodes = [
        helper.make_node("ReduceMean", ["data"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["grey"], ["cells"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Sub", ["dark_level", "cells"], ["dark_raw"]),
        helper.make_node("Relu", ["dark_raw"], ["darkness"]),
        helper.make_node("Sub", ["cells", "bright_level"], ["bright_raw"]),
        helper.make_node("Relu", ["bright_raw"], ["brightness"]),
        helper.make_node("Concat", ["darkness", "brightness"], ["features"], axis=1),
        helper.make_node("Conv", ["features", "head_w", "head_b"], ["model_outputs0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "edge_runtime_demo_defects",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, None, None])],
        [helper.make_tensor_value_info("model_outputs0", TensorProto.FLOAT, [None, 35, None, None])],
        initializer=[
            numpy_helper.from_array(weight, "head_w"),
            numpy_helper.from_array(bias, "head_b"),
            numpy_helper.from_array(np.array(DARK_BELOW, np.float32), "dark_level"),
            numpy_helper.from_array(np.array(BRIGHT_ABOVE, np.float32), "bright_level"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge_runtime"
    )
    model.ir_version = 7
    helper.set_model_props(
        model, {"Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "NominalRange_0_255"}
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def build_demo_export(folder: Path) -> Path:
    """Write the demo export (idempotent) and return its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    data = build_demo_onnx()
    (folder / "model.onnx").write_bytes(data)
    (folder / "labels.txt").write_text("\n".join(DEMO_LABELS) + "\n")
    biases = [v for pair in DEFAULT_YOLO_ANCHORS for v in pair]
    sidecar = {
        "CustomVision.Metadata.Version": "1.2",
        "CustomVision.Postprocess.Method": "Yolo",
        "CustomVision.Postprocess.Yolo.Biases": json.dumps(biases),
        "CustomVision.Postprocess.Yolo.NmsThreshold": "0.45",
        "CustomVision.Preprocess.CropMethod": "NoCrop",
        "CustomVision.Preprocess.ResizeMethod": "ByPixelCountAlign32",
        "CustomVision.Preprocess.TargetHeight": "512",
        "CustomVision.Preprocess.TargetWidth": "512",
    }
    (folder / "metadata_properties.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    manifest = {
        "DomainType": "ObjectDetection",
        "Platform": "ONNX",
        "Flavor": None,
        "ExporterVersion": "2.0",
        "ExportedDate": "2026-11-22T00:00:00Z",
        "IterationId": "edge-runtime-demo",
        "ModelFileName": "model.onnx",
        "LabelFileName": "labels.txt",
        "MetadataPropsFileName": "metadata_properties.json",
        "ModelFileSHA1": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        "SchemaVersion": "1.0",
    }
    (folder / "cvexport.manifest").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder
