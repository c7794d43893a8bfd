"""onnxruntime backend: one InferenceSession built from an ExecutionPlan."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.backends.providers import CPU_EP, CUDA_EP, OPENVINO_EP, ExecutionPlan
from edge_runtime.errors import DeviceUnavailableError, InferenceError, ModelLoadError, UnsupportedModelError

log = logging.getLogger(__name__)

_DEVICE_OF = {CUDA_EP: "cuda", OPENVINO_EP: "openvino", CPU_EP: "cpu"}


class OnnxBackend:
    def __init__(self, model_path: Path, plan: ExecutionPlan, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 = onnxruntime's default (one per core)
        options.inter_op_num_threads = 1
        # Idle intra-op threads would spin for work: measured on the meter model with 2 threads, 5.1 ms
        # of CPU per 1.6 ms inference spinning, 3.4 ms per 2.3 ms not. CPU is what an edge box lacks.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: ORT's own warnings would bypass our logging
        providers: list[Any] = []
        for name in plan.ort_providers:
            if name == OPENVINO_EP and plan.openvino_device:
                providers.append((name, {"device_type": plan.openvino_device}))
            else:
                providers.append(name)
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            text = str(exc)
            if "opset" in text.lower() and "support" in text.lower():
                raise UnsupportedModelError(model_path, f"onnxruntime cannot run this opset: {text}") from exc
            raise ModelLoadError(model_path, f"onnxruntime cannot load the model: {text}") from exc
        active = self._session.get_providers()
        wanted = plan.ort_providers[0]
        if active[0] != wanted:
            # e.g. onnxruntime-gpu without a usable driver: ORT itself would quietly use the CPU.
            raise DeviceUnavailableError(
                f"{plan.device}: onnxruntime could not start {wanted} (it offered {active}); "
                "check the driver/runtime libraries"
            )
        self._device = plan.device if wanted != CPU_EP else "cpu"
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        log.debug("onnxruntime session on %s with providers %s", self._device, active)

    @property
    def device(self) -> str:
        return self._device

    def run(self, tensor: NDArray[np.floating[Any]]) -> Mapping[str, Any]:
        try:
            values = self._session.run(self._outputs, {self._input: tensor})
        except Exception as exc:
            raise InferenceError(f"onnxruntime failed: {exc}") from exc
        return dict(zip(self._outputs, values, strict=True))

    def close(self) -> None:
        del self._session
