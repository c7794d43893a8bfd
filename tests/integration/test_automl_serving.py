"""Every format recognised by signature answers POST /image (and the cloud route) in the container's JSON,
with the boxes and probabilities worked out by hand; configuration reaches the decoder through the
settings; `edge-runtime inspect` names the format, recipe and decoder."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from layout_graphs import automl_box_lists, automl_classifier, automl_yolo, head_model, write_folder
from PIL import Image

from edge_runtime.cli import main

PICTURE = (1280, 960)  # letterboxed into 640 x 640 at (0, 80, 640, 480)
BOX = {"height": 0.1, "left": 0.45, "top": 0.45, "width": 0.1}
CLOUD = "/customvision/v3.1/Prediction/0f3c8a52-52e4-4c52-a5d4-1f3a8b1a9f55/detect/iterations/it/image"


def _yolo(folder: Path) -> Path:
    # objectness x class probability, exact in binary: 0.875 x 0.875 and 0.75 x 0.875
    rows = np.array(
        [[320, 320, 64, 48, 0.875, 0.125, 0.875], [324, 320, 64, 48, 0.75, 0.125, 0.875]], np.float32
    )
    return write_folder(folder, automl_yolo(rows), ["can", "bottle"], settings={"model_name": "yolov5"})


def _rcnn(order: tuple[str, ...], masks: bool) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        # 800 x 600 input pixels: (360, 270)..(440, 330) is (0.45, 0.45)..(0.55, 0.55) once stretched
        model = automl_box_lists([[360, 270, 440, 330], [0, 0, 8, 6]], [2, 1], [0.875, 0.25], order, masks)
        return write_folder(folder, model, ["--bg--", "scratch", "dent"])

    return build


def _classifier(multilabel: bool) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        graph, _, _ = automl_classifier(3, size=64)
        return write_folder(folder, graph, ["ok", "bent", "torn"], settings={"multilabel": multilabel})

    return build


def _anchor_free(folder: Path) -> Path:
    columns = np.array([[320, 320, 64, 48, 0.125, 0.875], [10, 10, 4, 4, 0.1, 0.1]], np.float32).T[None]
    return write_folder(
        folder, head_model("images", [("output0", columns)]), ["stain", "glare"], "labels.txt"
    )


def _end_to_end(folder: Path) -> Path:
    rows = np.array([[[288, 296, 352, 344, 0.875, 1], [0, 0, 9, 9, 0.125, 0]]], np.float32)
    return write_folder(folder, head_model("images", [("output0", rows)]), ["a", "b", "c"], "labels.txt")


def _detr(folder: Path) -> Path:
    boxes = np.array([[[0.5, 0.5, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]]], np.float32)
    logits = np.array([[[9.0, -9.0, 0.0], [9.0, -9.0, -9.0]]], np.float32)  # background first
    return write_folder(
        folder, head_model("input", [("dets", boxes), ("labels", logits)]), ["a", "b"], "labels.txt"
    )


SIGMOID_0 = 0.5  # sigmoid(0): the DETR query's class logit 0.0
DETECTORS: dict[str, tuple[Callable[[Path], Path], list[dict[str, Any]]]] = {
    "automl-yolov5": (
        _yolo,
        [{"tagName": "bottle", "tagId": 1, "probability": 0.765625, "boundingBox": BOX}],
    ),
    "automl-faster-rcnn": (
        _rcnn(("boxes", "labels", "scores"), False),
        [{"tagName": "dent", "tagId": 2, "probability": 0.875, "boundingBox": BOX}],
    ),
    "automl-retinanet": (
        _rcnn(("boxes", "scores", "labels"), False),
        [{"tagName": "dent", "tagId": 2, "probability": 0.875, "boundingBox": BOX}],
    ),
    "automl-mask-rcnn": (
        _rcnn(("boxes", "labels", "scores"), True),
        [{"tagName": "dent", "tagId": 2, "probability": 0.875, "boundingBox": BOX}],
    ),
    "anchor-free": (
        _anchor_free,
        [{"tagName": "glare", "tagId": 1, "probability": 0.875, "boundingBox": BOX}],
    ),
    "end-to-end": (_end_to_end, [{"tagName": "b", "tagId": 1, "probability": 0.875, "boundingBox": BOX}]),
    # DETR is stretched: (0.5, 0.5, 0.1, 0.1) of the input is (0.45, 0.45, 0.1, 0.1) of the picture
    "detr": (_detr, [{"tagName": "b", "tagId": 1, "probability": SIGMOID_0, "boundingBox": BOX}]),
}


def picture_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", PICTURE, (90, 100, 110)).save(buffer, "JPEG")
    return buffer.getvalue()


async def post(client: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, str, str]:
    async with client.post(url, data=data) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


@pytest.mark.parametrize("name", list(DETECTORS))
async def test_detectors_answer_the_container_json(
    name: str, tmp_path: Path, start_server: Any, http: Any, client: aiohttp.ClientSession
) -> None:
    build, expected = DETECTORS[name]
    server = start_server(build(tmp_path / name))
    for path in ("/image", "/p/detect/iterations/it/image", CLOUD):
        status, content_type, text = await post(client, server.url + path, picture_jpeg())
        body = http.check_answer(path, status, content_type, text, labels=_labels_of(tmp_path / name))
        assert body["predictions"] == expected, (path, body)


def _labels_of(folder: Path) -> list[str]:
    if (folder / "labels.json").is_file():
        labels: list[str] = json.loads((folder / "labels.json").read_text())
        return labels
    return (folder / "labels.txt").read_text().split()


@pytest.mark.parametrize("multilabel", [False, True])
async def test_classifiers_answer_the_container_json(
    multilabel: bool, tmp_path: Path, start_server: Any, http: Any, client: aiohttp.ClientSession
) -> None:
    root = _classifier(multilabel)(tmp_path / "cls")
    server = start_server(root, http.settings(model={"score_threshold": 0.0} if multilabel else {}))
    status, content_type, text = await post(client, server.url + "/image", picture_jpeg())
    body = http.check_body(status, content_type, text)
    predictions = body["predictions"]
    assert [p["tagName"] for p in predictions] == ["ok", "bent", "torn"]  # score_threshold 0: every label
    assert all(p["tagId"] == "" and p["boundingBox"] is None for p in predictions)
    total = sum(p["probability"] for p in predictions)
    assert (abs(total - 1.0) < 1e-6) is not multilabel  # softmax sums to 1; these sigmoids do not


async def test_settings_reach_the_decoder(
    tmp_path: Path, start_server: Any, http: Any, client: aiohttp.ClientSession
) -> None:
    root = _yolo(tmp_path / "yolo")
    server = start_server(root, http.settings(model={"iou_threshold": 0.95, "score_threshold": 0.6}))
    status, content_type, text = await post(client, server.url + "/image", picture_jpeg())
    probabilities = [p["probability"] for p in http.check_body(status, content_type, text)["predictions"]]
    assert probabilities == [0.765625, 0.65625]  # IoU 0.88 < 0.95: the second bottle is kept


def test_inspect_names_format_recipe_and_decoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _yolo(tmp_path / "yolo")
    assert main(["inspect", "--model", str(root), "--device", "cpu", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert (card["format"], card["domain"]) == ("onnx", "AutoML for Images: YOLOv5 (yolov5)")
    assert card["preprocessing"].startswith("letterbox-no-upscale (target 640x640")
    assert card["decoder"].startswith(
        "[B, N, 5+C] cx,cy,w,h in input pixels, objectness x best class probability"
    )
