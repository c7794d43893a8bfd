"""What a loaded export *is*: task, flavour, labels, input tensor and the exact preprocessing recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from edge_runtime.domain import Task


class ModelFormat(StrEnum):
    ONNX = "onnx"
    OPENVINO = "openvino"
    TFLITE = "tflite"  # the DockerFile export (ExporterVersion 2.2): app/model.tflite


class Postprocess(StrEnum):
    MULTICLASS = "multiclass"  # one probability vector, labels.txt order
    MULTILABEL = "multilabel"  # independent sigmoid probabilities
    ZIPMAP = "zipmap"  # 2018 ONNX 1.2: seq(map(label -> prob)) with labels embedded
    YOLO = "yolo"  # General (compact) detection: raw YOLOv2 grid, decoded here
    YOLO_ACTIVATED = "yolo-activated"  # OpenVINO NoPostProcess compact: grid already activated
    SSD = "ssd"  # [S1] detection: detected_boxes / detected_scores / detected_classes in the graph
    SSD_RAW = "ssd-raw"  # OpenVINO NoPostProcess [S1]: raw_boxes (cx,cy,w,h) + raw_probs with background
    # Layouts recognised by graph signature (model/layouts.py), AutoML for Images' and generic ones:
    LOGITS_MULTICLASS = "logits-multiclass"  # [B, C] logits -> softmax, every label
    LOGITS_MULTILABEL = "logits-multilabel"  # [B, C] logits -> sigmoid, the labels over the threshold
    OBJECTNESS = "objectness"  # [B, N, 5+C]: cx, cy, w, h (input px), objectness, class probabilities
    ANCHOR_FREE = "anchor-free"  # [B, 4+C, N]: cx, cy, w, h (input px), class scores, no objectness
    END_TO_END = "end-to-end"  # [B, K, 6]: x1, y1, x2, y2 (input px), score, class; no NMS needed
    DETR = "detr"  # [B, Q, 4] cx, cy, w, h (input fractions) + [B, Q, C or 1+C] class logits
    BOX_LISTS = "box-lists"  # boxes_i / labels_i / scores_i per image (x1, y1, x2, y2 input px)


class Resize(StrEnum):
    """Resize/crop recipes. Each names what Custom Vision code does for some export."""

    # The exported container (DockerFile 2.2, measured): shorter side -> network size, centre crop.
    SHORTER_SIDE_TO_INPUT = "container"
    # metadata_properties.json's recipe: shorter side -> TargetWidth (256), centre crop CropWidth.
    SHORTER_SIDE_THEN_CROP = "sidecar"
    # 2018 TF container: centre square (after max side 1600) -> 256x256 -> centre crop to network size.
    CENTRE_SQUARE_THEN_CROP = "legacy2018"
    # [S1]: stretch to the network size, no crop.
    STRETCH = "stretch"
    # Compact detection: w*h ~ 512*512, each side rounded up to a multiple of 32.
    PIXEL_COUNT_ALIGN32 = "pixel-count-align32"
    # AutoML classification's validation transform (torchvision Resize(int) + CenterCrop): shorter side ->
    # the resize target, the other side int()-truncated, then a centre crop with rounded offsets.
    TORCHVISION_CROP = "torchvision-crop"
    # Fit inside the input keeping the aspect ratio (scaled up or down), centred on grey 114 padding.
    LETTERBOX = "letterbox"
    # The same but never scaled up (AutoML YOLOv5: its letterbox with scaleup=False).
    LETTERBOX_NO_UPSCALE = "letterbox-no-upscale"


class Fidelity(StrEnum):
    """How close preprocessing stays to the recipe the thresholds were tuned on."""

    EXACT = "exact"  # bit-identical to the recipe (Pillow's resampler on the full decode)
    FAST = "fast"  # reduced-scale JPEG decode and OpenCV's resampler: the shift is measured, not zero


class Resample(StrEnum):
    BILINEAR = "bilinear"  # PIL BILINEAR (antialiased when downscaling)
    BICUBIC = "bicubic"  # PIL's default filter for Image.resize
    CV2_LINEAR = "cv2-linear"  # cv2.resize INTER_LINEAR (no antialiasing): the letterbox recipes


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    resize: Resize
    input_size: tuple[int, int] | None  # (w, h) the network takes; None = dynamic (YOLO)
    resize_target: tuple[int, int]  # (w, h): 256x256 for "sidecar", 512x512 pixel target for YOLO ...
    resample: Resample
    bgr: bool
    scale: float  # multiply 0..255 pixel values by this (1.0 or 1/255)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    nchw: bool = True
    float16: bool = False
    batch: int = 1  # a fixed-batch model: the image is repeated to fill the batch, the first result used
    fidelity: Fidelity = Fidelity.EXACT

    def describe(self) -> str:
        colour = "BGR" if self.bgr else "RGB"
        value_range = "0..255" if self.scale == 1.0 else "0..1"
        size = "dynamic" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        normalised = (
            ""
            if self.mean == (0.0, 0.0, 0.0) and self.std == (1.0, 1.0, 1.0)
            else (f", minus mean {list(self.mean)} over std {list(self.std)}")
        )
        batch = f", fixed batch {self.batch} (the image repeated)" if self.batch > 1 else ""
        return (
            f"{self.resize.value} (target {self.resize_target[0]}x{self.resize_target[1]}, input {size}, "
            f"{self.resample.value}), {colour} {value_range}{normalised}, {'NCHW' if self.nchw else 'NHWC'}, "
            f"{'float16' if self.float16 else 'float32'}{batch}"
        )


# The anchors the export's own object_detection.py hard-codes (grid units).
DEFAULT_YOLO_ANCHORS: tuple[tuple[float, float], ...] = (
    (0.573, 0.677),
    (1.87, 2.06),
    (3.34, 5.47),
    (7.88, 3.53),
    (9.77, 9.17),
)


@dataclass(frozen=True, slots=True)
class DetectionParams:
    prob_threshold: float = 0.10
    iou_threshold: float = 0.45
    max_detections: int = 20
    anchors: tuple[tuple[float, float], ...] = DEFAULT_YOLO_ANCHORS


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: str  # "float32", "float16", "int64", "seq(map(string,float))", ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything the runtime knows about an export, decided once at load."""

    root: Path  # the export folder (a zip is extracted first)
    model_path: Path
    format: ModelFormat
    task: Task
    postprocess: Postprocess
    domain: str  # "General (compact)", "General (compact) [S1]", "ONNX 1.2 (2018)" ...
    flavour: str | None  # the manifest's Flavor, as written
    labels: tuple[str, ...]
    preprocess: PreprocessSpec
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    detection: DetectionParams = DetectionParams()
    sha1: str = ""
    iteration_id: str = ""
    exported_date: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what was ignored or assumed, shown by `inspect`
    # The outputs the decoder reads, by name, for layouts recognised by signature (model/layouts.py).
    decoder_outputs: tuple[str, ...] = ()
    source: Path | None = None  # what the user named (a .zip is extracted to `root` only while loading)

    @property
    def shown_path(self) -> Path:
        return self.source or self.root

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    @property
    def model_id(self) -> str:
        return self.iteration_id or self.sha1[:12]
