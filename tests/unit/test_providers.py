"""Device selection is a pure function: (request, availability, model) -> plan, or a clear refusal."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
from synthetic import cpu_options

from edge_runtime.backends.providers import (
    CPU_EP,
    CUDA_EP,
    OPENVINO_EP,
    Availability,
    BackendKind,
    DeviceKind,
    DeviceRequest,
    ModelNeeds,
    detect_availability,
    parse_device,
    select_provider,
)
from edge_runtime.engine import Predictor
from edge_runtime.errors import ConfigError, DeviceUnavailableError
from edge_runtime.model.spec import ModelFormat

ORT_CPU = (CPU_EP,)
ORT_CUDA = (CUDA_EP, CPU_EP)
ORT_OV = (OPENVINO_EP, CPU_EP)
ONNX = ModelNeeds(ModelFormat.ONNX)
IR = ModelNeeds(ModelFormat.OPENVINO)
ZIPMAP = ModelNeeds(ModelFormat.ONNX, openvino_compatible=False)


class Case(NamedTuple):
    device: str
    fallback: bool
    ort: tuple[str, ...]
    ov: tuple[str, ...]
    model: ModelNeeds
    backend: BackendKind
    reported: str
    providers: tuple[str, ...]
    ov_device: str | None
    fallback_from: str | None = None


CASES = {
    "auto, CUDA present": Case(
        "auto", False, ORT_CUDA, ("CPU",), ONNX, BackendKind.ONNXRUNTIME, "cuda", ORT_CUDA, None
    ),
    "auto, nothing": Case(
        "auto", False, ORT_CPU, ("CPU",), ONNX, BackendKind.ONNXRUNTIME, "cpu", ORT_CPU, None
    ),
    "auto, no openvino at all": Case(
        "auto", False, ORT_CPU, (), ONNX, BackendKind.ONNXRUNTIME, "cpu", ORT_CPU, None
    ),
    "auto, Intel GPU": Case(
        "auto", False, ORT_CPU, ("CPU", "GPU"), ONNX, BackendKind.OPENVINO, "openvino:GPU", (), "GPU"
    ),
    "auto, two Intel GPUs": Case(
        "auto",
        False,
        ORT_CPU,
        ("CPU", "GPU.0", "GPU.1"),
        ONNX,
        BackendKind.OPENVINO,
        "openvino:GPU",
        (),
        "GPU",
    ),
    "auto, Intel NPU": Case(
        "auto", False, ORT_CPU, ("CPU", "NPU"), ONNX, BackendKind.OPENVINO, "openvino:NPU", (), "NPU"
    ),
    "auto, GPU preferred over NPU": Case(
        "auto", False, ORT_CPU, ("CPU", "NPU", "GPU"), ONNX, BackendKind.OPENVINO, "openvino:GPU", (), "GPU"
    ),
    "auto, CUDA preferred over Intel GPU": Case(
        "auto", False, ORT_CUDA, ("CPU", "GPU"), ONNX, BackendKind.ONNXRUNTIME, "cuda", ORT_CUDA, None
    ),
    "auto, IR model ignores CUDA": Case(
        "auto", False, ORT_CUDA, ("CPU",), IR, BackendKind.OPENVINO, "openvino:CPU", (), "CPU"
    ),
    "auto, IR model on Intel GPU": Case(
        "auto", False, ORT_CPU, ("CPU", "GPU"), IR, BackendKind.OPENVINO, "openvino:GPU", (), "GPU"
    ),
    "auto, ZipMap model with Intel GPU -> CPU": Case(
        "auto", False, ORT_CPU, ("CPU", "GPU"), ZIPMAP, BackendKind.ONNXRUNTIME, "cpu", ORT_CPU, None
    ),
    "auto, ORT OpenVINO EP": Case(
        "auto", False, ORT_OV, ("CPU", "GPU"), ONNX, BackendKind.ONNXRUNTIME, "openvino:GPU", ORT_OV, "GPU"
    ),
    "cpu": Case("cpu", False, ORT_CUDA, ("CPU", "GPU"), ONNX, BackendKind.ONNXRUNTIME, "cpu", ORT_CPU, None),
    "cpu, IR model": Case(
        "cpu", False, ORT_CPU, ("CPU",), IR, BackendKind.OPENVINO, "openvino:CPU", (), "CPU"
    ),
    "cuda": Case("cuda", False, ORT_CUDA, ("CPU",), ONNX, BackendKind.ONNXRUNTIME, "cuda", ORT_CUDA, None),
    "cuda missing, fallback": Case(
        "cuda", True, ORT_CPU, ("CPU",), ONNX, BackendKind.ONNXRUNTIME, "cpu", ORT_CPU, None, "cuda"
    ),
    "cuda missing, fallback to Intel GPU": Case(
        "cuda", True, ORT_CPU, ("CPU", "GPU"), ONNX, BackendKind.OPENVINO, "openvino:GPU", (), "GPU", "cuda"
    ),
    "cuda with IR model, fallback": Case(
        "cuda", True, ORT_CUDA, ("CPU",), IR, BackendKind.OPENVINO, "openvino:CPU", (), "CPU", "cuda"
    ),
    "openvino:GPU": Case(
        "openvino:GPU", False, ORT_CPU, ("CPU", "GPU"), ONNX, BackendKind.OPENVINO, "openvino:GPU", (), "GPU"
    ),
    "openvino:gpu.1 naming": Case(
        "openvino:gpu.1",
        False,
        ORT_CPU,
        ("CPU", "GPU.0", "GPU.1"),
        ONNX,
        BackendKind.OPENVINO,
        "openvino:GPU.1",
        (),
        "GPU.1",
    ),
    "openvino:GPU matches GPU.0": Case(
        "openvino:GPU",
        False,
        ORT_CPU,
        ("CPU", "GPU.0"),
        ONNX,
        BackendKind.OPENVINO,
        "openvino:GPU",
        (),
        "GPU",
    ),
    "openvino (AUTO)": Case(
        "openvino", False, ORT_CPU, ("CPU",), ONNX, BackendKind.OPENVINO, "openvino:AUTO", (), "AUTO"
    ),
    "openvino:CPU": Case(
        "openvino:CPU", False, ORT_CPU, ("CPU",), ONNX, BackendKind.OPENVINO, "openvino:CPU", (), "CPU"
    ),
    "openvino:GPU via ORT OpenVINO EP": Case(
        "openvino:GPU",
        False,
        ORT_OV,
        ("CPU", "GPU"),
        ONNX,
        BackendKind.ONNXRUNTIME,
        "openvino:GPU",
        ORT_OV,
        "GPU",
    ),
    "openvino:GPU via ORT EP, IR model -> OpenVINO runtime": Case(
        "openvino:GPU", False, ORT_OV, ("CPU", "GPU"), IR, BackendKind.OPENVINO, "openvino:GPU", (), "GPU"
    ),
    "openvino:GPU missing, fallback": Case(
        "openvino:GPU",
        True,
        ORT_CPU,
        ("CPU",),
        ONNX,
        BackendKind.ONNXRUNTIME,
        "cpu",
        ORT_CPU,
        None,
        "openvino:GPU",
    ),
    "openvino:CPU with ZipMap, fallback": Case(
        "openvino:CPU",
        True,
        ORT_CPU,
        ("CPU",),
        ZIPMAP,
        BackendKind.ONNXRUNTIME,
        "cpu",
        ORT_CPU,
        None,
        "openvino:CPU",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_selection_table(case: Case) -> None:
    plan = select_provider(
        parse_device(case.device, case.fallback), Availability(case.ort, case.ov), case.model
    )
    assert plan.backend is case.backend
    assert plan.device == case.reported
    assert plan.ort_providers == case.providers
    assert plan.openvino_device == case.ov_device
    assert plan.fallback_from == case.fallback_from
    assert plan.reason  # every plan says why
    if case.fallback_from:
        assert plan.reason.startswith("fallback:")


REFUSALS = {
    "cuda missing": ("cuda", ORT_CPU, ("CPU",), ONNX, "CUDAExecutionProvider"),
    "cuda with IR model": ("cuda", ORT_CUDA, ("CPU",), IR, "OpenVINO IR"),
    "openvino:GPU missing": ("openvino:GPU", ORT_CPU, ("CPU",), ONNX, "available: CPU"),
    "openvino:GPU.1 missing": ("openvino:GPU.1", ORT_CPU, ("CPU", "GPU"), ONNX, "GPU.1"),
    "openvino:NPU missing": ("openvino:NPU", ORT_CPU, ("CPU", "GPU"), ONNX, "NPU"),
    "openvino with no devices": ("openvino", ORT_CPU, (), ONNX, "none"),
    "openvino with ZipMap": ("openvino:CPU", ORT_CPU, ("CPU",), ZIPMAP, "ZipMap"),
}


@pytest.mark.parametrize(("device", "ort", "ov", "model", "message"), REFUSALS.values(), ids=REFUSALS.keys())
def test_missing_device_is_refused_without_fallback(
    device: str, ort: tuple[str, ...], ov: tuple[str, ...], model: ModelNeeds, message: str
) -> None:
    with pytest.raises(DeviceUnavailableError, match=message):
        select_provider(parse_device(device), Availability(ort, ov), model)


def test_zipmap_auto_reason_names_the_problem() -> None:
    plan = select_provider(DeviceRequest("auto"), Availability(ORT_CPU, ("CPU", "GPU")), ZIPMAP)
    assert "ZipMap" in plan.reason


@pytest.mark.parametrize(
    ("text", "kind", "ov_device"),
    [
        ("auto", "auto", None),
        ("CPU", "cpu", None),
        (" cuda ", "cuda", None),
        ("openvino", "openvino", None),
        ("openvino:gpu", "openvino", "GPU"),
        ("OpenVINO:GPU.1", "openvino", "GPU.1"),
        ("openvino:npu", "openvino", "NPU"),
    ],
)
def test_parse_device(text: str, kind: str, ov_device: str | None) -> None:
    request = parse_device(text)
    assert (request.kind, request.openvino_device, request.allow_fallback) == (kind, ov_device, False)
    assert parse_device(text, allow_fallback=True).allow_fallback is True


def test_device_request_str() -> None:
    assert str(parse_device("openvino:gpu")) == "openvino:GPU"
    assert str(parse_device("cuda")) == "cuda"


@pytest.mark.parametrize("text", ["", "tpu", "gpu", "cuda:0", "cpu:1", "auto:GPU", "vulkan:GPU"])
def test_parse_device_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="device"):
        parse_device(text)


def test_detect_availability_has_cpu() -> None:
    available = detect_availability()
    assert CPU_EP in available.ort_providers
    assert isinstance(available.openvino_devices, tuple)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_predictor_refuses_a_provider_onnxruntime_cannot_start(classifier_export: Path) -> None:
    # Availability claims CUDA; this onnxruntime build has none, so it would quietly run on the CPU.
    # The backend must notice and refuse instead of silently falling back.
    if CUDA_EP in detect_availability().ort_providers:
        pytest.skip("this onnxruntime really has CUDA")
    fake = Availability(ORT_CUDA, ("CPU",))
    with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
        Predictor.load(classifier_export, cpu_options("cuda"), availability=fake)


def test_device_kind_is_an_enum() -> None:
    assert parse_device("CUDA").kind is DeviceKind.CUDA
    assert DeviceRequest("cpu").kind is DeviceKind.CPU  # a plain string is converted
    with pytest.raises(ValueError):
        DeviceRequest("tpu")
