"""Bad requests get JSON errors with the Custom Vision cloud API's codes (the container answers 500 text)."""

from __future__ import annotations

import json

import aiohttp
import pytest

IMAGE_ROUTES = ["/image", "/p/classify/iterations/it/image/nostore", "/p/detect/iterations/it/image"]


BOUNDARY = "----edge-runtime-test-boundary"


def form_field(data: bytes, content_type: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body whose one part is named imageData with NO filename (a form field),
    written by hand so that no Content-Type is added to the part unless given. Returns (body, headers)."""
    head = 'Content-Disposition: form-data; name="imageData"\r\n'
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    body = f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.mark.parametrize("path", IMAGE_ROUTES)
async def test_garbage_bytes_are_400_image_format(client, http, demo_server, path):
    async with client.post(demo_server.url + path, data=b"this is not an image" * 20) as response:
        await http.error(response, 400, "BadRequestImageFormat")


@pytest.mark.parametrize("keep", [0.5, 0.9])
async def test_truncated_jpeg_is_400(client, http, demo_server, keep):
    jpeg = http.belt_jpeg()
    async with client.post(demo_server.url + "/image", data=jpeg[: int(len(jpeg) * keep)]) as response:
        await http.error(response, 400, "BadRequestImageFormat")


async def test_jpeg_header_only_is_400(client, http, demo_server):
    async with client.post(demo_server.url + "/image", data=http.belt_jpeg()[:200]) as response:
        await http.error(response, 400, "BadRequestImageFormat")


@pytest.mark.parametrize("content_type", ["application/octet-stream", "image/jpeg", None])
async def test_empty_body_is_400(http, demo_server, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    raw = await http.raw_request(demo_server.url, "POST", "/image", b"", headers)
    assert raw.status == 400, raw.text
    assert raw.headers["content-type"] == "application/json"
    assert raw.text.endswith("\n")
    body = json.loads(raw.body)
    assert body["code"] == "BadRequestImageNotProvided"
    assert body["message"]


async def test_multipart_without_image_data_is_400(client, http, demo_server):
    form = http.multipart(http.belt(), name="file")
    async with client.post(demo_server.url + "/image", data=form) as response:
        body = await http.error(response, 400, "BadRequestImageNotProvided")
    assert "imageData" in body["message"]


async def test_empty_multipart_form_is_400(client, http, demo_server):
    writer = aiohttp.MultipartWriter("form-data")
    async with client.post(demo_server.url + "/image", data=writer) as response:
        await http.error(response, 400, "BadRequestImageNotProvided")


async def test_multipart_image_data_that_is_not_an_image_is_400(client, http, demo_server):
    async with client.post(demo_server.url + "/image", data=http.multipart(b"GIF89a nonsense")) as response:
        await http.error(response, 400, "BadRequestImageFormat")


async def test_multipart_empty_image_data_is_400(client, http, demo_server):
    async with client.post(demo_server.url + "/image", data=http.multipart(b"")) as response:
        await http.error(response, 400)


async def test_multipart_text_field_that_is_not_an_image_is_400(client, http, demo_server):
    body, headers = form_field(b"hello", "text/plain")
    async with client.post(demo_server.url + "/image", data=body, headers=headers) as response:
        await http.error(response, 400, "BadRequestImageFormat")


async def test_binary_form_field_without_filename_gets_a_json_answer(client, http, demo_server):
    body, headers = form_field(http.belt_jpeg())
    async with client.post(demo_server.url + "/image", data=body, headers=headers) as response:
        text = await response.text()
        assert response.status in (200, 400), text
        assert response.headers["Content-Type"] == "application/json"


async def test_binary_form_field_with_content_type_is_predicted(client, http, demo_server):
    body, headers = form_field(http.belt_jpeg(), "image/jpeg")
    async with client.post(demo_server.url + "/image", data=body, headers=headers) as response:
        http.check_detection(await http.body_of(response))


async def test_get_image_is_405(client, demo_server):
    async with client.get(demo_server.url + "/image") as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]


async def test_unknown_route_is_404(client, demo_server):
    async with client.post(demo_server.url + "/predict", data=b"x") as response:
        assert response.status == 404


async def test_server_keeps_serving_after_errors(client, http, demo_server):
    for data in (b"", b"garbage", http.belt_jpeg()[:100]):
        async with client.post(demo_server.url + "/image", data=data) as response:
            assert response.status == 400
    async with client.post(demo_server.url + "/image", data=http.belt()) as response:
        http.check_detection(await http.body_of(response))


# --------------------------------------------------------------------------------------------------
# Prediction-Key

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed_server(module_servers, demo_dir, http):
    return module_servers(demo_dir, http.settings(server={"prediction_key": KEY}))


@pytest.mark.parametrize("headers", [{}, {"Prediction-Key": "wrong"}, {"Prediction-Key": ""}, {"X-Key": KEY}])
@pytest.mark.parametrize("path", ["/image", "/p/detect/iterations/it/image", "/url"])
async def test_missing_or_wrong_prediction_key_is_401(client, http, keyed_server, headers, path):
    data = http.belt() if path != "/url" else b'{"url": "https://example.com/x.jpg"}'
    async with client.post(keyed_server.url + path, data=data, headers=headers) as response:
        await http.error(response, 401, "Unauthorized")


async def test_key_differing_only_in_case_is_401(client, http, keyed_server):
    async with client.post(
        keyed_server.url + "/image", data=http.belt(), headers={"Prediction-Key": KEY.upper()}
    ) as response:
        await http.error(response, 401, "Unauthorized")


@pytest.mark.parametrize("path", ["/image", "/p/detect/iterations/it/image/nostore"])
async def test_correct_prediction_key_is_200(client, http, keyed_server, path):
    async with client.post(
        keyed_server.url + path, data=http.belt(), headers={"Prediction-Key": KEY}
    ) as response:
        http.check_detection(await http.body_of(response))


async def test_prediction_key_header_name_is_case_insensitive(client, http, keyed_server):
    async with client.post(
        keyed_server.url + "/image", data=http.belt(), headers={"prediction-key": KEY}
    ) as response:
        await http.body_of(response)


async def test_multipart_with_key_is_200(client, http, keyed_server):
    async with client.post(
        keyed_server.url + "/image", data=http.multipart(http.belt()), headers={"Prediction-Key": KEY}
    ) as response:
        http.check_detection(await http.body_of(response))


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics", "/"])
async def test_health_metrics_and_banner_stay_open_by_default(client, keyed_server, path):
    async with client.get(keyed_server.url + path) as response:
        assert response.status == 200, await response.text()


async def test_protect_metrics_requires_the_key(client, http, start_server, demo_dir):
    server = start_server(demo_dir, http.settings(server={"prediction_key": KEY, "protect_metrics": True}))
    async with client.get(server.url + "/metrics") as response:
        await http.error(response, 401, "Unauthorized")
    async with client.get(server.url + "/metrics", headers={"Prediction-Key": "nope"}) as response:
        await http.error(response, 401, "Unauthorized")
    async with client.get(server.url + "/metrics", headers={"Prediction-Key": KEY}) as response:
        assert response.status == 200
        assert "edge_runtime_http_requests_total" in await response.text()
    async with client.get(server.url + "/health/live") as response:
        assert response.status == 200  # protect_metrics leaves health open


async def test_protect_health_requires_the_key(client, http, start_server, demo_dir):
    server = start_server(demo_dir, http.settings(server={"prediction_key": KEY, "protect_health": True}))
    for path in ("/health/live", "/health/ready"):
        async with client.get(server.url + path) as response:
            await http.error(response, 401, "Unauthorized")
        async with client.get(server.url + path, headers={"Prediction-Key": KEY}) as response:
            assert response.status == 200
    async with client.get(server.url + "/metrics") as response:
        assert response.status == 200


async def test_without_a_configured_key_any_header_is_ignored(client, http, demo_server):
    async with client.post(
        demo_server.url + "/image", data=http.belt(), headers={"Prediction-Key": "anything"}
    ) as response:
        await http.body_of(response)


async def test_non_ascii_prediction_key_is_401_not_500(http, keyed_server):
    raw = await http.raw_request(
        keyed_server.url, "POST", "/image", http.belt(), {"Prediction-Key": "s3cr\xe9t"}
    )
    assert raw.status == 401, raw.text
    assert json.loads(raw.body)["code"] == "Unauthorized"
