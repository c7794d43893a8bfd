"""POST /url: fetch the image from an http(s) URL, refusing internal addresses unless allow-listed.

Only loopback exists here, so the "internal" targets are loopback image servers: one on 127.0.0.1
(allow-listed as 127.0.0.1/32 on the permissive server) and one on 127.0.0.2 (loopback too, never
allow-listed). Every refusal is also checked on the image servers' side: a refused URL must not be
fetched at all.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

pytestmark = pytest.mark.shared

LIMIT = 64 * 1024
READ_TIMEOUT_S = 1.0
HITS = web.AppKey("hits", list)

CONTAINER_URL_ROUTES = [
    "/url",
    "/p/url",
    "/p/url/nostore",
    "/p/classify/iterations/it/url",
    "/p/classify/iterations/it/url/nostore",
    "/p/detect/iterations/it/url",
    "/p/detect/iterations/it/url/nostore",
]
CLOUD_URL_ROUTES = [
    f"/customvision/{version}/Prediction/0f3c8a52-52e4-4c52-a5d4-1f3a8b1a9f55/{task}/iterations/It1/url{suffix}"
    for version in ("v3.0", "v3.1")
    for task in ("classify", "detect")
    for suffix in ("", "/nostore")
]


def image_app(jpeg: bytes) -> web.Application:
    """A small image host; app[HITS] records every path requested."""
    hits: list[str] = []

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def big(request: web.Request) -> web.Response:  # declares its size
        return web.Response(body=jpeg + b"\0" * (2 * LIMIT), content_type="image/jpeg")

    async def big_stream(request: web.Request) -> web.StreamResponse:  # chunked: no Content-Length
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(jpeg)
        for _ in range(2 * LIMIT // 8192):
            await response.write(b"\0" * 8192)
        await response.write_eof()
        return response

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b"<html>not an image</html>", content_type="image/jpeg")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3 * READ_TIMEOUT_S)
        return web.Response(body=jpeg, content_type="image/jpeg")

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        hits.append(request.path)
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[record])
    app[HITS] = hits
    app.router.add_get("/img.jpg", image)
    app.router.add_get("/big.jpg", big)
    app.router.add_get("/big-stream.jpg", big_stream)
    app.router.add_get("/garbage.jpg", garbage)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/slow.jpg", slow)
    return app


@pytest.fixture(scope="module")
def images(module_servers, meter_dir):
    """The allow-listed image host on 127.0.0.1."""
    return module_servers.serve_app(image_app((meter_dir / "test-dog1.jpg").read_bytes()))


@pytest.fixture(scope="module")
def internal_images(module_servers, meter_dir):
    """An image host on 127.0.0.2: loopback, never allow-listed."""
    return module_servers.serve_app(image_app((meter_dir / "test-dog1.jpg").read_bytes()), host="127.0.0.2")


@pytest.fixture(autouse=True)
def _clear_hits(images, internal_images):
    images.app[HITS].clear()
    internal_images.app[HITS].clear()


@pytest.fixture(scope="module")
def allowing_server(module_servers, meter_dir, http):
    """Meter model; /url may reach 127.0.0.1 only; 64 KiB body limit; 1 s read timeout."""
    settings = http.settings(
        server={"max_body_bytes": LIMIT},
        url_fetch={"allow": ["127.0.0.1/32"], "read_timeout_s": READ_TIMEOUT_S, "connect_timeout_s": 2},
    )
    return module_servers(meter_dir, settings)


async def post_url(
    client: aiohttp.ClientSession, server: Any, url: str, key: str = "url", path: str = "/url"
):
    return client.post(server.url + path, data=json.dumps({key: url}))


# --------------------------------------------------------------------------------------------------
# Allowed fetches


async def test_url_gives_the_same_answer_as_image(
    client, http, allowing_server, images, meter_jpeg, meter_labels, meter_jpeg_expected
):
    async with client.post(allowing_server.url + "/image", data=meter_jpeg) as response:
        direct = await http.body_of(response)
    async with await post_url(client, allowing_server, f"{images.url}/img.jpg") as response:
        fetched = await http.body_of(response)
    assert fetched["predictions"] == direct["predictions"]
    http.check_classification(fetched, meter_labels, meter_jpeg_expected)
    assert images.app[HITS] == ["/img.jpg"]


@pytest.mark.parametrize("path", CONTAINER_URL_ROUTES + CLOUD_URL_ROUTES)
async def test_every_url_route_shape(
    client, http, allowing_server, images, meter_labels, meter_jpeg_expected, path
):
    async with await post_url(client, allowing_server, f"{images.url}/img.jpg", path=path) as response:
        text = await response.text()
        body = http.check_answer(path, response.status, response.content_type, text, meter_labels)
    http.check_classification(body, meter_labels, meter_jpeg_expected)


async def test_capitalised_url_key_is_accepted(client, http, allowing_server, images):
    async with await post_url(client, allowing_server, f"{images.url}/img.jpg", key="Url") as response:
        await http.body_of(response)


async def test_url_body_with_json_content_type(client, http, allowing_server, images):
    async with client.post(allowing_server.url + "/url", json={"url": f"{images.url}/img.jpg"}) as response:
        await http.body_of(response)


async def test_redirect_within_the_allowed_network_is_followed(client, http, allowing_server, images):
    target = f"{images.url}/img.jpg"
    async with await post_url(client, allowing_server, f"{images.url}/redirect?to={target}") as response:
        await http.body_of(response)
    assert images.app[HITS] == ["/redirect", "/img.jpg"]


# --------------------------------------------------------------------------------------------------
# Refused addresses


async def test_loopback_is_refused_by_default(client, http, meter_server, images):
    async with await post_url(client, meter_server, f"{images.url}/img.jpg") as response:
        body = await http.error(response, 400, "BadRequestImageUrl")
    assert "127.0.0.1" in body["message"]
    assert images.app[HITS] == []


async def test_name_resolving_to_loopback_is_refused_by_default(client, http, meter_server, images):
    async with await post_url(client, meter_server, f"http://localhost:{images.port}/img.jpg") as response:
        body = await http.error(response, 400, "BadRequestImageUrl")
    assert "localhost" in body["message"]
    assert images.app[HITS] == []


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # 127.0.0.1 as one decimal number: resolved, then vetted
        "0x7f000001",
        "127.1",
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    ],
)
async def test_obfuscated_loopback_is_refused(client, http, meter_server, images, host):
    async with await post_url(client, meter_server, f"http://{host}:{images.port}/img.jpg") as response:
        await http.error(response, 400, "BadRequestImageUrl")
    assert images.app[HITS] == []


async def test_loopback_outside_the_allow_list_is_refused(client, http, allowing_server, internal_images):
    async with await post_url(client, allowing_server, f"{internal_images.url}/img.jpg") as response:
        body = await http.error(response, 400, "BadRequestImageUrl")
    assert "127.0.0.2" in body["message"]
    assert internal_images.app[HITS] == []


async def test_redirect_to_a_refused_address_is_refused(
    client, http, allowing_server, images, internal_images
):
    """The first hop is allowed; the redirect leads to 127.0.0.2, which serves a valid image but is
    not allow-listed: each hop must be vetted."""
    target = f"{internal_images.url}/img.jpg"
    async with await post_url(client, allowing_server, f"{images.url}/redirect?to={target}") as response:
        await http.error(response, 400, "BadRequestImageUrl")
    assert images.app[HITS] == ["/redirect"]
    assert internal_images.app[HITS] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://10.0.0.1/img.jpg",
        "http://192.168.1.1/img.jpg",
        "http://172.16.0.1/img.jpg",
        "http://0.0.0.0/img.jpg",
        "http://[::1]/img.jpg",
        "http://[fe80::1]/img.jpg",
        "http://224.0.0.1/img.jpg",
    ],
)
@pytest.mark.parametrize("server", ["default", "allow-127.0.0.1/32"])
async def test_internal_addresses_are_refused(client, http, meter_server, allowing_server, url, server):
    target = meter_server if server == "default" else allowing_server
    async with await post_url(client, target, url) as response:
        body = await http.error(response, 400, "BadRequestImageUrl")
    assert "internal" in body["message"]


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/img.jpg",
        "gopher://127.0.0.1:70/",
        "data:image/jpeg;base64,/9j/4AAQ",
        "/img.jpg",
        "img.jpg",
        "http:///img.jpg",
    ],
)
async def test_non_http_urls_are_refused(client, http, allowing_server, images, url):
    async with await post_url(client, allowing_server, url) as response:
        await http.error(response, 400, "BadRequestImageUrl")
    assert images.app[HITS] == []


async def test_redirect_to_a_file_url_is_refused(client, http, allowing_server, images):
    url = f"{images.url}/redirect?to=file:///etc/passwd"
    async with await post_url(client, allowing_server, url) as response:
        await http.error(response, 400, "BadRequestImageUrl")


async def test_redirect_loop_is_cut_short(client, http, allowing_server, images):
    async with await post_url(client, allowing_server, f"{images.url}/loop") as response:
        body = await http.error(response, 400, "BadRequestImageUrl")
    assert "redirect" in body["message"]
    assert len(images.app[HITS]) == 4  # max_redirects=3: the first request + 3 hops


# --------------------------------------------------------------------------------------------------
# Bad bodies and bad downloads


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'"http://127.0.0.1/img.jpg"',
        b"{}",
        b'{"url": ""}',
        b'{"url": 42}',
        b'{"uri": "http://127.0.0.1/img.jpg"}',
        b"\xff\xfe",
    ],
)
async def test_malformed_url_bodies_are_400(client, http, allowing_server, body):
    async with client.post(allowing_server.url + "/url", data=body) as response:
        await http.error(response, 400, "BadRequestImageUrl")


async def test_image_larger_than_max_body_bytes_is_413(client, http, allowing_server, images):
    async with await post_url(client, allowing_server, f"{images.url}/big.jpg") as response:
        await http.error(response, 413, "BadRequestImageSizeBytes")


async def test_streamed_image_larger_than_max_body_bytes_is_413(client, http, allowing_server, images):
    async with await post_url(client, allowing_server, f"{images.url}/big-stream.jpg") as response:
        await http.error(response, 413, "BadRequestImageSizeBytes")


async def test_404_from_the_image_host_is_400(client, http, allowing_server, images):
    async with await post_url(client, allowing_server, f"{images.url}/missing.jpg") as response:
        body = await http.error(response, 400, "BadRequestImageUrl")
    assert "404" in body["message"]
    assert images.app[HITS] == ["/missing.jpg"]


async def test_url_that_is_not_an_image_is_400_image_format(client, http, allowing_server, images):
    async with await post_url(client, allowing_server, f"{images.url}/garbage.jpg") as response:
        await http.error(response, 400, "BadRequestImageFormat")


async def test_slow_image_host_times_out(client, http, allowing_server, images):
    start = asyncio.get_running_loop().time()
    async with await post_url(client, allowing_server, f"{images.url}/slow.jpg") as response:
        body = await http.error(response, 400, "BadRequestImageUrl")
    assert "time" in body["message"]
    assert asyncio.get_running_loop().time() - start < 3 * READ_TIMEOUT_S


async def test_closed_port_is_400(client, http, allowing_server, unused_tcp_port):
    async with await post_url(
        client, allowing_server, f"http://127.0.0.1:{unused_tcp_port}/img.jpg"
    ) as response:
        await http.error(response, 400, "BadRequestImageUrl")


async def test_oversized_url_request_body_is_413(client, http, allowing_server, images):
    body = json.dumps({"url": f"{images.url}/img.jpg", "padding": "x" * (2 * LIMIT)})
    async with client.post(allowing_server.url + "/url", data=body) as response:
        await http.error(response, 413, "BadRequestImageSizeBytes")
    assert images.app[HITS] == []


# --------------------------------------------------------------------------------------------------
# Other allow-list forms (positive controls: the refused hosts above do serve images)


async def test_wider_network_allows_the_second_host(
    client, http, start_server, demo_dir, images, internal_images
):
    server = start_server(demo_dir, http.settings(url_fetch={"allow": ["127.0.0.0/8"]}))
    async with await post_url(client, server, f"{internal_images.url}/img.jpg") as response:
        await http.body_of(response)
    target = f"{internal_images.url}/img.jpg"
    async with await post_url(client, server, f"{images.url}/redirect?to={target}") as response:
        await http.body_of(response)
    assert images.app[HITS] == ["/redirect"]
    assert internal_images.app[HITS] == ["/img.jpg", "/img.jpg"]


async def test_host_name_allow_list_entry(client, http, start_server, demo_dir, images):
    """allow: ["localhost"] lets that name through the resolver check, but not the bare address."""
    server = start_server(demo_dir, http.settings(url_fetch={"allow": ["localhost"]}))
    async with await post_url(client, server, f"http://localhost:{images.port}/img.jpg") as response:
        await http.body_of(response)
    async with await post_url(client, server, f"{images.url}/img.jpg") as response:
        await http.error(response, 400, "BadRequestImageUrl")
    assert images.app[HITS] == ["/img.jpg"]
