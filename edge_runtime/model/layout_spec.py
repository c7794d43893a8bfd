"""A ModelSpec for a model recognised by its graph signature (model/layouts.py): AutoML for Images'
exports and generic detector heads. The recipe and thresholds of each:

AutoML classification   torchvision-crop: shorter side -> valid_resize_size (256), centre crop to the input
                        (valid_crop_size, 224); RGB /255, ImageNet mean/std (none when the graph holds it:
                        enable_onnx_normalization); softmax, or sigmoid with labels over 0.5
AutoML YOLOv5           letterbox-no-upscale to the input (img_size, 640), grey 114, RGB /255; score 0.1
                        (box_score_thresh), NMS IoU 0.5 (nms_iou_thresh), at most 300
AutoML Faster R-CNN, RetinaNet, Mask R-CNN
                        stretch to the input (800x600 when dynamic), PIL's default (bicubic), RGB /255,
                        ImageNet mean/std; score 0.3 (box_score_thresh), at most 100
                        (box_detections_per_img); NMS is in the graph; Mask R-CNN's masks are not returned
generic heads           letterbox to the input (640x640 when dynamic), grey 114, RGB /255 (DETR: stretch,
                        ImageNet mean/std); score 0.25, NMS IoU 0.45, at most 300

Configuration wins over settings.json, which wins over the defaults above (`Overrides`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_runtime.domain import Task
from edge_runtime.errors import ModelLoadError
from edge_runtime.model.automl import SETTINGS_JSON, AutoMLFiles, AutoMLSettings
from edge_runtime.model.layouts import Family, Recognised, recognise_automl, recognise_generic
from edge_runtime.model.modelfile import ModelFacts
from edge_runtime.model.spec import (
    DetectionParams,
    ModelSpec,
    Postprocess,
    PreprocessSpec,
    Resample,
    Resize,
    TensorInfo,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NO_MEAN, NO_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
CLASSIFIERS = (Postprocess.LOGITS_MULTICLASS, Postprocess.LOGITS_MULTILABEL)
CLASSIFICATION_RECIPES: tuple[Resize, ...] = (
    Resize.TORCHVISION_CROP,
    Resize.SHORTER_SIDE_TO_INPUT,
    Resize.SHORTER_SIDE_THEN_CROP,
    Resize.CENTRE_SQUARE_THEN_CROP,
    Resize.STRETCH,
)
DETECTION_RECIPES: tuple[Resize, ...] = (Resize.LETTERBOX, Resize.LETTERBOX_NO_UPSCALE, Resize.STRETCH)
GENERIC = DetectionParams(prob_threshold=0.25, iou_threshold=0.45, max_detections=300, anchors=())


@dataclass(frozen=True, slots=True)
class Overrides:
    """The model.* settings for these layouts; None: the export's value or the default."""

    resize: Resize | None = None
    layout: Postprocess | None = None
    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None

    def applied(self, params: DetectionParams) -> DetectionParams:
        return DetectionParams(
            prob_threshold=params.prob_threshold if self.score_threshold is None else self.score_threshold,
            iou_threshold=params.iou_threshold if self.iou_threshold is None else self.iou_threshold,
            max_detections=params.max_detections if self.max_detections is None else self.max_detections,
            anchors=params.anchors,
        )


@dataclass(frozen=True, slots=True)
class Found:
    """What the loader already read: the export folder, the model file and its facts, the labels."""

    root: Path
    model_path: Path
    facts: ModelFacts
    labels: tuple[str, ...]
    labels_path: Path
    automl: AutoMLFiles | None


def recognise(found: Found, overrides: Overrides) -> Recognised:
    inputs, outputs = found.facts.inputs, found.facts.outputs
    count = len(found.labels)
    if found.automl is not None:
        settings = found.automl.settings
        multilabel = settings.multilabel
        if overrides.layout in CLASSIFIERS:
            multilabel = overrides.layout is Postprocess.LOGITS_MULTILABEL
        recognised = recognise_automl(found.model_path, inputs, outputs, found.labels_path, count, multilabel)
        if recognised is not None:
            if recognised.postprocess in CLASSIFIERS and multilabel is None:
                path = settings.path or found.root / SETTINGS_JSON
                said = "does not say (multilabel / task_type)" if settings.path else "is missing"
                raise ModelLoadError(
                    path,
                    f"{said}: an AutoML for Images classifier (input1 -> output1 logits) may be multi-class "
                    "(softmax) or multi-label (sigmoid) and the model cannot tell; copy the run's "
                    "settings.json beside model.onnx or set model.layout: logits-multiclass | "
                    "logits-multilabel",
                )
            return recognised
    chosen = overrides.layout if overrides.layout not in CLASSIFIERS else None
    return recognise_generic(found.model_path, inputs, outputs, found.labels_path, count, chosen)


def _image_input(found: Found) -> TensorInfo:
    images = [t for t in found.facts.inputs if len(t.shape) == 4]
    if len(images) != 1:
        raise ModelLoadError(
            found.model_path,
            f"expected one image input (4-D tensor), found {[(t.name, t.shape) for t in found.facts.inputs]}",
        )
    return images[0]


def _recipe(found: Found, recognised: Recognised, overrides: Overrides, notes: list[str]) -> PreprocessSpec:
    settings = found.automl.settings if found.automl else AutoMLSettings(None)
    kind, automl = recognised.postprocess, recognised.family is Family.AUTOML
    tensor = _image_input(found)
    nchw = tensor.shape[1] == 3 or tensor.shape[-1] != 3
    h, w = (tensor.shape[2], tensor.shape[3]) if nchw else (tensor.shape[1], tensor.shape[2])
    static = (w, h) if isinstance(w, int) and isinstance(h, int) else None
    mean, std, resample = NO_MEAN, NO_STD, Resample.BILINEAR
    if kind in CLASSIFIERS:
        crop = settings.count("valid_crop_size") or 224
        input_size = static or (crop, crop)
        if static and settings.count("valid_crop_size") not in (None, static[0]):
            notes.append(f"settings.json valid_crop_size {crop} differs from the input {static}: input used")
        side = settings.count("valid_resize_size") or 256
        if side < min(input_size):
            raise ModelLoadError(
                settings.path or found.model_path,
                f"valid_resize_size {side} is smaller than the model's input {input_size[0]}x{input_size[1]}",
            )
        resize, target, allowed = Resize.TORCHVISION_CROP, (side, side), CLASSIFICATION_RECIPES
        if not settings.flag("enable_onnx_normalization"):
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            notes.append("settings.json enable_onnx_normalization: the graph normalises; fed RGB 0..1")
    elif kind is Postprocess.BOX_LISTS:
        input_size = static or (800, 600)
        if static is None:
            notes.append("the input size is dynamic: pictures are stretched to 800x600 (the how-to's size)")
        resize, target, allowed = Resize.STRETCH, input_size, DETECTION_RECIPES
        mean, std, resample = IMAGENET_MEAN, IMAGENET_STD, Resample.BICUBIC
    else:
        side = (settings.count("img_size", "image_size") if automl else None) or 640
        input_size = static or (side, side)
        if static is None:
            notes.append(f"the input size is dynamic: pictures are fitted to {side}x{side}")
        resize = Resize.LETTERBOX_NO_UPSCALE if automl else Resize.LETTERBOX
        if kind is Postprocess.DETR:
            resize, mean, std = Resize.STRETCH, IMAGENET_MEAN, IMAGENET_STD
        target, allowed = input_size, DETECTION_RECIPES
    if overrides.resize is not None:
        if overrides.resize not in allowed:
            raise ModelLoadError(
                found.model_path,
                f"model.resize {overrides.resize.value} cannot be used with the {kind.value} layout "
                f"(use {' | '.join(r.value for r in allowed)})",
            )
        resize = overrides.resize
    if resize in (Resize.LETTERBOX, Resize.LETTERBOX_NO_UPSCALE):
        resample = Resample.CV2_LINEAR
    if resize is Resize.STRETCH:
        target = input_size
    return PreprocessSpec(
        resize=resize,
        input_size=input_size,
        resize_target=target,
        resample=resample,
        bgr=False,
        scale=1 / 255,
        mean=mean,
        std=std,
        nchw=nchw,
        float16=tensor.dtype == "float16",
        batch=recognised.batch,
    )


def _detection(found: Found, recognised: Recognised, notes: list[str]) -> DetectionParams:
    settings = found.automl.settings if found.automl else AutoMLSettings(None)
    kind = recognised.postprocess
    if kind in CLASSIFIERS:  # the sample's 0.5 for multi-label; multi-class lists every label
        threshold = 0.5 if kind is Postprocess.LOGITS_MULTILABEL else 0.0
        return DetectionParams(threshold, 0.0, len(found.labels), anchors=())
    if recognised.family is Family.GENERIC:
        return GENERIC
    score = settings.fraction("box_score_thresh", "box_score_threshold")
    iou = settings.fraction("nms_iou_thresh", "nms_iou_threshold", "box_iou_thresh", "box_nms_thresh")
    if kind is Postprocess.OBJECTNESS:
        return DetectionParams(
            prob_threshold=0.1 if score is None else score,
            iou_threshold=0.5 if iou is None else iou,
            max_detections=300,
            anchors=(),
        )
    if recognised.variant == "Mask R-CNN":
        notes.append("Mask R-CNN: boxes, labels and scores are answered; the masks are not returned")
    most = settings.count("box_detections_per_img", "box_detections_per_image")
    return DetectionParams(
        prob_threshold=0.3 if score is None else score,
        iou_threshold=0.5 if iou is None else iou,  # applied inside the graph; shown for reference
        max_detections=100 if most is None else most,
        anchors=(),
    )


def layout_spec(found: Found, overrides: Overrides, sha1: str, source: Path | None) -> ModelSpec:
    recognised = recognise(found, overrides)
    notes: list[str] = []
    preprocess = _recipe(found, recognised, overrides, notes)
    detection = overrides.applied(_detection(found, recognised, notes))
    if found.automl is not None and found.automl.settings.path is None:
        notes.append("no settings.json: AutoML's documented defaults are used")
    if recognised.batch > 1:
        notes.append(f"fixed batch of {recognised.batch}: each picture is run {recognised.batch} times")
    model_name = found.automl.settings.text("model_name") if found.automl else None
    variant = recognised.variant or f"{recognised.postprocess.value} detector"
    domain = f"{recognised.family.value}: {variant}" + (f" ({model_name})" if model_name else "")
    classifier = recognised.postprocess in CLASSIFIERS
    return ModelSpec(
        root=found.root,
        model_path=found.model_path,
        format=found.facts.format,
        task=Task.CLASSIFICATION if classifier else Task.DETECTION,
        postprocess=recognised.postprocess,
        domain=domain,
        flavour=None,
        labels=found.labels,
        preprocess=preprocess,
        inputs=found.facts.inputs,
        outputs=found.facts.outputs,
        detection=detection,
        sha1=sha1,
        metadata_props=dict(found.facts.metadata_props),
        notes=tuple(notes),
        source=source,
        decoder_outputs=recognised.outputs,
    )
