"""What a TFLite model file says (the DockerFile export, ExporterVersion 2.2: app/model.tflite).

Read with the LiteRT interpreter itself: `ai_edge_litert` (PyPI `ai-edge-litert`, the `litert` extra),
else `tflite_runtime` (PyPI `tflite-runtime`, for machines where only that wheel exists). The file is
opened without the default delegates and without allocating tensors, so inspecting it is cheap.
Neither package installed: a ModelLoadError that names the model file and the extra to install.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ModelLoadError
from edge_runtime.model.modelfile import ModelFacts
from edge_runtime.model.spec import ModelFormat, TensorInfo

INSTALL_HINT = (
    "running a TFLite model needs LiteRT: install the litert extra (pip install 'edge-runtime[litert]', "
    "which brings ai-edge-litert), or tflite-runtime where no ai-edge-litert wheel exists"
)


def interpreter_module(model_path: Path) -> Any:
    """`ai_edge_litert.interpreter`, else `tflite_runtime.interpreter` (same Interpreter API)."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError:
            raise ModelLoadError(model_path, INSTALL_HINT) from None
    return interpreter


def open_interpreter(
    model_path: Path, content: bytes | None = None, *, num_threads: int | None = None, delegates: bool = True
) -> Any:
    """An Interpreter of the file, or of `content` (the file's bytes, read before: a zipped export's
    folder is gone after the load) with tensors not yet allocated; an unreadable model is a
    ModelLoadError naming the file."""
    module = interpreter_module(model_path)
    options: dict[str, Any] = {"num_threads": num_threads}
    if content is None:
        options["model_path"] = str(model_path)
    else:
        options["model_content"] = content
    if not delegates:  # inspection only: no XNNPACK graph rewrite
        options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return module.Interpreter(**options)
    except (ValueError, RuntimeError) as exc:
        problem = f"not a readable TFLite model (truncated or corrupt?): {exc}"
        raise ModelLoadError(model_path, problem) from exc


def tensor_info(details: Mapping[str, Any]) -> TensorInfo:
    """One tensor of get_input_details()/get_output_details(): the file's own shape (shape_signature,
    -1 for a free dimension shown as None) and dtype."""
    signature = details.get("shape_signature")
    dims = signature if signature is not None and len(signature) else details["shape"]
    shape = tuple(None if int(d) < 0 else int(d) for d in dims)
    return TensorInfo(str(details["name"]), shape, np.dtype(details["dtype"]).name)


def inspect_tflite(path: Path) -> ModelFacts:
    interpreter = open_interpreter(path, delegates=False)
    return ModelFacts(
        format=ModelFormat.TFLITE,
        inputs=tuple(tensor_info(d) for d in interpreter.get_input_details()),
        outputs=tuple(tensor_info(d) for d in interpreter.get_output_details()),
    )
