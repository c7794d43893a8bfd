"""Output layouts recognised by graph signature: input/output names where a contract names them (AutoML
for Images), otherwise ranks and shapes only ("by shape, not by brand").

`LAYOUTS` is the table of generic detector heads, each with the shapes it accepts and the class counts
those shapes imply; `recognise` tries AutoML for Images' documented signatures first (when labels.json
is there), then the table. An output that fits nothing, or fits more than one layout, is refused with
what was found (inputs, outputs, files) and what is known; a label count that no shape allows is refused
naming the labels file. `DECODERS` says in words what each decoder does (`inspect` prints it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edge_runtime.errors import ModelLoadError, UnsupportedModelError
from edge_runtime.model.spec import Postprocess, TensorInfo

DECODERS: dict[Postprocess, str] = {
    Postprocess.MULTICLASS: "probability vector, every label (softmax when the outputs are logits)",
    Postprocess.MULTILABEL: "independent probabilities, every label (sigmoid when the outputs are logits)",
    Postprocess.ZIPMAP: "label -> probability map embedded in the model",
    Postprocess.YOLO: "YOLOv2 grid: sigmoid/exp with anchors, softmax classes, the export's greedy NMS",
    Postprocess.YOLO_ACTIVATED: "activated YOLOv2 grid (RegionYolo), anchors, the export's greedy NMS",
    Postprocess.SSD: "detected_boxes/scores/classes from the graph, x1,y1,x2,y2 fractions",
    Postprocess.SSD_RAW: "raw_boxes (cx,cy,w,h) + raw_probs with background, greedy NMS",
    Postprocess.LOGITS_MULTICLASS: "logits [B, C] -> softmax, every label",
    Postprocess.LOGITS_MULTILABEL: "logits [B, C] -> sigmoid, the labels over the score threshold",
    Postprocess.OBJECTNESS: (
        "[B, N, 5+C] cx,cy,w,h in input pixels, objectness x best class probability, class-wise NMS"
    ),
    Postprocess.ANCHOR_FREE: "[B, 4+C, N] cx,cy,w,h in input pixels, best class score, class-wise NMS",
    Postprocess.END_TO_END: "[B, K, 6] x1,y1,x2,y2 in input pixels, score, class (suppressed in the graph)",
    Postprocess.DETR: (
        "[B, Q, 4] cx,cy,w,h input fractions + [B, Q, C or 1+C] logits (sigmoid, background first), "
        "one class per query, no NMS"
    ),
    Postprocess.BOX_LISTS: (
        "boxes_i/labels_i/scores_i per image, x1,y1,x2,y2 in input pixels, NMS inside the graph"
    ),
}


class Family(StrEnum):
    AUTOML = "AutoML for Images"
    GENERIC = "generic ONNX"


@dataclass(frozen=True, slots=True)
class Recognised:
    postprocess: Postprocess
    family: Family
    variant: str  # "YOLOv5", "Faster R-CNN", "multi-class" ... ("" for generic layouts)
    outputs: tuple[str, ...]  # the outputs the decoder reads, in its order
    batch: int  # images per run: > 1 for a fixed-batch model


@dataclass(frozen=True, slots=True)
class Fit:
    """How an output list fits a layout: the outputs read and the class counts their shapes allow
    (empty: the shapes do not say)."""

    outputs: tuple[str, ...]
    classes: frozenset[int]

    def allows(self, count: int) -> bool:
        return not self.classes or count in self.classes


def _static(dim: int | str | None) -> int | None:
    return dim if isinstance(dim, int) else None


def _first_rank3(outputs: Sequence[TensorInfo]) -> TensorInfo | None:
    return outputs[0] if outputs and len(outputs[0].shape) == 3 else None


def _fit_objectness(outputs: Sequence[TensorInfo]) -> Fit | None:
    head = _first_rank3(outputs)
    size = _static(head.shape[2]) if head else None
    return Fit((head.name,), frozenset({size - 5})) if head and size and size >= 6 else None


def _fit_anchor_free(outputs: Sequence[TensorInfo]) -> Fit | None:
    head = _first_rank3(outputs)
    size = _static(head.shape[1]) if head else None
    return Fit((head.name,), frozenset({size - 4})) if head and size and size >= 5 else None


def _fit_end_to_end(outputs: Sequence[TensorInfo]) -> Fit | None:
    head = _first_rank3(outputs)
    return Fit((head.name,), frozenset()) if head and head.shape[2] == 6 else None


def _fit_detr(outputs: Sequence[TensorInfo]) -> Fit | None:
    heads = [o for o in outputs if len(o.shape) == 3]
    boxes = next((o for o in heads if o.shape[2] == 4), None)
    if boxes is None:
        return None
    for logits in heads:
        size = _static(logits.shape[2])
        same_queries = boxes.shape[1] == logits.shape[1] or None in (boxes.shape[1], logits.shape[1])
        if logits is not boxes and size and size >= 1 and same_queries:
            return Fit((boxes.name, logits.name), frozenset({size, size - 1}) - {0})
    return None


@dataclass(frozen=True, slots=True)
class Layout:
    postprocess: Postprocess
    fit: Callable[[Sequence[TensorInfo]], Fit | None]


LAYOUTS: tuple[Layout, ...] = (
    Layout(Postprocess.OBJECTNESS, _fit_objectness),
    Layout(Postprocess.ANCHOR_FREE, _fit_anchor_free),
    Layout(Postprocess.END_TO_END, _fit_end_to_end),
    Layout(Postprocess.DETR, _fit_detr),
)
CHOOSABLE = (
    Postprocess.LOGITS_MULTICLASS,
    Postprocess.LOGITS_MULTILABEL,
    *(layout.postprocess for layout in LAYOUTS),
)


def _shape(tensor: TensorInfo) -> str:
    return f"{tensor.name!r} {list(tensor.shape)} {tensor.dtype}"


def found(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], root: Path) -> str:
    files = ", ".join(sorted(p.name for p in root.iterdir())) if root.is_dir() else "?"
    return (
        f"inputs {', '.join(_shape(t) for t in inputs) or 'none'}; "
        f"outputs {', '.join(_shape(t) for t in outputs) or 'none'}; files {files}"
    )


def _batch_of(model: Path, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> int:
    """A fixed batch: the image input's static first dimension; outputs with another one are refused."""
    batch = _static(inputs[0].shape[0]) if inputs and inputs[0].shape else None
    for output in outputs:
        size = _static(output.shape[0]) if output.shape else None
        if batch and size and size != batch:
            raise ModelLoadError(
                model,
                f"fixed batch mismatch: input {inputs[0].name!r} takes {batch} images but output "
                f"{output.name!r} has {size}",
            )
    return batch or 1


_PER_IMAGE = re.compile(r"^(boxes|labels|scores|masks)_(\d+)$")


def _box_lists(model: Path, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> Recognised | None:
    """Faster R-CNN / RetinaNet / Mask R-CNN: boxes_i, labels_i, scores_i (+ masks_i) for i < batch."""
    per_image: dict[int, list[str]] = {}
    for output in outputs:
        match = _PER_IMAGE.match(output.name)
        if match is None:
            return None
        per_image.setdefault(int(match.group(2)), []).append(match.group(1))
    if not per_image:
        return None
    first = per_image.get(0, [])
    kinds = ["boxes", "labels", "scores"] + (["masks"] if "masks" in first else [])
    batch = len(per_image)
    for index in range(batch):
        if sorted(per_image.get(index, [])) != sorted(kinds):
            raise ModelLoadError(
                model,
                f"fixed-batch outputs are incomplete: image {index} has {per_image.get(index, [])}, "
                f"expected {kinds} for each of {batch} images",
            )
    size = _static(inputs[0].shape[0]) if inputs and inputs[0].shape else None
    if size and size != batch:
        raise ModelLoadError(
            model,
            f"fixed batch mismatch: input {inputs[0].name!r} takes {size} images but the outputs are for "
            f"{batch}",
        )
    retina = first.index("scores") < first.index("labels")
    variant = "Mask R-CNN" if "masks" in first else "RetinaNet" if retina else "Faster R-CNN"
    names = ("boxes_0", "labels_0", "scores_0")
    return Recognised(Postprocess.BOX_LISTS, Family.AUTOML, variant, names, batch)


def _label_count_error(
    labels_path: Path, count: int, fits: Sequence[tuple[Postprocess, Fit]]
) -> ModelLoadError:
    options = "; ".join(
        f"{kind.value} with {' or '.join(str(n) for n in sorted(fit.classes))} classes" for kind, fit in fits
    )
    return ModelLoadError(labels_path, f"{count} labels, but the model's outputs fit {options}")


def recognise_automl(
    model: Path,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    labels_path: Path,
    count: int,
    multilabel: bool | None,
) -> Recognised | None:
    """AutoML for Images' documented signatures; None when the names are not AutoML's.
    `multilabel` None: not known (the caller refuses a classifier then)."""
    names = [t.name for t in inputs]
    if names == ["input1"] and [o.name for o in outputs] == ["output1"] and len(outputs[0].shape) == 2:
        size = _static(outputs[0].shape[1])
        if size is not None and size != count:
            problem = f"{count} labels but the model output 'output1' has {size} classes"
            raise ModelLoadError(labels_path, problem)
        kind = Postprocess.LOGITS_MULTILABEL if multilabel else Postprocess.LOGITS_MULTICLASS
        variant = "multi-label classification" if multilabel else "multi-class classification"
        return Recognised(kind, Family.AUTOML, variant, ("output1",), _batch_of(model, inputs, outputs))
    if names != ["input"]:
        return None
    lists = _box_lists(model, inputs, outputs)
    if lists is not None:
        return lists
    fit = _fit_objectness(outputs)
    if fit is None:
        return None
    if not fit.allows(count):
        raise _label_count_error(labels_path, count, [(Postprocess.OBJECTNESS, fit)])
    batch = _batch_of(model, inputs, outputs[:1])
    return Recognised(Postprocess.OBJECTNESS, Family.AUTOML, "YOLOv5", fit.outputs, batch)


def recognise_generic(
    model: Path,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    labels_path: Path,
    count: int,
    chosen: Postprocess | None,
) -> Recognised:
    """The generic layout the shapes (and the label count) allow; `chosen` (model.layout) picks among
    several."""
    fits = [(layout.postprocess, fit) for layout in LAYOUTS if (fit := layout.fit(outputs)) is not None]
    matching = [(kind, fit) for kind, fit in fits if fit.allows(count)]
    known = ", ".join(layout.postprocess.value for layout in LAYOUTS)
    if chosen is not None:
        matching = [(kind, fit) for kind, fit in matching if kind is chosen]
        if not matching:
            allowed = ", ".join(kind.value for kind, fit in fits if fit.allows(count)) or "none"
            raise UnsupportedModelError(
                model,
                f"model.layout {chosen.value} does not fit this model "
                f"({found(inputs, outputs, model.parent)}); layouts that fit: {allowed}",
            )
    if not matching and any(fit.classes for _, fit in fits):
        raise _label_count_error(labels_path, count, [(kind, fit) for kind, fit in fits if fit.classes])
    if not matching:
        raise UnsupportedModelError(
            model, f"unknown output layout ({found(inputs, outputs, model.parent)}); known layouts: {known}"
        )
    if len(matching) > 1:
        choices = " | ".join(kind.value for kind, _ in matching)
        raise UnsupportedModelError(
            model,
            f"the outputs fit more than one layout ({choices}) with {count} labels "
            f"({found(inputs, outputs, model.parent)}): set model.layout to one of them",
        )
    kind, fit = matching[0]
    used = [o for o in outputs if o.name in fit.outputs]
    return Recognised(kind, Family.GENERIC, "", fit.outputs, _batch_of(model, inputs, used))
