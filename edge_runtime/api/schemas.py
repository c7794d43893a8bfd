"""Response JSON in the exported container's exact shape and formatting.

The container answers with Flask's `jsonify`: keys sorted, compact separators, a trailing newline;
probabilities and box values `round(x, 8)`; `created` is `datetime.utcnow().isoformat()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge_runtime.domain import Prediction, PredictionResult


@dataclass(frozen=True, slots=True)
class ResponseIds:
    """The container sends empty strings; the cloud API sends GUIDs. Configurable."""

    id: str = ""
    project: str = ""
    iteration: str = ""


def _prediction(p: Prediction) -> dict[str, Any]:
    box = p.bounding_box
    return {
        "boundingBox": None
        if box is None
        else {
            "left": round(box.left, 8),
            "top": round(box.top, 8),
            "width": round(box.width, 8),
            "height": round(box.height, 8),
        },
        "probability": round(p.probability, 8),
        "tagId": "" if p.tag_id is None else p.tag_id,
        "tagName": p.tag_name,
    }


def utc_created(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat()


def prediction_body(result: PredictionResult, ids: ResponseIds = ResponseIds()) -> dict[str, Any]:
    return {
        "created": utc_created(),
        "id": ids.id,
        "iteration": ids.iteration,
        "predictions": [_prediction(p) for p in result.predictions],
        "project": ids.project,
    }


def dumps(body: Any) -> str:
    """Flask jsonify formatting: sorted keys, no spaces, newline at the end."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"
