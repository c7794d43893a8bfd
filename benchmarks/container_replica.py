"""The exported Custom Vision container (DockerFile export 2.2, TFLite), replicated: the reference of
throughput_bench.py.

    .venv/bin/python -m benchmarks.container_replica serve --port PORT [--model PATH]
    .venv/bin/python -m benchmarks.container_replica check [--model PATH] [--fixtures PATH]

The container is a Flask app whose `POST /image` hands the raw body to one global predictor. Its pipeline,
as the export's description gives it and as reimplemented here (not copied):

1. `PIL.Image.open(io.BytesIO(body))`;
2. EXIF orientation (tag 0x0112, read with `image._getexif()`), zero-based o = orientation - 1:
   o >= 4 -> TRANSPOSE; o in (2, 3, 6, 7) -> FLIP_TOP_BOTTOM; o in (1, 2, 5, 6) -> FLIP_LEFT_RIGHT;
3. resize, keeping the aspect ratio, so that the SHORTER side equals the network's input size (224 here),
   the other side round()ed, with Pillow's BILINEAR filter;
4. centre crop to the input size: left = (w - size) // 2, top = (h - size) // 2;
5. `convert("RGB")` when the mode is not RGB; `np.array(image, dtype=np.float32)` (0..255);
6. RGB -> BGR (IS_BGR is True for the General (compact) domains); a batch axis in front (NHWC);
7. TFLite: `set_tensor`, `invoke`, `get_tensor`: the model's own softmax output;
8. the answer: every label in labels.txt order as `{"tagName", "probability": round(p, 8), "tagId": "",
   "boundingBox": None}`, with `id`, `project`, `iteration` and `created`.

`ReplicaPredictor` runs that in-process (with each stage timed, which the container does not do). The
server (`serve`) is the HTTP side: the container runs Flask's threaded development server; Flask is not
installed here, so a stdlib `ThreadingHTTPServer` (HTTP/1.1 keep-alive, listen backlog 128) serves the
same pipeline. The container's single global interpreter is not thread-safe: the real container failed
43-66 % of requests at concurrency 4 (issue 17). Here one lock guards the interpreter, so the replica never
fails and is the container's **best case** over HTTP. `GET /health/ready` exists only for the benchmark
harness (tests/processes.py's wait_ready).

`check` prints the largest |probability - the real container's answer| over the fixture images
(`container_outputs.json` beside the ONNX conversion of the same network); it must stay <= 1e-5.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

DOCKER_MODEL = Path("../shared/customvision-models/docker22-tflite-classification-meter")  # from the repo
CONTAINER_FIXTURES = Path("../shared/customvision-models/onnx-converted-meter-compact")  # container_outputs
EXIF_ORIENTATION = 0x0112
IS_BGR = True  # General (compact)
READY_PATH = "/health/ready"


def tflite_interpreter_class() -> Any:
    """LiteRT's Interpreter (ai-edge-litert), else tflite_runtime's (what the container installs); an
    ImportError when neither is installed."""
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(name).Interpreter
        except ImportError:
            continue
    raise ImportError("neither ai-edge-litert nor tflite-runtime is installed")


# ----------------------------------------------------------------------------------------- the recipe


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """The container's orientation fix: read tag 0x0112 from `_getexif()`, shift it to zero-based, then
    transpose and/or flip."""
    read_exif = getattr(image, "_getexif", None)
    if read_exif is None:
        return image
    exif = read_exif()
    if not exif or EXIF_ORIENTATION not in exif:
        return image
    o = int(exif.get(EXIF_ORIENTATION, 1)) - 1
    if o >= 4:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    if o in (2, 3, 6, 7):
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if o in (1, 2, 5, 6):
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Scale so that the shorter side is `size` (the longer one rounded), Pillow BILINEAR."""
    w, h = image.size
    new = (size, round(h * size / w)) if w <= h else (round(w * size / h), size)
    return image.resize(new, Image.Resampling.BILINEAR)


def crop_centre(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image) -> NDArray[np.float32]:
    """RGB float32 0..255, channels swapped to BGR, a batch axis in front: (1, H, W, 3)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    pixels = np.array(image, dtype=np.float32)
    if IS_BGR:
        pixels = pixels[:, :, (2, 1, 0)]
    return pixels[np.newaxis, ...]


# ------------------------------------------------------------------------------------------ predictor


@dataclass(frozen=True, slots=True)
class ReplicaTimings:
    """Seconds per stage of one prediction (the same four stages as edge_runtime's StageTimings)."""

    decode: float  # Image.open + load (Pillow decodes lazily; the container's resize would do it)
    preprocess: float  # orientation, resize, crop, RGB, float32, BGR, batch axis
    inference: float  # set_tensor + invoke + get_tensor
    postprocess: float  # the answer's dict


@dataclass(frozen=True, slots=True)
class ReplicaAnswer:
    response: Mapping[str, object]  # what the container answers, as a dict (json.dumps'ed over HTTP)
    probabilities: tuple[float, ...]  # unrounded, labels.txt order
    timings: ReplicaTimings


class ReplicaPredictor:
    """The container's single global predictor: one TFLite interpreter (LiteRT's default threads, as the
    container leaves num_threads unset), not thread-safe: callers in several threads must hold `lock`."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.labels = tuple((model_dir / "labels.txt").read_text().split())
        self.interpreter = tflite_interpreter_class()(model_path=str(model_dir / "model.tflite"))
        self.interpreter.allocate_tensors()
        source = self.interpreter.get_input_details()[0]
        self.input_index: int = source["index"]
        self.output_index: int = self.interpreter.get_output_details()[0]["index"]
        shape = tuple(int(x) for x in source["shape"])  # (1, H, W, 3)
        if len(shape) != 4 or shape[1] != shape[2]:
            raise ValueError(f"{model_dir}: expected a square NHWC input, got {shape}")
        self.input_size = shape[1]
        self.lock = threading.Lock()

    def predict(self, body: bytes) -> ReplicaAnswer:
        t0 = time.perf_counter()
        image: Image.Image = Image.open(io.BytesIO(body))
        image.load()
        t1 = time.perf_counter()
        image = apply_exif_orientation(image)
        image = resize_shorter_side(image, self.input_size)
        image = crop_centre(image, self.input_size)
        tensor = to_tensor(image)
        t2 = time.perf_counter()
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        output = np.array(self.interpreter.get_tensor(self.output_index))[0]
        t3 = time.perf_counter()
        probabilities = tuple(float(p) for p in output)
        response = {
            "id": "",
            "project": "",
            "iteration": "",
            "created": datetime.now(UTC).replace(tzinfo=None).isoformat(),
            "predictions": [
                {"tagName": label, "probability": round(p, 8), "tagId": "", "boundingBox": None}
                for label, p in zip(self.labels, probabilities, strict=True)
            ],
        }
        t4 = time.perf_counter()
        return ReplicaAnswer(response, probabilities, ReplicaTimings(t1 - t0, t2 - t1, t3 - t2, t4 - t3))


def container_max_dp(predictor: ReplicaPredictor, fixtures: Path) -> tuple[float, str, int]:
    """The largest |rounded probability - the real container's answer| over container_outputs.json's
    images, the image it was found on, and how many images were compared."""
    data = json.loads((fixtures / "container_outputs.json").read_text())
    if list(data["labels"]) != list(predictor.labels):
        raise ValueError(f"labels differ: {data['labels']} vs {predictor.labels}")
    worst, where = 0.0, ""
    outputs: Mapping[str, Sequence[float]] = data["outputs"]
    for name, want in outputs.items():
        answer = predictor.predict((fixtures / name).read_bytes())
        got = [p["probability"] for p in answer.response["predictions"]]  # type: ignore[attr-defined]
        dp = max(abs(float(a) - float(b)) for a, b in zip(got, want, strict=True))
        if dp >= worst:
            worst, where = dp, name
    return worst, where, len(outputs)


# -------------------------------------------------------------------------------------------- server


class ReplicaServer(ThreadingHTTPServer):
    request_queue_size = 128  # werkzeug's listen backlog; socketserver's default of 5 drops SYNs at c=64
    daemon_threads = True

    def __init__(self, port: int, predictor: ReplicaPredictor) -> None:
        super().__init__(("127.0.0.1", port), ReplicaHandler)
        self.predictor = predictor


class ReplicaHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as werkzeug's threaded server answers: the best case
    # Headers and body go out as two writes: with Nagle on, the body waits for the client's delayed ACK
    # (a steady 40 ms stall per 1080p request was measured). Off: the best case again.
    disable_nagle_algorithm = True
    server: ReplicaServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == READY_PATH:
            self._answer(200, b'{"status": "ready"}')
        elif self.path == "/":
            self._answer(200, b"Healthy", "text/plain")
        else:
            self._answer(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/image":
            self._answer(404, b'{"error": "not found"}')
            return
        predictor = self.server.predictor
        try:
            with predictor.lock:  # the container's global predictor has no thread safety
                answer = predictor.predict(body)
        except Exception as exc:  # the container answers 500 with the error's text
            self._answer(500, json.dumps({"error": str(exc)}).encode())
            return
        self._answer(200, json.dumps(answer.response).encode())


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(port: int, model_dir: Path) -> int:
    predictor = ReplicaPredictor(model_dir)
    with ReplicaServer(port, predictor) as server:
        print(f"container replica on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


def replica_command(port: int, model_dir: Path) -> list[str]:
    """The replica server as a process (run from the repository root)."""
    return [
        sys.executable,
        "-m",
        "benchmarks.container_replica",
        "serve",
        "--port",
        str(port),
        "--model",
        str(model_dir),
    ]


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.container_replica",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="the replica HTTP server on 127.0.0.1:PORT")
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--model", type=Path, default=DOCKER_MODEL, help="the docker export folder")
    checking = commands.add_parser("check", help="max |dp| against the real container's answers")
    checking.add_argument("--model", type=Path, default=DOCKER_MODEL, help="the docker export folder")
    checking.add_argument(
        "--fixtures", type=Path, default=CONTAINER_FIXTURES, help="container_outputs.json's folder"
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        signal.signal(signal.SIGTERM, _interrupt)  # the harness stops servers with SIGTERM
        return serve(args.port, args.model)
    worst, where, count = container_max_dp(ReplicaPredictor(args.model), args.fixtures)
    print(f"replica vs the real container: max |dp| = {worst:.3g} ({where}) over {count} images")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
