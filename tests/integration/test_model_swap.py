"""Model updates without a restart, over real TCP: an https model server, the admin API, a busy client.

While a client keeps POSTing /image, PUT /admin/model downloads a new export over https, verifies its
sha256, loads and warms it up and swaps it in: no request fails, every answer comes whole from one
model. A wrong sha256, a corrupt export, an oversize download and a plain-http URL are refused with
the old model still answering. Two PUTs close together each get their own answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from admin_client import admin_call
from aiohttp import web
from certs import TlsFiles, make_tls_files

from edge_runtime.demo.model import DEMO_LABELS, build_demo_export
from edge_runtime.settings import build_settings

ADMIN_KEY = "swap-test-key"


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                archive.write(path, path.name)
    return buffer.getvalue()


class ModelHost:
    """An https server (test CA) that serves byte blobs at /<name>.zip (after delays[name] seconds)."""

    def __init__(self, tls: TlsFiles) -> None:
        self.blobs: dict[str, bytes] = {}
        self.delays: dict[str, float] = {}
        self.tls = tls

    def app(self) -> web.Application:
        async def serve(request: web.Request) -> web.Response:
            await asyncio.sleep(self.delays.get(request.match_info["name"], 0.0))
            blob = self.blobs.get(request.match_info["name"])
            if blob is None:
                raise web.HTTPNotFound()
            return web.Response(body=blob, content_type="application/zip")

        app = web.Application()
        app.router.add_get("/{name}.zip", serve)
        return app


def admin(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return admin_call(url, ADMIN_KEY, method, path, body)


class BusyClient:
    """Threads POSTing /image in a loop; records every status and the tag set of each answer."""

    def __init__(self, url: str, jpeg: bytes, threads: int = 3) -> None:
        self._url = url + "/image"
        self._jpeg = jpeg
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.statuses: list[int] = []
        self.tag_sets: list[frozenset[str]] = []
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(
                self._url, data=self._jpeg, headers={"Content-Type": "application/octet-stream"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    body = json.loads(response.read())
                    with self._lock:
                        self.statuses.append(response.status)
                        self.tag_sets.append(frozenset(p["tagName"] for p in body["predictions"]))
            except urllib.error.HTTPError as exc:
                with exc, self._lock:
                    self.statuses.append(exc.code)
                    self.errors.append(exc.read().decode(errors="replace"))
            except OSError as exc:
                with self._lock:
                    self.statuses.append(-1)
                    self.errors.append(repr(exc))

    def count(self) -> int:
        with self._lock:
            return len(self.statuses)

    def __enter__(self) -> BusyClient:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def wait_for_requests(client: BusyClient, more: int) -> None:
    target = client.count() + more
    deadline = time.monotonic() + 60
    while client.count() < target:
        assert time.monotonic() < deadline, "the busy client stopped getting answers"
        time.sleep(0.02)


@pytest.fixture
def https_host(tmp_path: Path) -> Iterator[tuple[ModelHost, int]]:
    """The model host over TLS, on a loop of its own in a thread."""
    tls = make_tls_files(tmp_path / "tls")
    host = ModelHost(tls)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.server_cert, tls.server_key)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(host.app(), access_log=None)

    async def up() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        return int(runner.addresses[0][1])

    port = asyncio.run_coroutine_threadsafe(up(), loop).result(10)
    yield host, port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture
def swap_setup(
    tmp_path: Path, start_server: Any, meter_dir: Path, https_host: tuple[ModelHost, int]
) -> dict[str, Any]:
    host, tls_port = https_host
    tls = host.tls
    settings = build_settings(
        {
            "server": {"inference_workers": 2, "admin_key": ADMIN_KEY, "max_inflight": 64},
            "model": {
                "device": "cpu",
                "download_dir": tmp_path / "models",
                "download_ca_file": tls.ca,
            },
            "events": {"jsonl_path": None, "snapshot_dir": None, "outbox_path": tmp_path / "outbox.sqlite3"},
        }
    )
    server = start_server(build_demo_export(tmp_path / "demo"), settings)
    meter_zip = zip_folder(meter_dir)
    host.blobs["meter"] = meter_zip
    host.blobs["corrupt"] = b"PK\x03\x04 this is not a model export" + bytes(range(256)) * 8
    labels = frozenset((meter_dir / "labels.txt").read_text().split())
    return {
        "server": server,
        "base": f"https://127.0.0.1:{tls_port}",
        "host": host,
        "meter_sha": hashlib.sha256(meter_zip).hexdigest(),
        "meter_labels": labels,
        "tmp": tmp_path,
    }


def test_swap_under_load_with_bad_updates_refused(swap_setup: dict[str, Any], meter_jpeg: bytes) -> None:
    server, base = swap_setup["server"], swap_setup["base"]
    demo = frozenset(DEMO_LABELS)
    with BusyClient(server.url, meter_jpeg) as client:
        wait_for_requests(client, 20)

        # 1. right file, wrong hash
        status, body = admin(
            server.url, "PUT", "/admin/model", {"url": f"{base}/meter.zip", "sha256": "0" * 64}
        )
        assert status == 422, body
        assert "sha256 mismatch" in body["model"]["error"]
        assert body["model"]["id"] == "edge-runtime-demo"  # still serving the demo model

        # 2. a corrupt export with a correct hash
        corrupt = swap_setup["host"].blobs["corrupt"]
        status, body = admin(
            server.url,
            "PUT",
            "/admin/model",
            {"url": f"{base}/corrupt.zip", "sha256": hashlib.sha256(corrupt).hexdigest()},
        )
        assert status == 422, body
        assert body["model"]["status"] == "failed" and body["model"]["error"]
        assert body["model"]["id"] == "edge-runtime-demo"

        # 3. plain http is refused before any byte is fetched
        status, body = admin(
            server.url, "PUT", "/admin/model", {"url": "http://127.0.0.1:9/x.zip", "sha256": "1" * 64}
        )
        assert status == 422 and "https" in body["model"]["error"]
        wait_for_requests(client, 20)
        assert all(tags <= demo for tags in client.tag_sets), "a refused model answered"

        # 4. the real update
        status, body = admin(
            server.url,
            "PUT",
            "/admin/model",
            {"url": f"{base}/meter.zip", "sha256": swap_setup["meter_sha"]},
        )
        assert status == 200, body
        assert body["model"]["status"] == "ready" and body["model"]["id"] != "edge-runtime-demo"
        wait_for_requests(client, 20)

    assert client.statuses, "no requests were made"
    failed = [s for s in client.statuses if s != 200]
    assert not failed, f"{len(failed)} failed requests during the swaps: {client.errors[:3]}"
    meter = swap_setup["meter_labels"]
    # every answer came whole from one model, and the last ones from the new model
    assert all(tags <= demo or tags <= meter for tags in client.tag_sets)
    assert client.tag_sets[-1] <= meter and client.tag_sets[-1]
    # the verified download is kept under its hash, nothing half-written left behind
    models = swap_setup["tmp"] / "models"
    assert (models / f"{swap_setup['meter_sha']}.zip").is_file()
    assert not list(models.glob(".*.part"))


def test_oversize_download_refused(swap_setup: dict[str, Any], tmp_path: Path) -> None:
    server, base = swap_setup["server"], swap_setup["base"]
    status, body = admin(server.url, "PATCH", "/admin/desired", {"model": {"max_download_bytes": 1000}})
    assert status == 200, body
    status, body = admin(
        server.url, "PUT", "/admin/model", {"url": f"{base}/meter.zip", "sha256": swap_setup["meter_sha"]}
    )
    assert status == 422 and "max_download_bytes" in body["model"]["error"], body
    assert body["model"]["id"] == "edge-runtime-demo"
    assert not list((tmp_path / "models").glob("*.zip"))


def test_admin_api_needs_the_key(swap_setup: dict[str, Any]) -> None:
    server = swap_setup["server"]
    request = urllib.request.Request(server.url + "/admin/status", headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    caught.value.close()
    for headers in ({}, {"Authorization": ADMIN_KEY}, {"Authorization": "Bearer "}):
        request = urllib.request.Request(server.url + "/admin/status", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 401, headers
        caught.value.close()
    status, body = admin(server.url, "GET", "/admin/status")
    assert status == 200 and body["model"]["status"] == "ready"


def test_concurrent_puts_each_get_their_own_answer(swap_setup: dict[str, Any]) -> None:
    """A good swap, then 30 ms later a PUT of a missing path: the good one answers 200, the bad 422."""
    server, base, host = swap_setup["server"], swap_setup["base"], swap_setup["host"]
    host.delays["meter"] = 0.5  # the first update is still downloading when the second arrives
    answers: dict[str, tuple[int, Any]] = {}
    missing = str(swap_setup["tmp"] / "missing")

    def put(name: str, body: dict[str, Any]) -> None:
        answers[name] = admin(server.url, "PUT", "/admin/model", body)

    good_url = f"{base}/meter.zip"
    first = threading.Thread(target=put, args=("good", {"url": good_url, "sha256": swap_setup["meter_sha"]}))
    second = threading.Thread(target=put, args=("missing", {"path": missing}))
    first.start()
    time.sleep(0.03)
    second.start()
    first.join(60)
    second.join(60)

    status, good = answers["good"]
    assert status == 200, good
    assert good["model"]["status"] == "ready" and good["model"]["source"] == good_url
    assert good["model"]["error"] is None
    status, bad = answers["missing"]
    assert status == 422, bad
    assert bad["model"]["status"] == "failed" and missing in bad["model"]["error"]
    assert bad["model"]["update"] > good["model"]["update"]
    # the good model serves and stays configured; a reload reloads it
    status, body = admin(server.url, "GET", "/admin/status")
    assert body["model"]["configured"] == good_url and body["model"]["id"] != "edge-runtime-demo", body
    status, body = admin(server.url, "POST", "/admin/model/reload")
    assert status == 200 and body["model"]["source"] == good_url, body
