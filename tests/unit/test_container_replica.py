"""benchmarks/container_replica.py, the reference of the throughput benchmark (issue 17): it must answer as
the real exported container did (container_outputs.json) within 1e-5, or every ratio it prints is against
something else. Skipped when ../shared/customvision-models or ai-edge-litert is missing."""

from __future__ import annotations

import http.client
import importlib.util
import io
import json
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image, ImageOps

pytestmark = pytest.mark.shared

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5


def load_replica() -> ModuleType:
    """The benchmark module by its path (the repository root is not on the tests' import path)."""
    name = "bench_container_replica"
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "container_replica.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


replica = load_replica()


@pytest.fixture(scope="module")
def predictor(shared_models: Path) -> object:
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    return replica.ReplicaPredictor(shared_models / "docker22-tflite-classification-meter")


@pytest.fixture(scope="module")
def container(meter_dir: Path) -> dict[str, list[float]]:
    data = json.loads((meter_dir / "container_outputs.json").read_text())
    outputs: dict[str, list[float]] = data["outputs"]
    assert len(outputs) == 6
    return outputs


def test_the_replica_answers_as_the_real_container(
    predictor: object, meter_dir: Path, container: dict[str, list[float]]
) -> None:
    worst, where, count = replica.container_max_dp(predictor, meter_dir)
    assert count == len(container)
    assert worst <= TOLERANCE, f"max |dp| = {worst:.3g} on {where}"
    for name, want in container.items():
        response = predictor.predict((meter_dir / name).read_bytes()).response  # type: ignore[attr-defined]
        assert set(response) == {"id", "project", "iteration", "created", "predictions"}
        got = response["predictions"]
        assert [p["tagName"] for p in got] == ["bolsa_plastica", "medidor", "sin_medidor"]
        assert all(p["tagId"] == "" and p["boundingBox"] is None for p in got)
        assert all(p["probability"] == round(p["probability"], 8) for p in got)
        assert [p["probability"] for p in got] == pytest.approx(want, abs=TOLERANCE)


def test_its_stages_are_timed(predictor: object, meter_dir: Path) -> None:
    answer = predictor.predict((meter_dir / "test-cat.jpg").read_bytes())  # type: ignore[attr-defined]
    t = answer.timings
    assert min(t.decode, t.preprocess, t.inference, t.postprocess) >= 0
    assert t.decode > 0 and t.inference > 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_orientation_fix_equals_pillows(orientation: int) -> None:
    # The container's flips and transposes for each EXIF orientation are exif_transpose's rotations.
    pixels = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(out.getvalue())) as image:
        image.load()
        ours = replica.apply_exif_orientation(image)
        pillows = ImageOps.exif_transpose(image)
        assert ours.size == pillows.size
        assert np.array_equal(np.asarray(ours), np.asarray(pillows))


@pytest.mark.parametrize(
    ("size", "resized"), [((640, 480), (299, 224)), ((480, 640), (224, 299)), ((300, 300), (224, 224))]
)
def test_the_shorter_side_becomes_the_input_size(size: tuple[int, int], resized: tuple[int, int]) -> None:
    image = replica.resize_shorter_side(Image.new("RGB", size), 224)
    assert image.size == resized
    assert replica.crop_centre(image, 224).size == (224, 224)
    tensor = replica.to_tensor(replica.crop_centre(image.convert("L"), 224))
    assert tensor.shape == (1, 224, 224, 3) and tensor.dtype == np.float32


@pytest.fixture
def server(predictor: object) -> Iterator[int]:
    httpd = replica.ReplicaServer(0, predictor)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def post(port: int, body: bytes, path: str = "/image") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_server_answers_as_in_process_and_serialises_concurrent_requests(
    server: int, meter_dir: Path, container: dict[str, list[float]]
) -> None:
    names = list(container) * 2
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda name: post(server, (meter_dir / name).read_bytes()), names))
    for name, (status, body) in zip(names, answers, strict=True):
        assert status == 200
        got = [p["probability"] for p in json.loads(body)["predictions"]]
        assert got == pytest.approx(container[name], abs=TOLERANCE)
    status, body = post(server, b"not an image")
    assert status == 500 and "error" in json.loads(body)
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    try:
        for _ in range(2):  # keep-alive: two answers on one connection
            connection.request("GET", "/health/ready")
            response = connection.getresponse()
            assert response.status == 200
            response.read()
    finally:
        connection.close()
