"""Size limits (413 / 400 dimensions) and admission control (503 + Retry-After when saturated)."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from model_loaders import slow_loader

LIMIT = 64 * 1024
MAX_PIXELS = 10_000


def padded(image: bytes, size: int) -> bytes:
    """The image followed by zero bytes up to `size` (decoders ignore data after the end marker)."""
    assert len(image) <= size
    return image + b"\0" * (size - len(image))


def png_claiming(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR rewritten to claim width x height (CRC fixed): a decompression-bomb header."""
    assert png[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:8] + png[8:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


@pytest.fixture(scope="module")
def limited_server(module_servers, demo_dir, http):
    settings = http.settings(server={"max_body_bytes": LIMIT, "max_image_pixels": MAX_PIXELS})
    return module_servers(demo_dir, settings)


# --------------------------------------------------------------------------------------------------
# Body size


async def test_body_of_exactly_max_body_bytes_is_accepted(client, http, limited_server):
    data = padded(http.png(100, 100), LIMIT)
    async with client.post(limited_server.url + "/image", data=data) as response:
        await http.body_of(response)


async def test_one_byte_over_max_body_bytes_is_413(client, http, limited_server):
    data = padded(http.png(100, 100), LIMIT + 1)
    async with client.post(limited_server.url + "/image", data=data) as response:
        await http.error(response, 413, "BadRequestImageSizeBytes")


async def test_large_body_is_413(client, http, limited_server):
    data = padded(http.png(100, 100), 4 * LIMIT)
    async with client.post(limited_server.url + "/image", data=data) as response:
        await http.error(response, 413, "BadRequestImageSizeBytes")


async def test_chunked_body_over_the_limit_is_413(client, http, limited_server):
    """No Content-Length: the limit must hold while streaming."""
    data = padded(http.png(100, 100), 2 * LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 8192):
            yield data[start : start + 8192]

    async with client.post(limited_server.url + "/image", data=chunks()) as response:
        assert "Content-Length" not in response.request_info.headers
        await http.error(response, 413, "BadRequestImageSizeBytes")


async def test_chunked_body_under_the_limit_is_accepted(client, http, limited_server):
    data = http.png(100, 100)

    async def chunks() -> AsyncIterator[bytes]:
        yield data[:100]
        yield data[100:]

    async with client.post(limited_server.url + "/image", data=chunks()) as response:
        await http.body_of(response)


async def test_multipart_over_the_limit_is_413(client, http, limited_server):
    form = http.multipart(padded(http.png(100, 100), 2 * LIMIT))
    async with client.post(limited_server.url + "/image", data=form) as response:
        await http.error(response, 413, "BadRequestImageSizeBytes")


async def test_server_serves_normally_after_413(client, http, limited_server):
    async with client.post(limited_server.url + "/image", data=b"\0" * (2 * LIMIT)) as response:
        assert response.status == 413
    async with client.post(limited_server.url + "/image", data=http.png(100, 100)) as response:
        await http.body_of(response)


async def test_default_limit_is_the_containers_4_mib(client, http, demo_server):
    data = padded(http.png(64, 64), 4 * 1024 * 1024)
    async with client.post(demo_server.url + "/image", data=io.BytesIO(data)) as response:
        await http.body_of(response)
    async with client.post(demo_server.url + "/image", data=io.BytesIO(data + b"\0")) as response:
        await http.error(response, 413, "BadRequestImageSizeBytes")


# --------------------------------------------------------------------------------------------------
# Pixel count


async def test_image_with_too_many_pixels_is_400_dimensions(client, http, limited_server):
    async with client.post(limited_server.url + "/image", data=http.png(200, 200)) as response:
        body = await http.error(response, 400, "BadRequestImageDimensions")
    assert "40000" in body["message"]


async def test_pixel_limit_is_inclusive(client, http, limited_server):
    async with client.post(limited_server.url + "/image", data=http.png(100, 100)) as response:
        await http.body_of(response)  # exactly MAX_PIXELS
    async with client.post(limited_server.url + "/image", data=http.png(10_001, 1)) as response:
        await http.error(response, 400, "BadRequestImageDimensions")


async def test_pixel_limit_applies_to_multipart(client, http, limited_server):
    async with client.post(
        limited_server.url + "/image", data=http.multipart(http.png(200, 200))
    ) as response:
        await http.error(response, 400, "BadRequestImageDimensions")


async def test_decompression_bomb_is_refused_before_decoding(client, http, limited_server):
    """A tiny PNG that claims 20000x20000 pixels: refused from the header, fast."""
    bomb = png_claiming(http.png(8, 8), 20_000, 20_000)
    assert len(bomb) < 1024
    start = time.perf_counter()
    async with client.post(limited_server.url + "/image", data=bomb) as response:
        await http.error(response, 400, "BadRequestImageDimensions")
    assert time.perf_counter() - start < 2.0


# --------------------------------------------------------------------------------------------------
# Admission control


@pytest.fixture
def saturated_server(start_server, demo_dir, http):
    settings = http.settings(server={"inference_workers": 1, "max_inflight": 1})
    return start_server(demo_dir, settings, loader=slow_loader(0.4))


async def test_saturation_answers_503_with_retry_after(client, http, saturated_server):
    data = http.belt()

    async def one() -> tuple[int, dict[str, str], str]:
        async with client.post(saturated_server.url + "/image", data=data) as response:
            return response.status, dict(response.headers), await response.text()

    answers = await asyncio.gather(*(one() for _ in range(5)))
    statuses = sorted(status for status, _, _ in answers)
    assert 200 in statuses and 503 in statuses, statuses
    assert set(statuses) == {200, 503}, statuses
    for status, headers, text in answers:
        if status == 503:
            assert headers["Content-Type"] == "application/json"
            assert int(headers["Retry-After"]) >= 1
            body = json.loads(text)
            assert body["code"] == "TooManyRequests" and body["message"]
        else:
            http.check_detection(http.check_body(status, headers["Content-Type"], text))


async def test_capacity_is_released_after_success_and_errors(client, http, saturated_server):
    """max_inflight=1: if any answer leaked its slot, the next request would be refused with 503."""
    url = saturated_server.url + "/image"
    for data, status in [
        (http.belt(), 200),
        (b"garbage", 400),
        (b"", 400),
        (http.png(200, 200), 200),
        (http.belt(), 200),
    ]:
        async with client.post(url, data=data) as response:
            assert response.status == status, await response.text()


async def test_capacity_is_released_when_the_client_goes_away(client, http, saturated_server):
    """A client that disconnects mid-inference must not keep its slot."""
    timeout = aiohttp.ClientTimeout(total=0.1)
    async with aiohttp.ClientSession(timeout=timeout) as impatient:
        with pytest.raises(asyncio.TimeoutError):
            async with impatient.post(saturated_server.url + "/image", data=http.belt()):
                pass
    await asyncio.sleep(0.6)  # the slow prediction (0.4 s) finishes in the background
    async with client.post(saturated_server.url + "/image", data=http.belt()) as response:
        assert response.status == 200, await response.text()


async def test_admitted_requests_queue_for_the_workers(client, http, start_server, demo_dir):
    """One worker, room for three: three concurrent requests all succeed (queued, not refused)."""
    settings = http.settings(server={"inference_workers": 1, "max_inflight": 3})
    server = start_server(demo_dir, settings, loader=slow_loader(0.2))

    async def one() -> int:
        async with client.post(server.url + "/image", data=http.belt()) as response:
            await response.read()
            return response.status

    start = time.perf_counter()
    assert await asyncio.gather(one(), one(), one()) == [200, 200, 200]
    assert time.perf_counter() - start >= 0.55  # serialised on the single worker
