"""The one protocol every backend implements, and `BACKENDS`: how to build the backend a plan names.

Which runtimes can run a model format is the format table's business (model/formats.py); this table
only knows, per runtime, which module builds its backend. Each entry imports its runtime when called,
so a machine without OpenVINO (or LiteRT) never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_runtime.backends.providers import BackendKind, ExecutionPlan


class Backend(Protocol):
    @property
    def device(self) -> str:
        """The device actually in use, shown in /health and metrics ("cpu", "cuda", "openvino:GPU")."""

    def run(self, tensor: NDArray[np.floating[Any]]) -> Mapping[str, Any]:
        """Run one input tensor; outputs by name. Safe to call from several threads at once."""

    def close(self) -> None:
        """Release the session / compiled model."""


BackendFactory = Callable[[Path, ExecutionPlan, int], Backend]  # (model file, plan, threads)


def _onnxruntime(model_path: Path, plan: ExecutionPlan, threads: int) -> Backend:
    from edge_runtime.backends.onnx import OnnxBackend

    return OnnxBackend(model_path, plan, threads)


def _openvino(model_path: Path, plan: ExecutionPlan, threads: int) -> Backend:
    from edge_runtime.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(model_path, plan, threads)


def _litert(model_path: Path, plan: ExecutionPlan, threads: int) -> Backend:
    from edge_runtime.backends.litert import LiteRtBackend

    return LiteRtBackend(model_path, plan, threads)


BACKENDS: dict[BackendKind, BackendFactory] = {
    BackendKind.ONNXRUNTIME: _onnxruntime,
    BackendKind.OPENVINO: _openvino,
    BackendKind.LITERT: _litert,
}
