"""The format table (model/formats.py): one row per ModelFormat, and the dispatch that reads it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import synthetic

from edge_runtime.backends import base
from edge_runtime.backends.providers import (
    CPU_EP,
    CUDA_EP,
    Availability,
    BackendKind,
    ExecutionPlan,
    ModelNeeds,
    parse_device,
    select_provider,
)
from edge_runtime.engine import create_backend
from edge_runtime.errors import DeviceUnavailableError, ModelLoadError
from edge_runtime.model import formats
from edge_runtime.model.export import MODEL_CANDIDATES
from edge_runtime.model.formats import FORMATS, PixelFormat, inspect_model, support_for_file
from edge_runtime.model.loader import load_spec
from edge_runtime.model.modelfile import ModelFacts
from edge_runtime.model.spec import ModelFormat, Postprocess


def test_every_format_has_one_row_naming_itself() -> None:
    assert set(FORMATS) == set(ModelFormat)
    for fmt, row in FORMATS.items():
        assert row.format is fmt
        assert row.files and row.runtimes and row.title


def test_every_runtime_a_row_names_can_be_built() -> None:
    for row in FORMATS.values():
        for runtime in row.runtimes:
            assert runtime in base.BACKENDS


def test_export_discovery_reads_the_table() -> None:
    assert MODEL_CANDIDATES == ("model.onnx", "model.xml", "model.tflite")
    assert tuple(name for row in FORMATS.values() for name in row.files) == MODEL_CANDIDATES


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("model.onnx", ModelFormat.ONNX), ("MODEL.XML", ModelFormat.OPENVINO), ("weights.pb", ModelFormat.ONNX)],
)
def test_file_names_map_to_rows(name: str, fmt: ModelFormat) -> None:
    assert support_for_file(Path(name)).format is fmt


def test_inspect_model_calls_the_rows_inspect(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[Path] = []

    def fake_inspect(path: Path) -> ModelFacts:
        seen.append(path)
        return ModelFacts(ModelFormat.OPENVINO, (), ())

    row = dataclasses.replace(FORMATS[ModelFormat.OPENVINO], inspect=fake_inspect)
    monkeypatch.setitem(formats.FORMATS, ModelFormat.OPENVINO, row)
    model = tmp_path / "model.xml"
    model.write_bytes(b"<net/>")
    assert inspect_model(model).format is ModelFormat.OPENVINO
    assert seen == [model]


def test_inspect_model_checks_the_file_first(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="missing"):
        inspect_model(tmp_path / "model.onnx")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        inspect_model(tmp_path / "model.onnx")


def test_colour_defaults_come_from_the_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = synthetic.write_export(tmp_path / "export", synthetic.classifier_model(), ["a", "b", "c"])
    spec = load_spec(folder)
    assert (spec.preprocess.bgr, spec.preprocess.scale) == (False, 1 / 255)  # the ONNX row's default
    row = dataclasses.replace(FORMATS[ModelFormat.ONNX], pixels=PixelFormat(bgr=True, scale=1.0))
    monkeypatch.setitem(formats.FORMATS, ModelFormat.ONNX, row)
    spec = load_spec(folder)
    assert (spec.preprocess.bgr, spec.preprocess.scale) == (True, 1.0)


def test_per_postprocess_defaults() -> None:
    onnx = FORMATS[ModelFormat.ONNX]
    assert onnx.default_pixels(Postprocess.YOLO) == PixelFormat(bgr=True, scale=1.0)
    assert onnx.default_pixels(Postprocess.MULTICLASS) == PixelFormat(bgr=False, scale=1 / 255)
    ir = FORMATS[ModelFormat.OPENVINO]
    assert ir.default_pixels(Postprocess.YOLO) == PixelFormat(bgr=False, scale=1 / 255)


def test_device_selection_reads_the_rows_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    onnx = ModelNeeds(ModelFormat.ONNX)
    available = Availability((CUDA_EP, CPU_EP), ("CPU",))
    assert select_provider(parse_device("cpu"), available, onnx).backend is BackendKind.ONNXRUNTIME
    assert select_provider(parse_device("auto"), available, onnx).device == "cuda"
    # The same format, were it readable only by OpenVINO: CPU goes there, auto skips CUDA, cuda is refused.
    only_ov = dataclasses.replace(FORMATS[ModelFormat.ONNX], runtimes=(BackendKind.OPENVINO,))
    monkeypatch.setitem(formats.FORMATS, ModelFormat.ONNX, only_ov)
    assert select_provider(parse_device("cpu"), available, onnx).backend is BackendKind.OPENVINO
    assert select_provider(parse_device("auto"), available, onnx).device == "openvino:CPU"
    with pytest.raises(DeviceUnavailableError, match="an ONNX model runs only on OpenVINO devices"):
        select_provider(parse_device("cuda"), available, onnx)


def test_create_backend_reads_the_backend_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    built: list[tuple[Path, ExecutionPlan, int]] = []

    class FakeBackend:
        device = "fake"

        def run(self, tensor: object) -> dict[str, object]:
            return {}

        def close(self) -> None:
            pass

    def factory(path: Path, plan: ExecutionPlan, threads: int) -> FakeBackend:
        built.append((path, plan, threads))
        return FakeBackend()

    monkeypatch.setitem(base.BACKENDS, BackendKind.OPENVINO, factory)
    folder = synthetic.write_export(tmp_path / "export", synthetic.classifier_model(), ["a", "b", "c"])
    spec = load_spec(folder)
    plan = ExecutionPlan(BackendKind.OPENVINO, "openvino:CPU", openvino_device="CPU")
    backend = create_backend(spec, plan, 2)
    assert backend.device == "fake"
    assert built == [(spec.model_path, plan, 2)]
