"""Tiny TFLite classifiers built in the tests (flatbuffer object API shipped in ai-edge-litert), shaped like
the DockerFile 2.2 export's model.tflite: input `Placeholder` float32 [1, H, W, 3] (NHWC, batch free in
its shape signature), output `model_outputs` float32 [1, C] softmax probabilities.

The network is MEAN over H and W (one value per input channel) -> FULLY_CONNECTED -> SOFTMAX, so its
answer depends on the colour order it is fed: with the default weights, logit i = k * mean(channel i), and
a pure red image fed BGR makes the last class win.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import synthetic


def classifier_tflite(
    size: int = 16,
    classes: int = 3,
    weights: Sequence[Sequence[float]] | None = None,
    input_dtype: str = "float32",
) -> bytes:
    """The .tflite bytes of MEAN(H, W) -> FC(3 -> classes) -> SOFTMAX."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    fc = np.asarray(weights if weights is not None else np.eye(classes, 3) * (4.0 / 255.0), dtype=np.float32)
    assert fc.shape == (classes, 3)
    types = {"float32": s.TensorType.FLOAT32, "uint8": s.TensorType.UINT8}

    def buffer(data: bytes | None = None) -> object:
        buf = s.BufferT()
        buf.data = list(data) if data else None
        return buf

    def tensor(name: str, shape: list[int], buffer_index: int, dtype: int = s.TensorType.FLOAT32) -> object:
        t = s.TensorT()
        t.name, t.shape, t.buffer, t.type = name, shape, buffer_index, dtype
        return t

    def code(builtin: int) -> object:
        c = s.OperatorCodeT()
        c.builtinCode = builtin
        c.deprecatedBuiltinCode = min(builtin, 127)
        c.version = 1
        return c

    def operator(opcode: int, inputs: list[int], outputs: list[int], kind: int, options: object) -> object:
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, outputs
        op.builtinOptionsType, op.builtinOptions = kind, options
        return op

    image = tensor("Placeholder", [1, size, size, 3], 0, types[input_dtype])
    image.shapeSignature = [-1, size, size, 3]  # type: ignore[attr-defined]
    tensors = [
        image,
        tensor("axes", [2], 1, s.TensorType.INT32),
        tensor("means", [1, 3], 0),
        tensor("fc/weights", [classes, 3], 2),
        tensor("fc/biases", [classes], 3),
        tensor("logits", [1, classes], 0),
        tensor("model_outputs", [1, classes], 0),
    ]
    reducer = s.ReducerOptionsT()
    reducer.keepDims = False
    dense = s.FullyConnectedOptionsT()
    softmax = s.SoftmaxOptionsT()
    softmax.beta = 1.0
    graph = s.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs = tensors, [0], [6]
    graph.operators = [
        operator(0, [0, 1], [2], s.BuiltinOptions.ReducerOptions, reducer),
        operator(1, [2, 3, 4], [5], s.BuiltinOptions.FullyConnectedOptions, dense),
        operator(2, [5], [6], s.BuiltinOptions.SoftmaxOptions, softmax),
    ]
    graph.name = "main"
    model = s.ModelT()
    model.version = 3
    model.description = "edge_runtime test classifier"
    model.operatorCodes = [
        code(s.BuiltinOperator.MEAN),
        code(s.BuiltinOperator.FULLY_CONNECTED),
        code(s.BuiltinOperator.SOFTMAX),
    ]
    model.subgraphs = [graph]
    model.buffers = [
        buffer(),
        buffer(np.asarray([1, 2], np.int32).tobytes()),
        buffer(fc.tobytes()),
        buffer(np.zeros(classes, np.float32).tobytes()),
    ]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_docker_export(
    folder: Path,
    model: bytes | None,
    labels: Sequence[str] = ("red", "green", "blue"),
    metadata: dict[str, str] | None = None,
    model_file: str = "model.tflite",
) -> Path:
    """A DockerFile/Linux 2.2 export's app/ folder (manifest, labels, sidecar, model)."""
    folder = synthetic.write_export(
        folder,
        model,
        labels,
        metadata=metadata if metadata is not None else synthetic.classification_sidecar(),
        platform="DockerFile",
        flavor="Linux",
        model_file=model_file,
    )
    return folder
