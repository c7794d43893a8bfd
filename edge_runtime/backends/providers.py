"""Pure device selection: (requested device, what this machine has, the model) -> an ExecutionPlan.

Never falls back silently: a requested device that is missing raises DeviceUnavailableError unless
fallback is allowed, and then the plan records `fallback_from` so it is logged, exported and shown.

Which runtimes can run a model comes from its format's row in the format table (model/formats.py):
nothing here branches on a ModelFormat.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from edge_runtime.errors import ConfigError, DeviceUnavailableError
from edge_runtime.model.formats import FORMATS, BackendKind, FormatSupport
from edge_runtime.model.spec import ModelFormat

__all__ = [
    "CPU_EP",
    "CUDA_EP",
    "OPENVINO_EP",
    "Availability",
    "BackendKind",  # defined beside the format table (model/formats.py), which names the runtimes
    "DeviceKind",
    "DeviceRequest",
    "ExecutionPlan",
    "ModelNeeds",
    "detect_availability",
    "parse_device",
    "select_provider",
]

CUDA_EP = "CUDAExecutionProvider"
OPENVINO_EP = "OpenVINOExecutionProvider"
CPU_EP = "CPUExecutionProvider"


class DeviceKind(StrEnum):
    """What the operator asks for (the part of the device setting before any ':')."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    OPENVINO = "openvino"


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    kind: DeviceKind
    openvino_device: str | None = None  # "CPU", "GPU", "GPU.1", "NPU", "AUTO" (with kind OPENVINO)
    allow_fallback: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", DeviceKind(self.kind))  # DeviceRequest("cpu") is fine too

    def __str__(self) -> str:
        return f"openvino:{self.openvino_device}" if self.openvino_device else str(self.kind)


def parse_device(text: str, allow_fallback: bool = False) -> DeviceRequest:
    """'auto' | 'cpu' | 'cuda' | 'openvino' | 'openvino:GPU' (case-insensitive kind)."""
    name, _, device = text.strip().partition(":")
    try:
        kind = DeviceKind(name.lower())
    except ValueError:
        raise ConfigError(
            f"device {text!r}: expected auto, cpu, cuda or openvino[:CPU|GPU|NPU|AUTO]"
        ) from None
    if device and kind is not DeviceKind.OPENVINO:
        raise ConfigError(f"device {text!r}: only openvino takes a device name after ':'")
    return DeviceRequest(kind, device.upper() if device else None, allow_fallback)


@dataclass(frozen=True, slots=True)
class Availability:
    ort_providers: tuple[str, ...]
    openvino_devices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelNeeds:
    format: ModelFormat
    openvino_compatible: bool = True  # False for ZipMap (ai.onnx.ml) models

    @property
    def support(self) -> FormatSupport:
        return FORMATS[self.format]

    def runs_on(self, runtime: BackendKind) -> bool:
        return runtime in self.support.runtimes


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    backend: BackendKind
    device: str  # what we report: "cpu", "cuda", "openvino:GPU"
    ort_providers: tuple[str, ...] = ()
    openvino_device: str | None = None
    reason: str = ""
    fallback_from: str | None = None


def _ov_match(wanted: str, devices: tuple[str, ...]) -> str | None:
    """'GPU' matches 'GPU' or 'GPU.0'; 'AUTO' needs any device at all."""
    if wanted == "AUTO":
        return "AUTO" if devices else None
    for device in devices:
        if device == wanted or device.split(".")[0] == wanted:
            return wanted
    return None


def _accelerator(available: Availability) -> str | None:
    for family in ("GPU", "NPU"):
        if _ov_match(family, available.openvino_devices):
            return family
    return None


# What each runtime runs a model on, as refusals name it.
_DEVICES_OF = {
    BackendKind.ONNXRUNTIME: "onnxruntime providers",
    BackendKind.OPENVINO: "OpenVINO devices",
    BackendKind.LITERT: "the CPU (LiteRT)",
}

# How each runtime runs a model on a plain CPU.
_CPU_PLANS = {
    BackendKind.ONNXRUNTIME: ExecutionPlan(BackendKind.ONNXRUNTIME, "cpu", ort_providers=(CPU_EP,)),
    BackendKind.OPENVINO: ExecutionPlan(BackendKind.OPENVINO, "openvino:CPU", openvino_device="CPU"),
    BackendKind.LITERT: ExecutionPlan(BackendKind.LITERT, "cpu"),  # no GPU delegate in the x86 wheels
}


def _cpu(model: ModelNeeds, reason: str) -> ExecutionPlan:
    return replace(_CPU_PLANS[model.support.runtimes[0]], reason=reason)


def _reaches_openvino(model: ModelNeeds, available: Availability) -> bool:
    """The OpenVINO runtime runs the model's format, or onnxruntime does and has its OpenVINO provider."""
    return model.runs_on(BackendKind.OPENVINO) or (
        model.runs_on(BackendKind.ONNXRUNTIME) and OPENVINO_EP in available.ort_providers
    )


def _openvino(device: str, available: Availability, model: ModelNeeds, reason: str) -> ExecutionPlan:
    """Through onnxruntime's OpenVINO provider where the model runs on onnxruntime and it is installed,
    else on the OpenVINO runtime itself."""
    if model.runs_on(BackendKind.ONNXRUNTIME) and OPENVINO_EP in available.ort_providers:
        return ExecutionPlan(
            BackendKind.ONNXRUNTIME, f"openvino:{device}", (OPENVINO_EP, CPU_EP), device, reason
        )
    if not model.runs_on(BackendKind.OPENVINO):
        raise DeviceUnavailableError(f"openvino:{device}: {model.support.title} does not run on OpenVINO")
    return ExecutionPlan(BackendKind.OPENVINO, f"openvino:{device}", openvino_device=device, reason=reason)


def _runs_only_on(model: ModelNeeds) -> str:
    return " or ".join(_DEVICES_OF[runtime] for runtime in model.support.runtimes)


def _auto(available: Availability, model: ModelNeeds) -> ExecutionPlan:
    cuda = CUDA_EP in available.ort_providers
    if cuda and model.runs_on(BackendKind.ONNXRUNTIME):
        return ExecutionPlan(
            BackendKind.ONNXRUNTIME, "cuda", (CUDA_EP, CPU_EP), reason="auto: CUDA is available"
        )
    accel = _accelerator(available)
    if accel and not _reaches_openvino(model, available):
        return _cpu(model, f"auto: Intel {accel} found but {model.support.title} does not run on OpenVINO")
    if accel and model.openvino_compatible:
        return _openvino(accel, available, model, f"auto: Intel {accel} found by OpenVINO")
    if accel:
        return _cpu(model, f"auto: Intel {accel} found but this model has ops OpenVINO cannot run (ZipMap)")
    if cuda:
        return _cpu(model, f"auto: CUDA found but {model.support.title} runs only on {_runs_only_on(model)}")
    return _cpu(model, "auto: no CUDA or Intel GPU/NPU found")


def _requested(request: DeviceRequest, available: Availability, model: ModelNeeds) -> ExecutionPlan:
    if request.kind is DeviceKind.AUTO:
        return _auto(available, model)
    if request.kind is DeviceKind.CPU:
        return _cpu(model, "requested cpu")
    if request.kind is DeviceKind.CUDA:
        if not model.runs_on(BackendKind.ONNXRUNTIME):
            raise DeviceUnavailableError(f"cuda: {model.support.title} runs only on {_runs_only_on(model)}")
        if CUDA_EP not in available.ort_providers:
            raise DeviceUnavailableError(
                "cuda: onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu, "
                f"check the NVIDIA driver); available: {', '.join(available.ort_providers) or 'none'}"
            )
        return ExecutionPlan(BackendKind.ONNXRUNTIME, "cuda", (CUDA_EP, CPU_EP), reason="requested cuda")
    wanted = request.openvino_device or "AUTO"
    if not _reaches_openvino(model, available):
        raise DeviceUnavailableError(
            f"openvino:{wanted}: {model.support.title} runs only on {_runs_only_on(model)}"
        )
    if not model.openvino_compatible:
        raise DeviceUnavailableError(f"openvino:{wanted}: this model has ops OpenVINO cannot run (ZipMap)")
    device = _ov_match(wanted, available.openvino_devices)
    if device is None:
        raise DeviceUnavailableError(
            f"openvino:{wanted}: OpenVINO does not see that device here; available: "
            f"{', '.join(available.openvino_devices) or 'none'}"
        )
    return _openvino(device, available, model, f"requested openvino:{wanted}")


def select_provider(request: DeviceRequest, available: Availability, model: ModelNeeds) -> ExecutionPlan:
    try:
        return _requested(request, available, model)
    except DeviceUnavailableError as exc:
        if not request.allow_fallback:
            raise
        plan = _auto(available, model)
        return ExecutionPlan(
            plan.backend,
            plan.device,
            plan.ort_providers,
            plan.openvino_device,
            f"fallback: {exc}; then {plan.reason}",
            fallback_from=str(request),
        )


def detect_availability() -> Availability:
    """What this machine offers right now (imports the runtimes; not pure, kept apart on purpose)."""
    import onnxruntime as ort

    try:
        import openvino as ov

        devices = tuple(ov.Core().available_devices)
    except (ImportError, RuntimeError):
        devices = ()
    return Availability(tuple(ort.get_available_providers()), devices)
