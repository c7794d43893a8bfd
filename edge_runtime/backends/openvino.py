"""OpenVINO runtime backend: IR (model.xml/.bin) or ONNX compiled for CPU, GPU, NPU or AUTO."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.backends.providers import ExecutionPlan
from edge_runtime.errors import InferenceError, ModelLoadError

log = logging.getLogger(__name__)


class OpenVinoBackend:
    def __init__(self, model_path: Path, plan: ExecutionPlan, threads: int = 0) -> None:
        import openvino as ov

        device = plan.openvino_device or "AUTO"
        core = ov.Core()
        if "CPU" in core.available_devices:
            # CPUs with AMX/AVX512-BF16 default to bf16: up to 0.025 off Custom Vision's probabilities.
            core.set_property("CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads and device in ("CPU", "AUTO"):
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self._compiled = core.compile_model(str(model_path), device, config)
        except RuntimeError as exc:
            raise ModelLoadError(
                model_path, f"OpenVINO cannot compile the model for {device}: {exc}"
            ) from exc
        self._device = f"openvino:{device}"
        if device == "AUTO":
            chosen = self._compiled.get_property("EXECUTION_DEVICES")
            self._device = f"openvino:AUTO({','.join(chosen)})"
        self._names = [port.get_any_name() for port in self._compiled.outputs]
        self._local = threading.local()  # one infer request per thread: requests are not thread-safe

    @property
    def device(self) -> str:
        return self._device

    def run(self, tensor: NDArray[np.floating[Any]]) -> Mapping[str, Any]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        try:
            result = request.infer([tensor])
        except RuntimeError as exc:
            raise InferenceError(f"OpenVINO failed: {exc}") from exc
        return {
            name: np.array(result[port])
            for name, port in zip(self._names, self._compiled.outputs, strict=True)
        }

    def close(self) -> None:
        del self._compiled
