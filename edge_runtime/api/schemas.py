"""Response JSON in the exported container's exact shape and formatting.

The container answers with Flask's `jsonify`: keys sorted, compact separators, a trailing newline;
probabilities and box values `round(x, 8)`; `created` is `datetime.utcnow().isoformat()`.
"""

from __future__ import annotations

import json
import uuid
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


# The cloud API's answer (/customvision/v3.x/prediction/...): the official SDKs parse `id`, `project`,
# `iteration` and `tagId` as GUIDs (.NET `Guid`, Java `UUID`) and clients read predictions[0] as the
# answer. Ids are stable, derived from the export: a line's software may key on them.
ID_NAMESPACE = uuid.UUID("5f0b6a0e-3c1d-4d8e-9a57-0c2d4e6b7a10")  # edge_runtime's own, fixed forever


@dataclass(frozen=True, slots=True)
class CloudIds:
    project: str
    iteration: str

    @classmethod
    def derive(cls, project_in_path: str, iteration_id: str, sha1: str, ids: ResponseIds) -> CloudIds:
        """Configured ids win; else the path's project id if it is a GUID (else a UUID named after it),
        the manifest's IterationId if it is a GUID (else a UUID named after the model's SHA-1)."""
        project = ids.project or _guid_or_named(project_in_path, "project")
        iteration = ids.iteration or _guid_or_named(iteration_id, "sha1:" + sha1, fallback_only=True)
        return cls(project, iteration)


def _guid_or_named(value: str, name: str, fallback_only: bool = False) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return str(uuid.uuid5(ID_NAMESPACE, name if fallback_only else f"{name}:{value}"))


def tag_guid(tag_name: str) -> str:
    """The same label has the same id in every model (a retrained export keeps its tags' ids)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"tag:{tag_name}"))


def cloud_prediction_body(result: PredictionResult, ids: CloudIds) -> dict[str, Any]:
    ranked = sorted(result.predictions, key=lambda p: p.probability, reverse=True)
    return {
        "id": str(uuid.uuid4()),
        "project": ids.project,
        "iteration": ids.iteration,
        "created": utc_created() + "Z",
        "predictions": [
            {**_prediction(p), "tagId": tag_guid(p.tag_name), "tagType": "Regular"} for p in ranked
        ],
    }
