"""Synthetic ONNX models (onnx.helper, opset 13) laid out like Custom Vision exports.

Every builder returns an `onnx.ModelProto`; `write_export` writes it with labels.txt, cvexport.manifest and
metadata_properties.json into a folder. The graphs are tiny, so they build and load in milliseconds, and
their outputs are either constants we choose or simple functions of the input we can compute by hand.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edge_runtime.backends.providers import parse_device
from edge_runtime.engine import PredictorOptions
from edge_runtime.model.imaging import ImageLimits
from edge_runtime.model.loader import LoadOptions

OPSET = 13
IR_VERSION = 7
ANCHORS = 5
BGR_255 = {"Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "NominalRange_0_255"}
RGB_01 = {"Image.BitmapPixelFormat": "Rgb8", "Image.NominalPixelRange": "Normalized_0_1"}
# Yolo.Biases of real compact detection sidecars (the export's code rounds them to DEFAULT_YOLO_ANCHORS).
CUSTOM_VISION_BIASES = (0.57273, 0.677385, 1.87446, 2.06253, 3.33843, 5.47434)
CUSTOM_VISION_BIASES += (7.88282, 3.52778, 9.77052, 9.16828)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    metadata: Mapping[str, str] | None = None,
    opset: int = OPSET,
    check: bool = True,
) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "synthetic", list(inputs), list(outputs), list(initializers))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edge-tests"
    )
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, dict(metadata))
    if check:
        onnx.checker.check_model(model)
    return model


def _elem(fp16: bool) -> int:
    return TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT


def classifier_model(
    num_classes: int = 3,
    size: int = 32,
    activation: str | None = "softmax",
    fp16: bool = False,
    metadata: Mapping[str, str] | None = None,
    static_classes: bool = True,
    seed: int = 7,
    scale: float = 4.0,
) -> onnx.ModelProto:
    """data [N,3,size,size] -> global average pool -> dense -> softmax / sigmoid / none -> model_output [N,C].

    The output depends on the mean colour of the image, so different images give different probabilities.
    With fp16=True the input and output are float16 (like an OnnxFloat16 export); weights stay identical.
    """
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((3, num_classes)) * scale).astype(np.float32)
    bias = (rng.standard_normal(num_classes) * 0.5).astype(np.float32)
    nodes = []
    first = "data"
    if fp16:
        nodes.append(helper.make_node("Cast", ["data"], ["data_f32"], to=TensorProto.FLOAT))
        first = "data_f32"
    nodes += [
        helper.make_node("GlobalAveragePool", [first], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "dense_w"], ["dense"]),
        helper.make_node("Add", ["dense", "dense_b"], ["logits"]),
    ]
    last = "logits"
    if activation == "softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
        last = "probs"
    elif activation == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probs"]))
        last = "probs"
    if fp16:
        nodes.append(helper.make_node("Cast", [last], ["model_output"], to=TensorProto.FLOAT16))
    else:
        nodes.append(helper.make_node("Identity", [last], ["model_output"]))
    classes: int | None = num_classes if static_classes else None
    return make_model(
        nodes,
        [helper.make_tensor_value_info("data", _elem(fp16), [None, 3, size, size])],
        [helper.make_tensor_value_info("model_output", _elem(fp16), [None, classes])],
        [numpy_helper.from_array(weight, "dense_w"), numpy_helper.from_array(bias, "dense_b")],
        metadata,
    )


def probe_model(size: int = 16, metadata: Mapping[str, str] | None = None) -> onnx.ModelProto:
    """data [N,3,size,size] -> the mean of each input channel as a 3-vector: shows colour order and range."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["model_output"], axis=1),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, size, size])],
        [helper.make_tensor_value_info("model_output", TensorProto.FLOAT, [None, 3])],
        metadata=metadata,
    )


def yolo_channels(num_classes: int) -> int:
    return ANCHORS * (5 + num_classes)


def yolo_model(
    num_classes: int,
    grid: np.ndarray | None = None,
    channel_bias: np.ndarray | None = None,
    fp16: bool = False,
    metadata: Mapping[str, str] | None = BGR_255,
) -> onnx.ModelProto:
    """A General (compact) detector whose raw YOLO grid we choose.

    data [N,3,H,W] (dynamic) -> AveragePool 32x32/32 -> Conv 1x1 with ZERO weights + `channel_bias`
    -> (+ `grid`, a constant [1, 5*(5+C), h, w]) -> model_outputs0 [N, 5*(5+C), H/32, W/32].
    Without `grid` every cell holds `channel_bias`, at any input size (the grid follows the input / 32).
    With `grid` the input must map to exactly h x w cells (e.g. 640x480 -> 608x448 -> 14 x 19).
    """
    channels = yolo_channels(num_classes)
    bias = np.zeros(channels, np.float32) if channel_bias is None else np.asarray(channel_bias, np.float32)
    assert bias.shape == (channels,)
    inits = [
        numpy_helper.from_array(np.zeros((channels, 3, 1, 1), np.float32), "head_w"),
        numpy_helper.from_array(bias, "head_b"),
    ]
    nodes = []
    first = "data"
    if fp16:
        nodes.append(helper.make_node("Cast", ["data"], ["data_f32"], to=TensorProto.FLOAT))
        first = "data_f32"
    nodes += [
        helper.make_node("AveragePool", [first], ["cells"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Conv", ["cells", "head_w", "head_b"], ["head"]),
    ]
    last = "head"
    if grid is not None:
        grid = np.asarray(grid, np.float32)
        assert grid.ndim == 4 and grid.shape[:2] == (1, channels), grid.shape
        inits.append(numpy_helper.from_array(grid, "grid_const"))
        nodes.append(helper.make_node("Add", ["head", "grid_const"], ["with_grid"]))
        last = "with_grid"
    if fp16:
        nodes.append(helper.make_node("Cast", [last], ["model_outputs0"], to=TensorProto.FLOAT16))
    else:
        nodes.append(helper.make_node("Identity", [last], ["model_outputs0"]))
    return make_model(
        nodes,
        [helper.make_tensor_value_info("data", _elem(fp16), [None, 3, None, None])],
        [helper.make_tensor_value_info("model_outputs0", _elem(fp16), [None, channels, None, None])],
        inits,
        metadata,
    )


def ssd_model(
    boxes: Sequence[Sequence[float]],
    scores: Sequence[float],
    classes: Sequence[int],
    metadata: Mapping[str, str] | None = None,
    size: int = 320,
) -> onnx.ModelProto:
    """General (compact) [S1] detector: image_tensor [1,3,320,320] -> constant detected_boxes (x1,y1,x2,y2)
    [1,N,4], detected_scores [1,N] and int64 detected_classes [1,N]."""
    n = len(scores)
    box_arr = np.asarray(boxes, np.float32).reshape(1, n, 4)
    score_arr = np.asarray(scores, np.float32).reshape(1, n)
    class_arr = np.asarray(classes, np.int64).reshape(1, n)
    nodes = [
        helper.make_node("ReduceMean", ["image_tensor"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "boxes_const"], ["detected_boxes"]),
        helper.make_node("Add", ["nothing", "scores_const"], ["detected_scores"]),
        helper.make_node("Identity", ["classes_const"], ["detected_classes"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("image_tensor", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("detected_boxes", TensorProto.FLOAT, [1, n, 4]),
            helper.make_tensor_value_info("detected_scores", TensorProto.FLOAT, [1, n]),
            helper.make_tensor_value_info("detected_classes", TensorProto.INT64, [1, n]),
        ],
        [
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(box_arr, "boxes_const"),
            numpy_helper.from_array(score_arr, "scores_const"),
            numpy_helper.from_array(class_arr, "classes_const"),
        ],
        metadata,
    )


def raw_ssd_model(
    raw_boxes: Sequence[Sequence[float]], raw_probs: Sequence[Sequence[float]]
) -> onnx.ModelProto:
    """OpenVINO NoPostProcess [S1] signature: data [1,3,320,320] -> constant raw_boxes (cx, cy, w, h) [1,N,4]
    and raw_probs [1,N,1+C] (column 0 = background)."""
    boxes = np.asarray(raw_boxes, np.float32)[None]
    probs = np.asarray(raw_probs, np.float32)[None]
    nodes = [
        helper.make_node("ReduceMean", ["data"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "boxes_const"], ["raw_boxes"]),
        helper.make_node("Add", ["nothing", "probs_const"], ["raw_probs"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 320, 320])],
        [
            helper.make_tensor_value_info("raw_boxes", TensorProto.FLOAT, list(boxes.shape)),
            helper.make_tensor_value_info("raw_probs", TensorProto.FLOAT, list(probs.shape)),
        ],
        [
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(boxes, "boxes_const"),
            numpy_helper.from_array(probs, "probs_const"),
        ],
    )


def sidecar(
    method: str,
    resize_method: str,
    target: int,
    crop: int = 0,
    crop_method: str = "NoCrop",
    biases: Sequence[float] = (),
    nms: float = 0.0,
    image_keys: Mapping[str, str] = RGB_01,
) -> dict[str, str]:
    """A metadata_properties.json map in the real exports' format (all values strings)."""
    return {
        "CustomVision.Metadata.AdditionalModelInfo": "",
        "CustomVision.Metadata.Version": "1.2",
        "CustomVision.Postprocess.Method": method,
        "CustomVision.Postprocess.Yolo.Biases": json.dumps(list(biases)),
        "CustomVision.Postprocess.Yolo.NmsThreshold": str(nms),
        "CustomVision.Preprocess.CropHeight": str(crop),
        "CustomVision.Preprocess.CropMethod": crop_method,
        "CustomVision.Preprocess.CropWidth": str(crop),
        "CustomVision.Preprocess.NormalizeMean": "[0.0, 0.0, 0.0]",
        "CustomVision.Preprocess.NormalizeStd": "[1.0, 1.0, 1.0]",
        "CustomVision.Preprocess.ResizeMethod": resize_method,
        "CustomVision.Preprocess.TargetHeight": str(target),
        "CustomVision.Preprocess.TargetWidth": str(target),
        "Image.ColorSpaceGamma": "SRGB",
        **image_keys,
    }


def yolo_sidecar(biases: Sequence[float] = CUSTOM_VISION_BIASES, nms: float = 0.45) -> dict[str, str]:
    return sidecar("Yolo", "ByPixelCountAlign32", 512, biases=biases, nms=nms)


def classification_sidecar(method: str = "ClassificationMultiClass") -> dict[str, str]:
    return sidecar(method, "ByShorterSide", 256, crop=224, crop_method="OneCropCenter")


def sha1_hex(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def write_export(
    folder: Path,
    model: onnx.ModelProto | bytes | None,
    labels: Sequence[str] | None,
    *,
    domain_type: str = "Classification",
    metadata: Mapping[str, str] | None = None,
    manifest: bool = True,
    platform: str = "ONNX",
    flavor: str | None = None,
    model_file: str = "model.onnx",
    sha1: bool = True,
) -> Path:
    """Write an export folder like the Custom Vision zip: model, labels.txt, manifest, sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    data = b""
    if model is not None:
        data = model if isinstance(model, bytes) else model.SerializeToString()
        (folder / model_file).write_bytes(data)
    if labels is not None:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    if metadata is not None:
        (folder / "metadata_properties.json").write_text(json.dumps(metadata, indent=4), encoding="utf-8")
    if manifest:
        body = {
            "DomainType": domain_type,
            "Platform": platform,
            "Flavor": flavor,
            "ExporterVersion": "2.0",
            "ExportedDate": "2026-01-01T00:00:00.0000000Z",
            "IterationId": "00000000-0000-4000-8000-000000000000",
            "ModelFileName": model_file,
            "LabelFileName": "labels.txt",
            "MetadataPropsFileName": "metadata_properties.json" if metadata is not None else None,
            "ModelFileSHA1": sha1_hex(data) if sha1 and data else None,
            "SchemaVersion": "1.0",
        }
        (folder / "cvexport.manifest").write_text(json.dumps(body, indent=2), encoding="utf-8")
    return folder


def save_openvino_ir(onnx_path: Path, folder: Path, labels: Sequence[str]) -> Path:
    """Convert an ONNX model to OpenVINO IR (fp32 weights) in an OpenVino-platform export folder."""
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "model.xml"), compress_to_fp16=False)
    write_export(
        folder,
        None,
        labels,
        platform="OpenVino",
        model_file="model.xml",
        sha1=False,
    )
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest["ModelFileSHA1"] = sha1_hex((folder / "model.xml").read_bytes())
    (folder / "cvexport.manifest").write_text(json.dumps(manifest, indent=2))
    return folder


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


# ------------------------------------------------------------------------------------------ test helpers
# (kept here, not in conftest.py: several conftest modules exist, so none can be imported by name)

CLASSIFIER_LABELS = ("alpha", "beta", "gamma")


def cpu_options(
    device: str = "cpu", limits: ImageLimits | None = None, allow_fallback: bool = False, **load: object
) -> PredictorOptions:
    """Predictor options pinned to a device (never 'auto': tests must not depend on the machine)."""
    return PredictorOptions(
        device=parse_device(device, allow_fallback),
        threads=1,
        load=LoadOptions(**load),  # type: ignore[arg-type]
        limits=limits or ImageLimits(),
    )


def pattern_image(width: int = 96, height: int = 64, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A deterministic, colourful image (smooth gradients + noise) so different seeds give different means."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    r = (base[0] + 120 * xs / max(width - 1, 1)) % 256
    g = (base[1] + 120 * ys / max(height - 1, 1)) % 256
    b = (base[2] + 60 * (xs + ys) / max(width + height - 2, 1)) % 256
    pixels = np.stack([r, g, b], axis=-1) + rng.normal(0, 8, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def region_yolo_ir_export(
    folder: Path,
    labels: Sequence[str],
    channel_bias: np.ndarray,
    anchors: Sequence[tuple[float, float]],
    size: int = 416,
) -> Path:
    """An OpenVINO "NoPostProcess" General (compact) detection export: a fixed NCHW input, a head whose
    every cell holds `channel_bias`, then a YOLOv2 RegionYolo layer (sigmoid x/y/objectness, softmax
    classes, flattened to [1, A*(5+C)*H*W], as the official sample expects) carrying the anchors."""
    import openvino as ov
    import openvino.opset8 as ops

    channels = yolo_channels(len(labels))
    data = ops.parameter([1, 3, size, size], ov.Type.f32, name="data")
    cells = ops.avg_pool(data, [32, 32], [0, 0], [0, 0], [32, 32], True)
    head = ops.convolution(
        cells, ops.constant(np.zeros((channels, 3, 1, 1), np.float32)), [1, 1], [0, 0], [0, 0], [1, 1]
    )
    head = ops.add(head, ops.constant(np.asarray(channel_bias, np.float32).reshape(1, channels, 1, 1)))
    flat_anchors = [float(v) for pair in anchors for v in pair]
    region = ops.region_yolo(head, 4, len(labels), len(anchors), True, [], 1, 3, flat_anchors)
    region.output(0).get_tensor().set_names({"model_outputs"})
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(
        ov.Model([region], [data], "region_yolo"), str(folder / "model.xml"), compress_to_fp16=False
    )
    return write_export(
        folder,
        None,
        labels,
        domain_type="ObjectDetection",
        platform="OpenVino",
        flavor="NoPostProcess",
        model_file="model.xml",
        sha1=False,
    )
