"""The model formats the runtime reads: one `FormatSupport` row per `ModelFormat`, in `FORMATS`.

Everything that differs between formats is a field of its row: the file names an export holds it under,
the function that inspects the file, the colour order and value range fed to the model when its own
metadata does not say, and the runtimes (`BackendKind`) that can run it. Export discovery
(`export.MODEL_CANDIDATES`), `inspect_model`, the loader's colour/range defaults, device selection
(`backends/providers.py`) and backend creation (`backends/base.BACKENDS`, through
`engine.create_backend`) all read this table; none of them branches on a `ModelFormat`.

Adding a format that an existing runtime can run is one `ModelFormat` member, one row here and the module
whose function inspects the file. (A format that needs a runtime we do not have yet also needs a
`BackendKind` member, its backend module, its entry in `backends/base.BACKENDS` and its device rules in
`backends/providers.py`.)

Dependency direction: model/ never imports backends/. This table names the runtimes as data
(`BackendKind` is defined here, and re-exported by `backends/providers.py`); backends/ reads the table and
knows how to build each runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePath

from edge_runtime.errors import ModelLoadError
from edge_runtime.model.modelfile import ModelFacts, inspect_onnx, inspect_openvino
from edge_runtime.model.spec import ModelFormat, Postprocess
from edge_runtime.model.tflite_file import inspect_tflite


class BackendKind(StrEnum):
    """The runtimes that run a model file (each is one backend in backends/)."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    LITERT = "litert"  # ai-edge-litert (or tflite-runtime): CPU only


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """What the network is fed: colour order and the factor applied to 0..255 pixel values."""

    bgr: bool
    scale: float  # 1.0 (0..255) or 1/255 (0..1)


@dataclass(frozen=True, slots=True)
class FormatSupport:
    format: ModelFormat
    title: str  # how messages name a model of this format: "an OpenVINO IR model"
    files: tuple[str, ...]  # the model file's names in an export, in the order they are looked for
    inspect: Callable[[Path], ModelFacts]  # the file's tensors, metadata and labels, before any session
    runtimes: tuple[BackendKind, ...]  # that can run it; the first runs it when the device is a plain CPU
    pixels: PixelFormat  # when neither the model's metadata nor `pixels_by_postprocess` says
    pixels_by_postprocess: tuple[tuple[Postprocess, PixelFormat], ...] = ()
    pixels_by_domain: tuple[tuple[str, PixelFormat], ...] = ()  # before pixels_by_postprocess

    @property
    def suffixes(self) -> tuple[str, ...]:
        return tuple(PurePath(name).suffix.lower() for name in self.files)

    def default_pixels(self, postprocess: Postprocess, domain: str = "") -> PixelFormat:
        by_domain = dict(self.pixels_by_domain).get(domain)
        return by_domain or dict(self.pixels_by_postprocess).get(postprocess, self.pixels)


# The official ONNX samples' rule is RGB 0..1 unless the model says otherwise; some domains were
# measured to differ (see README "Preprocessing").
_RGB_0_1 = PixelFormat(bgr=False, scale=1 / 255)

FORMATS: dict[ModelFormat, FormatSupport] = {
    ModelFormat.ONNX: FormatSupport(
        format=ModelFormat.ONNX,
        title="an ONNX model",
        files=("model.onnx",),
        inspect=inspect_onnx,
        runtimes=(BackendKind.ONNXRUNTIME, BackendKind.OPENVINO),
        pixels=_RGB_0_1,
        pixels_by_postprocess=(
            (Postprocess.YOLO, PixelFormat(bgr=True, scale=1.0)),  # the export's object_detection.py
            (Postprocess.SSD, PixelFormat(bgr=False, scale=1.0)),  # [S1] detection: RGB 0..255
            (Postprocess.ZIPMAP, PixelFormat(bgr=True, scale=1.0)),  # 2018 ONNX 1.2: Bgr8, ImageScaler 1
        ),
    ),
    ModelFormat.OPENVINO: FormatSupport(
        format=ModelFormat.OPENVINO,
        title="an OpenVINO IR model",
        files=("model.xml",),
        inspect=inspect_openvino,
        runtimes=(BackendKind.OPENVINO,),
        pixels=_RGB_0_1,  # the official OpenVINO samples: "RGB[0-1] NCHW", whatever the domain
    ),
    ModelFormat.TFLITE: FormatSupport(
        format=ModelFormat.TFLITE,
        title="a TFLite model",
        files=("model.tflite",),
        inspect=inspect_tflite,
        runtimes=(BackendKind.LITERT,),
        # The 2.2 container's predict.py: float32 0..255, RGB swapped to BGR by IS_BGR = True, which the
        # exporter writes into General (compact) exports (measured: the meter export's container). NHWC
        # comes from the input tensor's shape ([1, 224, 224, 3]), like every layout.
        pixels=PixelFormat(bgr=True, scale=1.0),
        # An [S1] export's predict.py has IS_BGR = False (read in a real export; its model not run here).
        pixels_by_domain=(("General (compact) [S1]", PixelFormat(bgr=False, scale=1.0)),),
    ),
}

# A model file whose name matches no row (a manifest may name any file) is read as this format: its
# parser then says precisely what is wrong with the file.
DEFAULT_FORMAT = ModelFormat.ONNX


def model_file_names() -> tuple[str, ...]:
    """Every model file name an export may hold, in the order they are looked for."""
    return tuple(name for row in FORMATS.values() for name in row.files)


def support_for_file(path: Path) -> FormatSupport:
    suffix = path.suffix.lower()
    for row in FORMATS.values():
        if suffix in row.suffixes:
            return row
    return FORMATS[DEFAULT_FORMAT]


def inspect_model(path: Path) -> ModelFacts:
    """What the model file says, read by its format's own parser before any session is created."""
    if not path.is_file():
        raise ModelLoadError(path, "model file is missing")
    if path.stat().st_size == 0:
        raise ModelLoadError(path, "model file is empty")
    return support_for_file(path).inspect(path)
