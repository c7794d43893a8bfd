"""Microsoft's own prediction SDK (azure-cognitiveservices-vision-customvision 3.1.1) against a real server.

The SDK calls `{endpoint}/customvision/v3.1/prediction/{projectId}/...` and deserialises the answer into its
models (msrest): every method must parse, with the values the model gives, and every error must raise
CustomVisionErrorException with the status and code a client would branch on.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
from azure.cognitiveservices.vision.customvision.prediction.models import (
    CustomVisionErrorException,
    ImagePrediction,
)
from msrest.authentication import ApiKeyCredentials

from edge_runtime.demo.model import DEMO_LABELS

KEY = "line-3-prediction-key"
PROJECT = "0f3c8a52-52e4-4c52-a5d4-1f3a8b1a9f55"
LIMIT = 256 * 1024
METHODS = ["classify_image", "classify_image_with_no_store", "detect_image", "detect_image_with_no_store"]
URL_METHODS = [f"{m.replace('_image', '_image_url')}" for m in METHODS]


def client_for(server: Any, key: str = KEY) -> CustomVisionPredictionClient:
    credentials = ApiKeyCredentials(in_headers={"Prediction-key": key})
    return CustomVisionPredictionClient(server.url, credentials)


def sdk_settings(http: Any) -> Any:
    return http.settings(
        server={"prediction_key": KEY, "max_body_bytes": LIMIT},
        url_fetch={"allow": ["127.0.0.1/32"], "connect_timeout_s": 2, "read_timeout_s": 2},
    )


@pytest.fixture(scope="module")
def meter(module_servers: Any, meter_dir: Path, http: Any) -> Any:
    return module_servers(meter_dir, sdk_settings(http))


@pytest.fixture(scope="module")
def demo(module_servers: Any, demo_dir: Path, http: Any) -> Any:
    return module_servers(demo_dir, sdk_settings(http))


@pytest.fixture(scope="module")
def images(module_servers: Any, meter_dir: Path, http: Any) -> Any:
    """Serves /meter.jpg and /belt.jpg on 127.0.0.1 (allow-listed above)."""
    files = {"meter.jpg": (meter_dir / "test-dog1.jpg").read_bytes(), "belt.jpg": http.belt()}

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=files[request.match_info["name"]], content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name}", image)
    return module_servers.serve_app(app)


def check_ids(answer: ImagePrediction) -> None:
    assert isinstance(answer, ImagePrediction)
    uuid.UUID(answer.id)
    assert answer.project == PROJECT  # a GUID in the path is echoed, like the cloud
    uuid.UUID(answer.iteration)
    assert answer.created.tzinfo is not None  # msrest parsed the ISO time with its Z
    probabilities = [p.probability for p in answer.predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    for prediction in answer.predictions:
        uuid.UUID(prediction.tag_id)
        assert prediction.tag_type == "Regular"


def check_meter(answer: ImagePrediction, labels: list[str], expected: list[float]) -> None:
    check_ids(answer)
    got = {p.tag_name: p.probability for p in answer.predictions}
    assert set(got) == set(labels)
    for label, want in zip(labels, expected, strict=True):
        assert abs(got[label] - want) <= 1e-4
    assert all(p.bounding_box is None for p in answer.predictions)


def check_belt(answer: ImagePrediction) -> None:
    check_ids(answer)
    assert {p.tag_name for p in answer.predictions} == set(DEMO_LABELS)
    for p in answer.predictions:
        box = p.bounding_box
        assert 0 <= box.left <= 1 and 0 <= box.top <= 1 and box.width > 0 and box.height > 0


@pytest.mark.shared
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "file"])
def test_image_methods_parse_into_the_sdk_models(
    method: str,
    as_file: bool,
    meter: Any,
    demo: Any,
    meter_jpeg: bytes,
    meter_labels: list[str],
    meter_jpeg_expected: list[float],
    http: Any,
) -> None:
    classify = method.startswith("classify")
    data = meter_jpeg if classify else http.belt()
    call: Callable[..., ImagePrediction] = getattr(client_for(meter if classify else demo), method)
    answer = call(PROJECT, "Iteration1", io.BytesIO(data) if as_file else data)
    check_meter(answer, meter_labels, meter_jpeg_expected) if classify else check_belt(answer)


@pytest.mark.shared
@pytest.mark.parametrize("method", URL_METHODS)
def test_url_methods_parse_into_the_sdk_models(
    method: str,
    meter: Any,
    demo: Any,
    images: Any,
    meter_dir: Path,
    meter_labels: list[str],
    meter_expected: dict[str, list[float]],
) -> None:
    classify = method.startswith("classify")
    call = getattr(client_for(meter if classify else demo), method)
    answer = call(PROJECT, "Iteration1", f"{images.url}/{'meter' if classify else 'belt'}.jpg")
    check_meter(answer, meter_labels, meter_expected["test-dog1.jpg"]) if classify else check_belt(answer)


@pytest.mark.shared
def test_ids_are_stable_across_requests_and_tag_ids_per_label(meter: Any, meter_jpeg: bytes) -> None:
    first = client_for(meter).classify_image(PROJECT, "it", meter_jpeg)
    second = client_for(meter).classify_image_with_no_store(PROJECT, "it", meter_jpeg)
    assert first.iteration == second.iteration and first.id != second.id
    assert {p.tag_name: p.tag_id for p in first.predictions} == {
        p.tag_name: p.tag_id for p in second.predictions
    }
    assert len({p.tag_id for p in first.predictions}) == len(first.predictions)


def error_of(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(CustomVisionErrorException) as info:
        call()
    error = info.value
    return error.response.status_code, error.error.code


@pytest.mark.shared
def test_errors_raise_the_sdk_exception_with_status_and_code(
    meter: Any, meter_jpeg: bytes, images: Any
) -> None:
    good = client_for(meter)
    assert error_of(lambda: client_for(meter, "wrong").classify_image(PROJECT, "it", meter_jpeg)) == (
        401,
        "Unauthorized",
    )
    assert error_of(lambda: good.classify_image(PROJECT, "it", b"not an image")) == (
        400,
        "BadRequestImageFormat",
    )
    assert error_of(lambda: good.classify_image(PROJECT, "it", b""))[0] == 400
    assert error_of(lambda: good.classify_image(PROJECT, "it", b"\xff" * (LIMIT + 1))) == (
        413,
        "BadRequestImageSizeBytes",
    )
    refused = "http://169.254.169.254/latest/meta-data"
    assert error_of(lambda: good.classify_image_url(PROJECT, "it", refused)) == (400, "BadRequestImageUrl")
    assert error_of(lambda: good.classify_image_url(PROJECT, "it", f"{images.url}/missing.jpg"))[0] == 400
