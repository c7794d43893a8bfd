"""Both models on the same images: what compare() is handed (the predicting half of the report)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.compare.report import ImageFailure
from edge_runtime.domain import PredictionResult
from edge_runtime.engine import Predictor
from edge_runtime.errors import EdgeRuntimeError, ImageError


@dataclass(slots=True)
class Predicted:
    names: list[str] = field(default_factory=list)  # the images both models predicted, in order
    old: list[PredictionResult] = field(default_factory=list)
    new: list[PredictionResult] = field(default_factory=list)


def predict_both(
    images: Sequence[Path], old: Predictor, new: Predictor, failures: list[ImageFailure]
) -> Predicted:
    """Each image through both models, one after the other; an image either fails is added to
    `failures` (the model that failed named) and left out of the comparison."""
    predicted = Predicted()
    for image in images:
        outcome = _one(image, old, new)
        if isinstance(outcome, str):
            failures.append(ImageFailure(str(image), outcome))
            continue
        predicted.names.append(str(image))
        predicted.old.append(outcome[0])
        predicted.new.append(outcome[1])
    return predicted


def _one(image: Path, old: Predictor, new: Predictor) -> tuple[PredictionResult, PredictionResult] | str:
    """Both models' predictions of one image file, or why there are none."""
    try:
        data = image.read_bytes()
    except OSError as exc:
        return exc.strerror or str(exc)
    results: list[PredictionResult] = []
    for role, predictor in (("old", old), ("new", new)):
        try:
            results.append(predictor.predict_bytes(data))
        except ImageError as exc:  # the same bytes and limits for both: not a model's fault
            return str(exc)
        except EdgeRuntimeError as exc:
            return f"{role} model: {exc}"
    return results[0], results[1]
