"""Live-server fixtures and response checks for the HTTP integration tests.

Each server is the real application (`create_app`) behind aiohttp's `AppRunner` + `TCPSite` on a free
loopback port, run on its own event loop in a background thread. Tests talk to it over real TCP with
`aiohttp.ClientSession` (or a raw socket) from their own loop, so one server can be shared by many tests
(the model loads once) while a test can still start a server with its own settings.

Helpers are reached through the `http` fixture (not imported: tests/conftest.py may also exist and two
modules named `conftest` must not be imported by name).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from PIL import Image, ImageDraw

from edge_runtime.app import create_app, wait_until_loaded
from edge_runtime.demo.model import BELT_GREY, DEMO_LABELS, build_demo_export
from edge_runtime.engine import Predictor, PredictorOptions
from edge_runtime.settings import Settings, build_settings

T = TypeVar("T")
Loader = Callable[[Path, PredictorOptions], Predictor]

METER_IMAGE = "test-dog1.jpg"  # the smallest test image of the fixture (9 KiB)

CREATED_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?$")
BODY_KEYS = {"created", "id", "iteration", "predictions", "project"}
PREDICTION_KEYS = {"boundingBox", "probability", "tagId", "tagName"}
BOX_KEYS = {"left", "top", "width", "height"}


# --------------------------------------------------------------------------------------------------
# Live servers


class LiveServer:
    """An aiohttp app served on 127.0.0.1:<free port> from a private event loop in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start(self, host: str = "127.0.0.1") -> LiveServer:
        self.host = host
        self._thread.start()

        async def up() -> int:
            # A short shutdown timeout: a handler still sleeping (a slow image host) must not hold teardown.
            self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host=host, port=0)
            await site.start()
            bound_host, port = self._runner.addresses[0][:2]
            assert bound_host == host
            return int(port)

        self.port = self.call(up())
        return self

    def wait_loaded(self, timeout: float = 60.0) -> LiveServer:
        self.call(wait_until_loaded(self.app, timeout), timeout + 5)
        return self

    def stop(self) -> None:
        async def down() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            # Connection tasks that outlive the cleanup: finish them so the loop closes clean.
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        try:
            self.call(down(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def make_settings(
    server: Mapping[str, Any] | None = None,
    url_fetch: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
) -> Settings:
    """Test settings: CPU, two inference workers, events kept in a private temp dir, plus overrides."""
    events = Path(tempfile.mkdtemp(prefix="edge-runtime-events-"))
    return build_settings(
        {
            "server": {"inference_workers": 2, **(server or {})},
            "model": {"device": "cpu", **(model or {})},
            "url_fetch": dict(url_fetch or {}),
            "events": {
                "jsonl_path": events / "events.jsonl",
                "snapshot_dir": events / "snapshots",
                "outbox_path": events / "outbox.sqlite3",
            },
        }
    )


class Servers:
    """Starts live servers and stops them all at teardown."""

    def __init__(self) -> None:
        self._servers: list[LiveServer] = []

    def __call__(
        self,
        model_path: Path,
        settings: Settings | None = None,
        loader: Loader | None = None,
        wait: bool = True,
    ) -> LiveServer:
        """Serve `model_path` with `settings` (default make_settings()); wait for the model unless told."""
        kwargs: dict[str, Any] = {"loader": loader} if loader is not None else {}
        server = self.serve_app(create_app(settings or make_settings(), model_path, **kwargs))
        if wait:
            server.wait_loaded()
        return server

    def serve_app(self, app: web.Application, host: str = "127.0.0.1") -> LiveServer:
        """Serve any aiohttp app (e.g. an image server for /url)."""
        server = LiveServer(app)
        self._servers.append(server)
        return server.start(host)

    def stop_all(self) -> None:
        while self._servers:
            self._servers.pop().stop()


@pytest.fixture
def start_server() -> Iterator[Servers]:
    """start_server(model_path, settings=None, loader=None, wait=True) -> LiveServer, for one test."""
    servers = Servers()
    yield servers
    servers.stop_all()


@pytest.fixture(scope="module")
def module_servers() -> Iterator[Servers]:
    """Like start_server, for servers shared by the tests of one module."""
    servers = Servers()
    yield servers
    servers.stop_all()


# --------------------------------------------------------------------------------------------------
# Models (`meter_dir`, `shared_models`: tests/conftest.py)


@pytest.fixture(scope="session")
def meter_expected(meter_dir: Path) -> dict[str, list[float]]:
    """image file name -> the real container's probabilities, labels.txt order."""
    data = json.loads((meter_dir / "container_outputs.json").read_text())
    outputs: dict[str, list[float]] = data["outputs"]
    return outputs


@pytest.fixture(scope="session")
def meter_labels(meter_dir: Path) -> list[str]:
    return [line.strip() for line in (meter_dir / "labels.txt").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def meter_jpeg(meter_dir: Path) -> bytes:
    return (meter_dir / METER_IMAGE).read_bytes()


@pytest.fixture(scope="session")
def meter_jpeg_expected(meter_expected: dict[str, list[float]]) -> list[float]:
    return meter_expected[METER_IMAGE]


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_export(tmp_path_factory.mktemp("demo") / "model")


@pytest.fixture(scope="session")
def meter_server(meter_dir: Path) -> Iterator[LiveServer]:
    """One server with default settings on the meter model, shared by read-only tests."""
    server = LiveServer(create_app(make_settings(), meter_dir)).start().wait_loaded()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_server(demo_dir: Path) -> Iterator[LiveServer]:
    """One server with default settings on the built-in demo detector."""
    server = LiveServer(create_app(make_settings(), demo_dir)).start().wait_loaded()
    yield server
    server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


# --------------------------------------------------------------------------------------------------
# Helpers (reached through the `http` fixture)


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class Http:
    settings = staticmethod(make_settings)
    labels = DEMO_LABELS

    @staticmethod
    def png(width: int, height: int, colour: tuple[int, int, int] = (120, 130, 140)) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (width, height), colour).save(buf, "PNG")
        return buf.getvalue()

    @staticmethod
    def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
        buf = io.BytesIO()
        image.save(buf, fmt)
        return buf.getvalue()

    @staticmethod
    def belt() -> bytes:
        """A PNG of the demo detector's grey belt with one dark stain cell and one bright glare cell."""
        image = Image.new("RGB", (320, 256), (BELT_GREY,) * 3)
        draw = ImageDraw.Draw(image)
        draw.rectangle([64, 64, 95, 95], fill=(15, 15, 15))  # stain
        draw.rectangle([224, 160, 255, 191], fill=(255, 255, 255))  # glare
        return Http.encode(image, "PNG")

    @staticmethod
    def belt_jpeg() -> bytes:
        return Http.encode(Image.open(io.BytesIO(Http.belt())).convert("RGB"), "JPEG")

    @staticmethod
    def multipart(
        data: bytes, name: str = "imageData", filename: str | None = "image.jpg"
    ) -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field(name, data, filename=filename, content_type="application/octet-stream")
        return form

    @staticmethod
    async def raw_request(
        url: str, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> RawResponse:
        """One HTTP/1.1 exchange over a plain socket: exactly these headers, nothing added (like curl)."""
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            if body or method == "POST":
                lines.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()
            await writer.wait_closed()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        response_headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        if "content-length" in response_headers:
            assert len(payload) == int(response_headers["content-length"])
        return RawResponse(int(status_line.split()[1]), response_headers, payload)

    @staticmethod
    def check_body(status: int, content_type: str, text: str) -> dict[str, Any]:
        """Assert the exported container's success format, field by field; return the parsed body."""
        assert status == 200, text
        assert content_type == "application/json"
        body: dict[str, Any] = json.loads(text)
        # Flask jsonify: sorted keys, compact separators, one trailing newline.
        assert text == json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
        assert set(body) == BODY_KEYS
        assert isinstance(body["created"], str)
        assert CREATED_RE.match(body["created"]), body["created"]
        assert body["id"] == ""
        assert body["project"] == ""
        assert body["iteration"] == ""
        assert isinstance(body["predictions"], list)
        for prediction in body["predictions"]:
            assert set(prediction) == PREDICTION_KEYS, prediction
            assert isinstance(prediction["tagName"], str)
            assert isinstance(prediction["probability"], float)
            assert 0.0 <= prediction["probability"] <= 1.0
            assert prediction["probability"] == round(prediction["probability"], 8)
        return body

    @staticmethod
    def check_cloud_body(status: int, content_type: str, text: str) -> dict[str, Any]:
        """The cloud API's shape, as the official SDKs parse it: GUID ids, tagType, best first."""
        assert status == 200, text
        assert content_type.startswith("application/json")
        body: dict[str, Any] = json.loads(text)
        assert set(body) == BODY_KEYS
        for key in ("id", "project", "iteration"):
            uuid.UUID(body[key])
        assert body["created"].endswith("Z") and CREATED_RE.match(body["created"][:-1]), body["created"]
        for prediction in body["predictions"]:
            assert set(prediction) == PREDICTION_KEYS | {"tagType"}, prediction
            assert prediction["tagType"] == "Regular"
            assert str(uuid.UUID(prediction["tagId"])) == prediction["tagId"]
        probabilities = [p["probability"] for p in body["predictions"]]
        assert probabilities == sorted(probabilities, reverse=True)
        return body

    @staticmethod
    def check_answer(
        path: str, status: int, content_type: str, text: str, labels: list[str] = DEMO_LABELS
    ) -> dict[str, Any]:
        """The container's format on its routes, the cloud's on /customvision/...; returned in the
        container's shape (`labels` order for classification, int tagIds) for the other checks."""
        if not path.startswith("/customvision/"):
            return Http.check_body(status, content_type, text)
        body = Http.check_cloud_body(status, content_type, text)
        predictions = body["predictions"]
        if all(p["boundingBox"] is None for p in predictions):  # classification: every label
            by_name = {p["tagName"]: p for p in predictions}
            predictions = [{**by_name[name], "tagId": ""} for name in labels]
        else:
            predictions = [{**p, "tagId": labels.index(p["tagName"])} for p in predictions]
        return {**body, "predictions": [{k: v for k, v in p.items() if k != "tagType"} for p in predictions]}

    @staticmethod
    async def body_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
        text = await response.text()
        return Http.check_body(response.status, response.headers.get("Content-Type", ""), text)

    @staticmethod
    def check_classification(
        body: Mapping[str, Any], labels: list[str], expected: list[float], tolerance: float = 1e-4
    ) -> None:
        predictions = body["predictions"]
        assert [p["tagName"] for p in predictions] == labels  # every label, labels.txt order
        for prediction, want in zip(predictions, expected, strict=True):
            assert prediction["tagId"] == ""
            assert prediction["boundingBox"] is None
            assert abs(prediction["probability"] - want) <= tolerance, (prediction, want)

    @staticmethod
    def check_detection(body: Mapping[str, Any]) -> None:
        """The demo detector on Http.belt(): int tagIds, normalised boxes, probability descending."""
        predictions = body["predictions"]
        assert predictions, "the demo detector found nothing on the belt image"
        for prediction in predictions:
            tag_id = prediction["tagId"]
            assert isinstance(tag_id, int) and not isinstance(tag_id, bool), prediction
            assert prediction["tagName"] == DEMO_LABELS[tag_id]
            box = prediction["boundingBox"]
            assert isinstance(box, dict) and set(box) == BOX_KEYS, box
            for key in BOX_KEYS:
                assert 0.0 <= box[key] <= 1.0, box
                assert box[key] == round(box[key], 8)
            assert box["width"] > 0 and box["height"] > 0
            assert box["left"] + box["width"] <= 1.0 + 1e-6
            assert box["top"] + box["height"] <= 1.0 + 1e-6
        probabilities = [p["probability"] for p in predictions]
        assert probabilities == sorted(probabilities, reverse=True)
        assert {p["tagName"] for p in predictions} == set(DEMO_LABELS)

    @staticmethod
    async def error(response: aiohttp.ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
        """Assert a JSON error answer {"code", "message"} with this status; return it."""
        text = await response.text()
        assert response.status == status, text
        assert response.headers.get("Content-Type") == "application/json", text
        body: dict[str, Any] = json.loads(text)
        assert set(body) == {"code", "message"}, body
        assert isinstance(body["message"], str) and body["message"]
        if code is not None:
            assert body["code"] == code, body
        return body


@pytest.fixture(scope="session")
def http() -> type[Http]:
    return Http
