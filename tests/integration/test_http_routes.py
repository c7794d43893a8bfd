"""Every route shape the exported container answers, both body forms, the container's exact JSON."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from edge_runtime.engine import Predictor, PredictorOptions

CONTAINER_IMAGE_ROUTES = [
    "/image",
    "/p/image",
    "/p/image/nostore",
    "/p/classify/iterations/it/image",
    "/p/classify/iterations/it/image/nostore",
    "/p/detect/iterations/it/image",
    "/p/detect/iterations/it/image/nostore",
]
PROJECT_ID = "0f3c8a52-52e4-4c52-a5d4-1f3a8b1a9f55"
CLOUD_IMAGE_ROUTES = [
    f"/customvision/{version}/Prediction/{PROJECT_ID}/{task}/iterations/Iteration1/image{suffix}"
    for version in ("v3.0", "v3.1")
    for task in ("classify", "detect")
    for suffix in ("", "/nostore")
]
BODY_FORMS = ["octet-stream", "no-content-type", "image/jpeg", "multipart", "form-urlencoded"]


async def post_image(
    client: aiohttp.ClientSession, http: Any, base: str, path: str, data: bytes, form: str
) -> tuple[int, str, str]:
    """POST the image in one of the body forms; return (status, Content-Type, text)."""
    if form == "no-content-type":
        raw = await http.raw_request(base, "POST", path, data)
        return raw.status, raw.headers.get("content-type", ""), raw.text
    kwargs: dict[str, Any]
    if form == "multipart":
        kwargs = {"data": http.multipart(data)}
    elif form == "form-urlencoded":  # curl --data-binary @x.jpg without -H: the container fails here
        kwargs = {"data": data, "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
    else:
        kwargs = {
            "data": data,
            "headers": {"Content-Type": f"application/{form}" if "/" not in form else form},
        }
    async with client.post(base + path, **kwargs) as response:
        if form == "multipart":
            assert response.request_info.headers["Content-Type"].startswith("multipart/form-data")
        return response.status, response.headers.get("Content-Type", ""), await response.text()


@pytest.mark.shared
@pytest.mark.parametrize("form", BODY_FORMS)
@pytest.mark.parametrize("path", CONTAINER_IMAGE_ROUTES + CLOUD_IMAGE_ROUTES)
async def test_image_route_answers_like_the_container(
    client, http, meter_server, meter_jpeg, meter_labels, meter_jpeg_expected, path, form
):
    status, content_type, text = await post_image(client, http, meter_server.url, path, meter_jpeg, form)
    body = http.check_answer(path, status, content_type, text, meter_labels)
    http.check_classification(body, meter_labels, meter_jpeg_expected)


@pytest.mark.shared
@pytest.mark.parametrize(
    "image",
    [
        "test-cat.jpg",
        "test-cheesecake-2730999.jpg",
        "test-dog.jpg",
        "test-dog1.jpg",
        "test-donuts-3291252.jpg",
        "test-fries-2846809.jpg",
    ],
)
async def test_probabilities_match_the_real_container(
    client, http, meter_server, meter_dir, meter_labels, meter_expected, image
):
    data = (meter_dir / image).read_bytes()
    async with client.post(meter_server.url + "/image", data=data) as response:
        body = await http.body_of(response)
    http.check_classification(body, meter_labels, meter_expected[image], tolerance=1e-4)


@pytest.mark.shared
async def test_every_body_form_gives_identical_predictions(client, http, meter_server, meter_jpeg):
    answers = []
    for form in BODY_FORMS:
        status, content_type, text = await post_image(
            client, http, meter_server.url, "/image", meter_jpeg, form
        )
        answers.append(http.check_body(status, content_type, text)["predictions"])
    assert all(answer == answers[0] for answer in answers[1:])


@pytest.mark.shared
async def test_raw_socket_answer_is_byte_compatible(http, meter_server, meter_jpeg):
    """Headers and body straight off the wire (no client library normalising anything)."""
    raw = await http.raw_request(
        meter_server.url, "POST", "/image", meter_jpeg, {"Content-Type": "application/octet-stream"}
    )
    assert raw.status == 200
    assert raw.headers["content-type"] == "application/json"
    assert raw.body.endswith(b"}\n") and raw.body.count(b"\n") == 1
    assert b" " not in raw.body  # compact separators; no label of this model has a space
    assert raw.body.startswith(b'{"created":"')
    body = json.loads(raw.body)
    assert list(body) == sorted(body)
    for prediction in body["predictions"]:
        assert list(prediction) == ["boundingBox", "probability", "tagId", "tagName"]


@pytest.mark.parametrize("form", ["octet-stream", "multipart"])
@pytest.mark.parametrize("path", CONTAINER_IMAGE_ROUTES + CLOUD_IMAGE_ROUTES)
async def test_detection_routes_on_the_demo_detector(client, http, demo_server, path, form):
    status, content_type, text = await post_image(client, http, demo_server.url, path, http.belt(), form)
    body = http.check_answer(path, status, content_type, text)
    http.check_detection(body)


async def test_detections_find_the_drawn_cells(client, http, demo_server):
    """The best stain and glare boxes sit on the cells drawn by Http.belt() (320x256 image)."""
    async with client.post(demo_server.url + "/image", data=http.belt()) as response:
        body = await http.body_of(response)
    best = {}
    for prediction in body["predictions"]:  # sorted: the first of each tag is its best
        best.setdefault(prediction["tagName"], prediction)
    stain, glare = best["stain"]["boundingBox"], best["glare"]["boundingBox"]
    assert best["stain"]["tagId"] == 0 and best["glare"]["tagId"] == 1
    # stain cell (64..95, 64..95), glare cell (224..255, 160..191): centres within a cell width.
    assert abs(stain["left"] + stain["width"] / 2 - 80 / 320) < 0.1
    assert abs(stain["top"] + stain["height"] / 2 - 80 / 256) < 0.125
    assert abs(glare["left"] + glare["width"] / 2 - 240 / 320) < 0.1
    assert abs(glare["top"] + glare["height"] / 2 - 176 / 256) < 0.125


async def test_plain_belt_has_no_detections(client, http, demo_server):
    async with client.post(demo_server.url + "/image", data=http.png(320, 256, (170, 170, 170))) as response:
        body = await http.body_of(response)
    assert body["predictions"] == []


async def test_banner(client, demo_server):
    async with client.get(demo_server.url + "/") as response:
        assert response.status == 200
        assert await response.text() == "CustomVision.ai model host harness"
        assert response.headers["Content-Type"].startswith("text/html")
    async with client.head(demo_server.url + "/") as response:
        assert response.status == 200


@pytest.mark.parametrize("path", ["/classify/iterations/it/image", "/image/", "/IMAGE", "/p/q/image"])
async def test_paths_the_container_does_not_match_are_404(client, http, demo_server, path):
    async with client.post(demo_server.url + path, data=http.belt()) as response:
        assert response.status == 404


@pytest.mark.shared
async def test_concurrent_requests_all_succeed_with_identical_answers(
    client, http, meter_server, meter_jpeg, meter_labels, meter_jpeg_expected
):
    """The container fails 43-73 % of requests at 4-8 concurrent clients; we must not (8 <= max_inflight)."""

    async def one() -> list[dict[str, Any]]:
        async with client.post(meter_server.url + "/image", data=meter_jpeg) as response:
            body = await http.body_of(response)
        http.check_classification(body, meter_labels, meter_jpeg_expected)
        predictions: list[dict[str, Any]] = body["predictions"]
        return predictions

    answers = await asyncio.gather(*(one() for _ in range(8)))
    assert all(answer == answers[0] for answer in answers)


@pytest.mark.shared
@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
async def test_other_pixel_modes_are_accepted(client, http, meter_server, meter_jpeg, mode):
    image = Image.open(io.BytesIO(meter_jpeg)).convert(mode)
    fmt = "JPEG" if mode == "L" else "PNG"
    async with client.post(meter_server.url + "/image", data=http.encode(image, fmt)) as response:
        body = await http.body_of(response)
    assert len(body["predictions"]) == 3


async def test_keep_alive_connection_serves_several_requests(http, demo_server):
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            async with session.post(demo_server.url + "/image", data=http.belt()) as response:
                await http.body_of(response)
                assert response.headers.get("Connection", "keep-alive").lower() == "keep-alive"


async def test_response_ids_are_configurable(client, http, start_server, demo_dir):
    settings = http.settings(
        server={"response_id": "id-1", "response_project": "proj-2", "response_iteration": "it-3"}
    )
    server = start_server(demo_dir, settings)
    async with client.post(server.url + "/image", data=http.belt()) as response:
        assert response.status == 200
        body = json.loads(await response.text())
    assert (body["id"], body["project"], body["iteration"]) == ("id-1", "proj-2", "it-3")


# --------------------------------------------------------------------------------------------------
# Health


async def _poll_ready(client: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with client.get(url + "/health/ready") as response:
            if response.status == 200:
                body: dict[str, Any] = json.loads(await response.text())
                return body
            assert response.status == 503
        assert asyncio.get_running_loop().time() < deadline, "never became ready"
        await asyncio.sleep(0.05)


def blocking_loader(event: threading.Event):
    def load(path: Path, options: PredictorOptions) -> Predictor:
        assert event.wait(30), "the test never released the loader"
        return Predictor.load(path, options)

    return load


@pytest.mark.shared
async def test_health_while_loading_then_ready(client, http, start_server, meter_dir, meter_jpeg):
    release = threading.Event()
    server = start_server(meter_dir, loader=blocking_loader(release), wait=False)
    try:
        async with client.get(server.url + "/health/live") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            assert json.loads(await response.text()) == {"status": "alive"}
        async with client.get(server.url + "/health/ready") as response:
            assert response.status == 503
            assert response.headers["Content-Type"] == "application/json"
            body = json.loads(await response.text())
        assert body["status"] == "loading" and body["error"] is None
        async with client.post(server.url + "/image", data=meter_jpeg) as response:
            await http.error(response, 503, "ModelNotReady")
            assert int(response.headers["Retry-After"]) >= 1
    finally:
        release.set()
    ready = await _poll_ready(client, server.url)
    manifest = json.loads((meter_dir / "cvexport.manifest").read_text())
    model = ready["model"]
    assert ready["status"] == "ready"
    assert model["id"] == manifest["IterationId"]
    assert model["sha1"] == manifest["ModelFileSHA1"].lower()
    assert model["sha1"] == hashlib.sha1((meter_dir / "model.onnx").read_bytes()).hexdigest()
    assert model["task"] == "classification"
    assert model["domain"] == "General (compact)"
    assert model["device"] == "cpu"
    assert model["labels"] == [line for line in (meter_dir / "labels.txt").read_text().split() if line]
    async with client.post(server.url + "/image", data=meter_jpeg) as response:
        await http.body_of(response)


async def test_ready_reports_the_demo_detector(client, demo_server):
    ready = await _poll_ready(client, demo_server.url)
    assert ready["model"]["task"] == "detection"
    assert ready["model"]["id"] == "edge-runtime-demo"
    assert ready["model"]["device"] == "cpu"
    assert ready["model"]["labels"] == ["stain", "glare"]


@pytest.mark.parametrize("damage", ["garbage-model", "missing-folder"])
async def test_model_that_fails_to_load(client, http, start_server, demo_dir, tmp_path, damage):
    if damage == "missing-folder":
        model = tmp_path / "nowhere"
    else:
        model = tmp_path / "broken"
        shutil.copytree(demo_dir, model)
        (model / "model.onnx").write_bytes(b"not an onnx model" * 10)
    server = start_server(model, wait=False)
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with client.get(server.url + "/health/ready") as response:
            assert response.status == 503
            body = json.loads(await response.text())
        if body["status"] != "loading" or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert body["status"] == "failed"
    assert str(model) in body["error"]
    async with client.get(server.url + "/health/live") as response:
        assert response.status == 200
    async with client.post(server.url + "/image", data=http.belt()) as response:
        error = await http.error(response, 503, "ModelNotReady")
    assert "failed to load" in error["message"]


async def test_unexpected_loader_exception_is_reported_as_failed(client, start_server, demo_dir):
    def exploding_loader(path: Path, options: PredictorOptions) -> Predictor:
        raise RuntimeError("unexpected: out of memory while building the session")

    server = start_server(demo_dir, loader=exploding_loader, wait=False)
    await asyncio.sleep(0.5)
    async with client.get(server.url + "/health/ready") as response:
        assert response.status == 503
        body = json.loads(await response.text())
    assert body["status"] == "failed", body
    assert "out of memory" in body["error"]
