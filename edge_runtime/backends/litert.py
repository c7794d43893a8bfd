"""LiteRT backend: the DockerFile export's own model.tflite on the CPU (ai-edge-litert, else tflite-runtime).

A TFLite Interpreter is not thread-safe: set_tensor / invoke / get_tensor on one interpreter from two
threads at once mixes their inputs (the exported container shares one interpreter between its Flask
threads and fails 43-73 % of requests at 4-8 concurrent clients). A lock around one interpreter would
serialise the inference workers, so this backend keeps a small pool instead: each run takes an idle
interpreter (or builds one when all are busy) and gives it back. Each interpreter is used by one thread at
a time, at most as many exist as runs ever overlapped (the inference workers), and the one built at load
(which the warm-up runs) is reused rather than left behind in the load thread. Each holds its own copy
of the weights and tensor arena (a few MB for a compact model).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.backends.providers import ExecutionPlan
from edge_runtime.errors import InferenceError, ModelLoadError, UnsupportedModelError
from edge_runtime.model.tflite_file import open_interpreter

log = logging.getLogger(__name__)

_FED_DTYPES = ("float32", "float16")  # what preprocessing makes (model/preprocess.to_tensor)


class _Interpreter:
    """One interpreter with its tensors allocated, and the indices and input shape it runs with."""

    def __init__(self, model_path: Path, content: bytes, threads: int) -> None:
        # threads 0: LiteRT's own default (num_threads unset).
        self.interpreter = open_interpreter(model_path, content, num_threads=threads or None)
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise UnsupportedModelError(
                model_path, f"expected one image input, the TFLite model has {[d['name'] for d in inputs]}"
            )
        self.input = int(inputs[0]["index"])
        self.shape = tuple(int(d) for d in inputs[0]["shape"])
        dtype = np.dtype(inputs[0]["dtype"]).name
        if dtype not in _FED_DTYPES:
            raise UnsupportedModelError(
                model_path,
                f"input {inputs[0]['name']!r} is {dtype} (a quantized model?); edge_runtime feeds float32 "
                "or float16 images as Custom Vision's exports take them",
            )
        self.outputs = [(str(d["name"]), int(d["index"])) for d in self.interpreter.get_output_details()]
        try:
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(model_path, f"LiteRT cannot prepare the model: {exc}") from exc

    def run(self, tensor: NDArray[Any]) -> dict[str, Any]:
        if tensor.shape != self.shape:  # another batch size (the file's shape_signature may allow it)
            self.interpreter.resize_tensor_input(self.input, list(tensor.shape), strict=True)
            self.interpreter.allocate_tensors()
            self.shape = tuple(tensor.shape)
        self.interpreter.set_tensor(self.input, tensor)  # copies the tensor in
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self.outputs}  # copies out


class LiteRtBackend:
    def __init__(self, model_path: Path, plan: ExecutionPlan, threads: int = 0) -> None:
        try:
            # Every interpreter is built from these bytes: a zipped export's folder is removed after the
            # load, and interpreters are added later, when runs first overlap.
            self._content = model_path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(model_path, f"cannot read the model file: {exc}") from exc
        self._path = model_path
        self._threads = threads
        self._lock = threading.Lock()
        # Built now: a bad file fails the load, not the first request.
        self._idle = [_Interpreter(model_path, self._content, threads)]
        self._device = plan.device  # "cpu": the only device this runtime is planned on
        log.debug("LiteRT interpreter for %s (threads %s)", model_path, threads or "default")

    @property
    def device(self) -> str:
        return self._device

    @property
    def interpreters(self) -> int:
        """How many interpreters exist now (all idle between runs)."""
        with self._lock:
            return len(self._idle)

    def run(self, tensor: NDArray[np.floating[Any]]) -> Mapping[str, Any]:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        try:
            if worker is None:  # every interpreter is busy in another thread
                worker = _Interpreter(self._path, self._content, self._threads)
            outputs = worker.run(tensor)
        except (ValueError, RuntimeError, ModelLoadError) as exc:
            # A failed interpreter is dropped (a half-done resize leaves it unusable): later runs build one.
            raise InferenceError(f"LiteRT failed: {exc}") from exc
        with self._lock:
            self._idle.append(worker)
        return outputs

    def close(self) -> None:
        with self._lock:
            self._idle.clear()
