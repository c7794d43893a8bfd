"""A served Docker 2.2 export (model.tflite on LiteRT) answers POST /image like the exported container."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.shared

IMAGES = [
    "test-cat.jpg",
    "test-cheesecake-2730999.jpg",
    "test-dog.jpg",
    "test-dog1.jpg",
    "test-donuts-3291252.jpg",
    "test-fries-2846809.jpg",
]


@pytest.fixture(scope="module")
def tflite_server(module_servers: Any, shared_models: Path) -> Iterator[Any]:
    yield module_servers(shared_models / "docker22-tflite-classification-meter")


async def test_post_image_gives_the_containers_json(
    client: aiohttp.ClientSession,
    http: Any,
    tflite_server: Any,
    meter_dir: Path,
    meter_labels: list[str],
    meter_expected: dict[str, list[float]],
) -> None:
    for image in IMAGES:
        data = (meter_dir / image).read_bytes()
        async with client.post(tflite_server.url + "/image", data=data) as response:
            body = await http.body_of(response)  # the container's exact JSON shape
        http.check_classification(body, meter_labels, meter_expected[image], tolerance=1e-5)
    async with client.post(
        tflite_server.url + "/p/classify/iterations/it/image", data=http.multipart(data)
    ) as response:
        body = await http.body_of(response)
    http.check_classification(body, meter_labels, meter_expected[IMAGES[-1]], tolerance=1e-5)


async def test_concurrent_clients_all_succeed(
    client: aiohttp.ClientSession,
    http: Any,
    tflite_server: Any,
    meter_dir: Path,
    meter_labels: list[str],
    meter_expected: dict[str, list[float]],
) -> None:
    # The container fails 43-73 % of requests at 4-8 clients (one shared interpreter); the runtime may not.
    async def one(image: str) -> None:
        data = (meter_dir / image).read_bytes()
        async with client.post(tflite_server.url + "/image", data=data) as response:
            body = await http.body_of(response)
        http.check_classification(body, meter_labels, meter_expected[image], tolerance=1e-5)

    await asyncio.gather(*(one(IMAGES[i % len(IMAGES)]) for i in range(24)))


async def test_readiness_names_the_device(client: aiohttp.ClientSession, tflite_server: Any) -> None:
    async with client.get(tflite_server.url + "/health/ready") as response:
        assert response.status == 200
        ready = await response.json()
    assert ready["model"]["device"] == "cpu" and ready["model"]["fallback_from"] is None
