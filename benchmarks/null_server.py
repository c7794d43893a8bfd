"""`edge_runtime serve` with a predictor that answers at once: the HTTP floor of http_bench.py.

    .venv/bin/python -m benchmarks.null_server --port PORT --model PATH [--image PHOTO]

The real serve command (the same app: routes, middleware, admission, executor, metrics, JSON) on
127.0.0.1:PORT with the model on the CPU, except that every predictor it loads, once warmed up, predicts
one 640x480 JPEG made from PHOTO (as http_bench.py makes them) and then answers every predict_bytes call
with that result. What is left is what HTTP costs when inference costs nothing. The server says
"null predictor in place" on standard error when it has done so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.http_bench import NULL_PREDICTOR_MARKER, SIZES, make_jpeg, source_photo
from edge_runtime.domain import PredictionResult
from edge_runtime.engine import Predictor


def answer_at_once(jpeg: bytes) -> None:
    """Every Predictor, at the end of its warm-up (part of Predictor.load), predicts `jpeg` once and
    keeps that result as the answer to every later predict_bytes call."""
    warm_up = Predictor.warm_up

    def warm_up_then_can(self: Predictor) -> float:
        took = warm_up(self)
        canned: PredictionResult = Predictor.predict_bytes(self, jpeg)

        def predict_bytes(data: bytes) -> PredictionResult:
            return canned

        self.predict_bytes = predict_bytes  # type: ignore[method-assign]
        print(NULL_PREDICTOR_MARKER, file=sys.stderr, flush=True)
        return took

    Predictor.warm_up = warm_up_then_can  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.null_server", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True, help="export folder")
    parser.add_argument("--image", type=Path, help="source photo (default: a test-*.jpg next to the model)")
    args = parser.parse_args(argv)
    answer_at_once(make_jpeg(source_photo(args.model, args.image), SIZES["640x480"]))
    from edge_runtime.cli import main as edge_runtime

    serve = ["serve", "--host", "127.0.0.1", "--port", str(args.port), "--model", str(args.model)]
    return edge_runtime(["--log-level", "WARNING", *serve, "--device", "cpu"])


if __name__ == "__main__":
    sys.exit(main())
