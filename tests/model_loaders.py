"""Model loaders for servers under test: what `create_app(..., loader=...)` (and the integration tests'
`start_server(..., loader=...)`) calls instead of `Predictor.load`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edge_runtime.domain import PredictionResult
from edge_runtime.engine import Predictor, PredictorOptions

Loader = Callable[[Path, PredictorOptions], Predictor]


def slow_loader(delay_s: float) -> Loader:
    """A loader whose predictor spends `delay_s` extra in every predict_bytes call."""

    def load(path: Path, options: PredictorOptions) -> Predictor:
        predictor = Predictor.load(path, options)
        inner = predictor.predict_bytes

        def slow_predict_bytes(data: bytes) -> PredictionResult:
            time.sleep(delay_s)
            return inner(data)

        predictor.predict_bytes = slow_predict_bytes  # type: ignore[method-assign]
        return predictor

    return load
