"""What the model file itself says: tensors, opset, embedded metadata and labels.

Read with the `onnx` parser (or OpenVINO's reader for IR) *before* any session is created, so a broken
or legacy file gets a precise message naming it instead of a backend stack trace. Which function reads
which file is decided by the format table (`formats.py`), which also checks that the file is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ModelLoadError, UnsupportedModelError
from edge_runtime.model.spec import ModelFormat, TensorInfo

# Oldest default-domain opset onnxruntime still runs; the 2018 "ONNX 1.0" exports use opset 1.
MIN_OPSET = 7

# Said both when the manifest names the flavour (export.py) and when the file's opset shows it (here).
ONNX10_ADVICE = (
    "a 2018 'ONNX 1.0' (WinMLTools, opset 1) Custom Vision export; its legacy operators cannot run in "
    "current onnxruntime or OpenVINO. Re-export the iteration from Custom Vision as ONNX "
    "(Export -> ONNX) and load that instead"
)


@dataclass(frozen=True, slots=True)
class ModelFacts:
    format: ModelFormat
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    metadata_props: dict[str, str] = field(default_factory=dict)
    opset: int | None = None
    zipmap_labels: tuple[str, ...] | None = None
    region_yolo_anchors: tuple[tuple[float, float], ...] | None = None


def _onnx_type(type_proto: Any) -> tuple[tuple[int | str | None, ...], str]:
    """(shape, dtype), the order TensorInfo takes them in."""
    import onnx

    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        tt = type_proto.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "unknown"
        if tt.elem_type == onnx.TensorProto.STRING:
            dtype = "string"
        dims: list[int | str | None] = []
        for dim in tt.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param not in ("None", "?", ""):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        return tuple(dims), dtype
    if kind == "sequence_type":
        _, inner = _onnx_type(type_proto.sequence_type.elem_type)
        return (), f"seq({inner})"
    if kind == "map_type":
        return (), "map(string,float)"
    return (), str(kind)


def inspect_onnx(path: Path) -> ModelFacts:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(path, f"not a readable ONNX model (truncated or corrupt?): {exc}") from exc
    if not model.graph.node:
        raise ModelLoadError(
            path, "not a readable ONNX model: the graph has no nodes (truncated or corrupt?)"
        )
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    opset = opsets.get("ai.onnx")
    if opset is not None and opset < MIN_OPSET:
        raise UnsupportedModelError(path, ONNX10_ADVICE)
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and opset > newest:
        raise UnsupportedModelError(
            path, f"uses ONNX opset {opset}; this runtime supports up to opset {newest}: upgrade edge_runtime"
        )
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(
        TensorInfo(v.name, *_onnx_type(v.type)) for v in model.graph.input if v.name not in initializers
    )
    outputs = tuple(TensorInfo(v.name, *_onnx_type(v.type)) for v in model.graph.output)
    zipmap: tuple[str, ...] | None = None
    for node in model.graph.node:
        if node.op_type == "ZipMap":
            for attr in node.attribute:
                if attr.name == "classlabels_strings":
                    zipmap = tuple(s.decode("utf-8") for s in attr.strings)
    return ModelFacts(
        format=ModelFormat.ONNX,
        inputs=inputs,
        outputs=outputs,
        metadata_props={p.key: p.value for p in model.metadata_props},
        opset=opset,
        zipmap_labels=zipmap,
    )


def inspect_openvino(path: Path) -> ModelFacts:
    import openvino as ov

    if not path.with_suffix(".bin").is_file():
        raise ModelLoadError(
            path.with_suffix(".bin"), "OpenVINO weights file is missing (expected beside model.xml)"
        )
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as exc:
        raise ModelLoadError(path, f"not a readable OpenVINO IR model: {exc}") from exc

    def info(port: Any) -> TensorInfo:
        shape = tuple((int(d.get_length()) if d.is_static else None) for d in port.get_partial_shape())
        return TensorInfo(port.get_any_name(), shape, port.get_element_type().to_dtype().name)

    anchors = None
    for op in model.get_ops():
        if op.get_type_name() == "RegionYolo":
            values = [float(v) for v in op.get_attributes().get("anchors", [])]
            anchors = tuple(zip(values[0::2], values[1::2], strict=True))
    # Custom Vision IR carries no Image.* keys that we know of: colour and range come from defaults.
    return ModelFacts(
        format=ModelFormat.OPENVINO,
        inputs=tuple(info(p) for p in model.inputs),
        outputs=tuple(info(p) for p in model.outputs),
        region_yolo_anchors=anchors,
    )
