"""Export files + model facts -> one ModelSpec. Every decision about an export is made here, once.

A Custom Vision export (cvexport.manifest, or a bare model.onnx whose outputs look like one) is decided
here; AutoML for Images exports (labels.json) and other graphs are recognised by their signature and
built by model/layout_spec.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.domain import Task
from edge_runtime.errors import ModelIntegrityError, ModelLoadError
from edge_runtime.model.automl import read_automl
from edge_runtime.model.export import (
    LABELS,
    MODEL_CANDIDATES,
    ExportDescription,
    describe_export,
    either,
    open_export,
    sha1_of,
    sidecar_number,
)
from edge_runtime.model.formats import FORMATS, inspect_model
from edge_runtime.model.layout_spec import Found, Overrides, layout_spec
from edge_runtime.model.modelfile import ModelFacts
from edge_runtime.model.spec import (
    DEFAULT_YOLO_ANCHORS,
    DetectionParams,
    Fidelity,
    ModelFormat,
    ModelSpec,
    Postprocess,
    PreprocessSpec,
    Resample,
    Resize,
    TensorInfo,
)

log = logging.getLogger(__name__)

YOLO_ANCHOR_COUNT = 5


@dataclass(frozen=True, slots=True)
class LoadOptions:
    resize: Resize | None = None  # override the export's default recipe
    verify_sha1: bool = True
    extract_dir: Path | None = None  # where a .zip is unpacked (a temp dir by default)
    # The output layout where the files and shapes leave a choice (layout_spec.py), and thresholds that
    # replace the format's own (every detector; AutoML multi-label classifiers for score_threshold).
    layout: Postprocess | None = None
    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None
    fidelity: Fidelity = Fidelity.EXACT

    def __post_init__(self) -> None:
        # Recipes are compared by identity: a plain string ("sidecar") from an API caller would match none.
        for name, kind in (("resize", Resize), ("layout", Postprocess), ("fidelity", Fidelity)):
            value = getattr(self, name)
            if isinstance(value, str) and not isinstance(value, kind):
                object.__setattr__(self, name, kind(value))

    @property
    def overrides(self) -> Overrides:
        thresholds = (self.score_threshold, self.iou_threshold, self.max_detections)
        return Overrides(self.resize, self.layout, *thresholds)


def load_spec(path: Path, options: LoadOptions = LoadOptions(), source: Path | None = None) -> ModelSpec:
    """`source`: what the user named, when `path` is where it was extracted to."""
    spec = _load_spec(path, options, source)
    if options.fidelity is Fidelity.EXACT:
        return spec
    return dataclasses.replace(
        spec, preprocess=dataclasses.replace(spec.preprocess, fidelity=options.fidelity)
    )


def _load_spec(path: Path, options: LoadOptions, source: Path | None) -> ModelSpec:
    root = open_export(Path(path), options.extract_dir)
    desc = describe_export(root)
    model_path = _model_path(desc)
    sha1 = sha1_of(model_path)
    expected = (desc.manifest.model_sha1 or "").lower() if desc.manifest else ""
    if expected and sha1 != expected:
        if options.verify_sha1:
            raise ModelIntegrityError(
                model_path,
                f"SHA-1 is {sha1} but the manifest's ModelFileSHA1 is {expected}; the file was changed or "
                "damaged (set verify_sha1: false / --no-verify-sha1 to load it anyway)",
            )
        log.warning("%s: SHA-1 %s differs from the manifest's %s; loading anyway", model_path, sha1, expected)
    facts = inspect_model(model_path)
    automl = read_automl(desc.root) if desc.manifest is None else None
    if automl is not None or (desc.manifest is None and not _custom_vision_outputs(facts)):
        labels_path = automl.labels_path if automl else desc.root / LABELS
        labels = automl.labels if automl else _labels(desc, facts)
        found = Found(desc.root, model_path, facts, labels, labels_path, automl)
        return layout_spec(found, options.overrides, sha1, source)
    if options.resize in (Resize.LETTERBOX, Resize.LETTERBOX_NO_UPSCALE):
        raise ModelLoadError(
            model_path,
            f"model.resize {options.resize.value} is for the detectors that undo it, not this export",
        )
    postprocess = _postprocess(desc, facts)
    task = Task.DETECTION if postprocess in _DETECTION else Task.CLASSIFICATION
    labels = _labels(desc, facts)
    _check_label_count(desc.root, facts, postprocess, labels)
    preprocess, notes = _preprocess(desc, facts, postprocess, options)
    if options.layout is not None:
        notes.append(f"model.layout {options.layout.value} is not used: a Custom Vision export says its own")
    domain = desc.domain
    if postprocess is Postprocess.SSD and "[S1]" not in domain:
        domain = "General (compact) [S1]"
    if postprocess is Postprocess.ZIPMAP and "2018" not in domain:
        domain = "General (compact), ONNX 1.2 (2018)"
    return ModelSpec(
        root=desc.root,
        model_path=model_path,
        format=facts.format,
        task=task,
        postprocess=postprocess,
        domain=domain,
        flavour=desc.manifest.flavor if desc.manifest else None,
        labels=labels,
        preprocess=preprocess,
        inputs=facts.inputs,
        outputs=facts.outputs,
        detection=options.overrides.applied(_detection_params(desc, facts, postprocess)),
        sha1=sha1,
        iteration_id=desc.manifest.iteration_id if desc.manifest else "",
        exported_date=desc.manifest.exported_date if desc.manifest else "",
        metadata_props=dict(facts.metadata_props),
        notes=tuple(notes),
        source=source,
    )


_DETECTION = {Postprocess.YOLO, Postprocess.YOLO_ACTIVATED, Postprocess.SSD, Postprocess.SSD_RAW}


def _custom_vision_outputs(facts: ModelFacts) -> bool:
    """Outputs a Custom Vision export has: [S1] detection names, a ZipMap, one grid, one vector."""
    names = {o.name.split(":")[0] for o in facts.outputs}
    if {"detected_boxes", "detected_scores", "detected_classes"} <= names:
        return True
    if {"raw_boxes", "raw_probs"} <= names:
        return True
    if facts.zipmap_labels is not None or any(o.dtype.startswith(("seq(", "map(")) for o in facts.outputs):
        return True
    return len(facts.outputs) == 1 and len(facts.outputs[0].shape) in (1, 2, 4)


def _model_path(desc: ExportDescription) -> Path:
    if desc.manifest and desc.manifest.model_file:
        path = desc.root / desc.manifest.model_file
        if not path.is_file():
            raise ModelLoadError(path, "model file named by the manifest's ModelFileName is missing")
        return path
    for name in MODEL_CANDIDATES:
        if (desc.root / name).is_file():
            return desc.root / name
    raise ModelLoadError(desc.root, f"no {either(*MODEL_CANDIDATES)} in the export")


def _postprocess(desc: ExportDescription, facts: ModelFacts) -> Postprocess:
    names = {o.name.split(":")[0] for o in facts.outputs}
    if {"detected_boxes", "detected_scores", "detected_classes"} <= names:
        return Postprocess.SSD
    if {"raw_boxes", "raw_probs"} <= names:
        return Postprocess.SSD_RAW
    if facts.zipmap_labels is not None or any(o.dtype.startswith(("seq(", "map(")) for o in facts.outputs):
        return Postprocess.ZIPMAP
    flavor = desc.manifest.flavor_key if desc.manifest else ""
    grid_output = len(facts.outputs) == 1 and len(facts.outputs[0].shape) == 4
    if desc.postprocess is Postprocess.YOLO or (desc.manifest is None and grid_output):
        if facts.format is ModelFormat.OPENVINO and flavor == "nopostprocess":
            return Postprocess.YOLO_ACTIVATED
        return Postprocess.YOLO
    return desc.postprocess


def _labels(desc: ExportDescription, facts: ModelFacts) -> tuple[str, ...]:
    if desc.labels is not None:
        if facts.zipmap_labels is not None and set(facts.zipmap_labels) != set(desc.labels):
            raise ModelLoadError(
                desc.root / LABELS,
                f"labels {list(desc.labels)} differ from the labels embedded in the model "
                f"{list(facts.zipmap_labels)}",
            )
        return desc.labels
    if facts.zipmap_labels is not None:
        return facts.zipmap_labels
    raise ModelLoadError(desc.root / LABELS, "labels file is missing (the model does not embed its labels)")


def _check_label_count(
    root: Path, facts: ModelFacts, postprocess: Postprocess, labels: tuple[str, ...]
) -> None:
    """Static shapes are checked here; dynamic ones after the warm-up run (engine.py)."""
    out = facts.outputs[0] if facts.outputs else None
    if out is None:
        raise ModelLoadError(root, "the model has no outputs")
    if postprocess in (Postprocess.MULTICLASS, Postprocess.MULTILABEL):
        size = out.shape[-1] if out.shape else None
        if isinstance(size, int) and size != len(labels):
            raise ModelLoadError(
                root / LABELS,
                f"{len(labels)} labels but the model output {out.name!r} has {size} classes",
            )
    if postprocess is Postprocess.YOLO and len(out.shape) == 4 and isinstance(out.shape[1], int):
        expected = YOLO_ANCHOR_COUNT * (5 + len(labels))
        if out.shape[1] != expected:
            raise ModelLoadError(
                root / LABELS,
                f"{len(labels)} labels but the YOLO output {out.name!r} has {out.shape[1]} channels "
                f"(expected {YOLO_ANCHOR_COUNT} x (5 + {len(labels)}) = {expected})",
            )


def _colour_and_range(facts: ModelFacts, postprocess: Postprocess, domain: str) -> tuple[bool, float]:
    """The model's metadata_props decide, else its format's default (formats.py, README "Preprocessing")."""
    default = FORMATS[facts.format].default_pixels(postprocess, domain)
    bgr, scale = default.bgr, default.scale
    fmt = facts.metadata_props.get("Image.BitmapPixelFormat", "").lower()
    if fmt in ("bgr8", "bgra8"):
        bgr = True
    elif fmt in ("rgb8", "rgba8"):
        bgr = False
    value_range = facts.metadata_props.get("Image.NominalPixelRange", "").lower()
    if value_range == "nominalrange_0_255":
        scale = 1.0
    elif value_range == "normalized_0_1":
        scale = 1 / 255
    return bgr, scale


def _triple(text: str | None, default: tuple[float, float, float]) -> tuple[float, float, float]:
    try:
        values = json.loads(text) if text else None
    except json.JSONDecodeError:
        return default
    if isinstance(values, list) and len(values) == 3:
        return (float(values[0]), float(values[1]), float(values[2]))
    return default


def _input_tensor(desc: ExportDescription, facts: ModelFacts) -> TensorInfo:
    images = [t for t in facts.inputs if len(t.shape) == 4]
    if len(images) != 1:
        raise ModelLoadError(
            desc.root,
            f"expected one image input (4-D tensor), found {[(t.name, t.shape) for t in facts.inputs]}",
        )
    return images[0]


def _preprocess(
    desc: ExportDescription, facts: ModelFacts, postprocess: Postprocess, options: LoadOptions
) -> tuple[PreprocessSpec, list[str]]:
    notes: list[str] = []
    tensor = _input_tensor(desc, facts)
    nchw = tensor.shape[1] == 3 or tensor.shape[-1] != 3
    h, w = (tensor.shape[2], tensor.shape[3]) if nchw else (tensor.shape[1], tensor.shape[2])
    input_size = (w, h) if isinstance(w, int) and isinstance(h, int) else None
    bgr, scale = _colour_and_range(facts, postprocess, desc.domain)
    sidecar_fmt = desc.sidecar.get("Image.BitmapPixelFormat")
    sidecar_range = desc.sidecar.get("Image.NominalPixelRange")
    if sidecar_fmt or sidecar_range:
        notes.append(
            f"metadata_properties.json Image.* keys ({sidecar_fmt}, {sidecar_range}) "
            "are not used: colour order and range come from the model's metadata_props or the domain default"
        )
    resize = options.resize or desc.resize
    if postprocess in _DETECTION and options.resize is None:
        resize = Resize.PIXEL_COUNT_ALIGN32 if input_size is None else Resize.STRETCH
    if postprocess is Postprocess.ZIPMAP and options.resize is None:
        resize = Resize.SHORTER_SIDE_THEN_CROP  # verified on the 2018 ONNX 1.2 exports
    target = desc.resize_target or (256, 256)
    if resize is Resize.PIXEL_COUNT_ALIGN32 and desc.resize is not Resize.PIXEL_COUNT_ALIGN32:
        target = (512, 512)  # a detector recognised from the model alone (no sidecar)
    if resize is Resize.STRETCH and input_size is not None:
        target = input_size
    elif resize in (Resize.SHORTER_SIDE_THEN_CROP, Resize.CENTRE_SQUARE_THEN_CROP) and target[0] < max(
        input_size or (0, 0)
    ):
        target = (256, 256)
    elif resize is Resize.SHORTER_SIDE_TO_INPUT and input_size is not None:
        target = input_size
    if input_size is None and resize is not Resize.PIXEL_COUNT_ALIGN32:
        raise ModelLoadError(
            desc.root, f"input {tensor.name!r} has a dynamic size {tensor.shape}; only YOLO-grid models may"
        )
    if resize is Resize.SHORTER_SIDE_TO_INPUT and desc.crop and desc.resize_target != desc.crop:
        notes.append(
            f"metadata_properties.json states shorter side -> {desc.resize_target} then crop {desc.crop}; "
            "the exported container's measured recipe (shorter side -> input size) is used instead "
            "(select 'sidecar' to follow the JSON)"
        )
    spec = PreprocessSpec(
        resize=resize,
        input_size=input_size,
        resize_target=target,
        resample=Resample.BICUBIC if resize is Resize.PIXEL_COUNT_ALIGN32 else Resample.BILINEAR,
        bgr=bgr,
        scale=scale,
        mean=_triple(desc.sidecar.get("CustomVision.Preprocess.NormalizeMean"), (0.0, 0.0, 0.0)),
        std=_triple(desc.sidecar.get("CustomVision.Preprocess.NormalizeStd"), (1.0, 1.0, 1.0)),
        nchw=nchw,
        float16=tensor.dtype == "float16",
    )
    return spec, notes


def _detection_params(
    desc: ExportDescription, facts: ModelFacts, postprocess: Postprocess
) -> DetectionParams:
    if postprocess in (Postprocess.SSD, Postprocess.SSD_RAW):
        iou = 0.5 if postprocess is Postprocess.SSD_RAW else 0.45
        return DetectionParams(prob_threshold=0.01, iou_threshold=iou, max_detections=64, anchors=())
    anchors = DEFAULT_YOLO_ANCHORS
    biases = desc.sidecar.get("CustomVision.Postprocess.Yolo.Biases")
    try:
        values = [float(v) for v in json.loads(biases)] if biases else []
    except (json.JSONDecodeError, TypeError, ValueError):
        values = []
    if values and len(values) % 2 == 0:
        anchors = tuple(zip(values[0::2], values[1::2], strict=True))
    elif facts.region_yolo_anchors:
        anchors = facts.region_yolo_anchors
    iou = sidecar_number(desc.sidecar.get("CustomVision.Postprocess.Yolo.NmsThreshold"), 0.45) or 0.45
    if postprocess is Postprocess.YOLO_ACTIVATED:
        return DetectionParams(prob_threshold=0.01, iou_threshold=iou, max_detections=64, anchors=anchors)
    return DetectionParams(prob_threshold=0.10, iou_threshold=iou, max_detections=20, anchors=anchors)
