"""The TFLite format (DockerFile export 2.2) and its LiteRT backend, on tiny TFLite models built here
(tests/tflite_models.py); the real export's golden test is tests/golden/test_golden_tflite.py."""

from __future__ import annotations

import json
import logging
import sys
import threading
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import synthetic
from PIL import Image
from synthetic import cpu_options
from tflite_models import classifier_tflite, write_docker_export

from edge_runtime.backends import litert
from edge_runtime.backends.providers import (
    CPU_EP,
    CUDA_EP,
    OPENVINO_EP,
    Availability,
    BackendKind,
    ExecutionPlan,
    ModelNeeds,
    parse_device,
    select_provider,
)
from edge_runtime.engine import Predictor
from edge_runtime.errors import DeviceUnavailableError, InferenceError, ModelLoadError, UnsupportedModelError
from edge_runtime.model import tflite_file
from edge_runtime.model.formats import FORMATS, PixelFormat, inspect_model
from edge_runtime.model.loader import LoadOptions, load_spec
from edge_runtime.model.spec import ModelFormat, Postprocess, Resize, TensorInfo

pytest.importorskip("ai_edge_litert", reason="the litert extra (ai-edge-litert) is not installed")

TFLITE = ModelNeeds(ModelFormat.TFLITE)
CPU_PLAN = ExecutionPlan(BackendKind.LITERT, "cpu")
LABELS = ("blue", "green", "red")  # the model's classes follow the channel order it is fed (BGR)
RED = (255, 0, 0)


def red_png(size: tuple[int, int] = (40, 30)) -> bytes:
    return bytes(synthetic.encode(Image.new("RGB", size, RED), "PNG"))


@pytest.fixture
def docker_export(tmp_path: Path) -> Path:
    return Path(write_docker_export(tmp_path / "app", classifier_tflite(), LABELS))


# ----------------------------------------------------------------------------------- the format table


def test_the_tflite_row() -> None:
    row = FORMATS[ModelFormat.TFLITE]
    assert row.files == ("model.tflite",) and row.runtimes == (BackendKind.LITERT,)
    assert row.title == "a TFLite model"
    # The 2.2 container's predict.py: IS_BGR True in General (compact), False in [S1]; 0..255 in both.
    multiclass = Postprocess.MULTICLASS
    assert row.default_pixels(multiclass, "General (compact)") == PixelFormat(bgr=True, scale=1.0)
    assert row.default_pixels(multiclass, "General (compact) [S1]") == PixelFormat(bgr=False, scale=1.0)


def test_inspect_reads_the_files_tensors(tmp_path: Path) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(classifier_tflite(size=20, classes=4, weights=[[1.0, 1.0, 1.0]] * 4))
    facts = inspect_model(model)
    assert facts.format is ModelFormat.TFLITE
    assert facts.inputs == (TensorInfo("Placeholder", (None, 20, 20, 3), "float32"),)  # batch is free
    assert facts.outputs == (TensorInfo("model_outputs", (1, 4), "float32"),)
    assert facts.metadata_props == {}


@pytest.mark.parametrize("cut", [8, 200, None])
def test_a_broken_file_is_named(tmp_path: Path, cut: int | None) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(classifier_tflite()[:cut] if cut else b"not a flatbuffer at all" * 10)
    with pytest.raises(ModelLoadError, match="not a readable TFLite model") as info:
        inspect_model(model)
    assert info.value.path == str(model)


# --------------------------------------------------------------------------------------- loading


def test_a_docker_export_loads_with_the_containers_recipe(docker_export: Path) -> None:
    spec = load_spec(docker_export)
    assert spec.format is ModelFormat.TFLITE and spec.model_path == docker_export / "model.tflite"
    assert spec.flavour == "Linux" and spec.labels == LABELS
    recipe = spec.preprocess
    assert recipe.resize is Resize.SHORTER_SIDE_TO_INPUT and recipe.input_size == (16, 16)
    assert (recipe.nchw, recipe.bgr, recipe.scale) == (False, True, 1.0)
    assert "NHWC" in recipe.describe() and "BGR 0..255" in recipe.describe()


def test_pixels_reach_the_model_bgr_0_255(docker_export: Path) -> None:
    predictor = Predictor.load(docker_export, cpu_options())
    assert predictor.plan.backend is BackendKind.LITERT and predictor.device == "cpu"
    result = predictor.predict_bytes(red_png())
    probabilities = {p.tag_name: p.probability for p in result.predictions}
    # Fed BGR 0..255, a red image is channel 2 at 255: logits (0, 0, 4) -> softmax 0.9646631.
    assert probabilities["red"] == pytest.approx(0.9646631, abs=1e-6)
    assert [p.tag_name for p in result.predictions] == list(LABELS)


def test_an_s1_docker_export_is_fed_rgb_and_cropped(tmp_path: Path) -> None:
    # The [S1] export's predict.py: IS_BGR = False, and the same shorter-side crop (not the sidecar's
    # Stretch).
    s1 = synthetic.sidecar("ClassificationMultiClass", "Stretch", 300, crop_method="FullImageShorterSide")
    folder = write_docker_export(tmp_path / "app", classifier_tflite(), LABELS, metadata=s1)
    predictor = Predictor.load(folder, cpu_options())
    recipe = predictor.spec.preprocess
    assert predictor.spec.domain == "General (compact) [S1]"
    assert recipe.resize is Resize.SHORTER_SIDE_TO_INPUT and (recipe.bgr, recipe.scale) == (False, 1.0)
    best = max(predictor.predict_bytes(red_png()).predictions, key=lambda p: p.probability)
    assert best.tag_name == "blue"  # index 0: red fed first, as RGB


def test_a_docker_export_of_a_tensorflow_graph_is_refused(tmp_path: Path) -> None:
    folder = write_docker_export(tmp_path / "app", b"\x0a\x05graph", LABELS, model_file="model.pb")
    with pytest.raises(UnsupportedModelError) as info:
        load_spec(folder)
    assert info.value.path == str(folder / "model.pb")
    message = str(info.value)
    assert "needs TensorFlow" in message and "as ONNX" in message and "2.2" in message


def test_a_tf_era_container_zip_is_refused_naming_the_graph(tmp_path: Path) -> None:
    # 2018-2021 Docker exports: app/model.pb (+ labels.txt), some without a manifest.
    archive = tmp_path / "docker.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Dockerfile", "FROM python:3.7-slim\n")
        zf.writestr("app/model.pb", b"\x0a\x05graph")
        zf.writestr("app/labels.txt", "a\nb\n")
    with pytest.raises(UnsupportedModelError) as info:
        Predictor.load(archive, cpu_options())
    assert info.value.path == f"{archive}:app/model.pb"
    assert "needs TensorFlow" in str(info.value)


def test_a_docker_manifest_without_a_model_file_name(tmp_path: Path) -> None:
    folder = write_docker_export(tmp_path / "pb", b"\x0a\x05graph", LABELS, model_file="model.pb")
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    (folder / "cvexport.manifest").write_text(json.dumps({**manifest, "ModelFileName": None}))
    with pytest.raises(UnsupportedModelError, match="needs TensorFlow"):
        load_spec(folder, LoadOptions(verify_sha1=False))
    # The same manifest beside a model.tflite: the TFLite model is found and loads.
    folder = write_docker_export(tmp_path / "tflite", classifier_tflite(), LABELS)
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    (folder / "cvexport.manifest").write_text(json.dumps({**manifest, "ModelFileName": None}))
    assert load_spec(folder).format is ModelFormat.TFLITE


def test_a_quantized_input_is_refused_at_load(tmp_path: Path) -> None:
    folder = write_docker_export(tmp_path / "app", classifier_tflite(input_dtype="uint8"), LABELS)
    with pytest.raises(UnsupportedModelError, match="uint8"):
        Predictor.load(folder, cpu_options())


def test_a_zipped_docker_export(tmp_path: Path, docker_export: Path) -> None:
    # The Docker zip's layout: Dockerfile, app/...; the folder is gone after the load, and interpreters
    # added later (overlapping runs) are built from the bytes read at load.
    archive = tmp_path / "docker.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Dockerfile", "FROM python:3.9-slim-bookworm\n")
        for path in docker_export.iterdir():
            zf.write(path, f"app/{path.name}")
    predictor = Predictor.load(archive, cpu_options(extract_dir=tmp_path / "extract"))
    assert not predictor.spec.model_path.exists()
    backend = predictor.backend
    assert isinstance(backend, litert.LiteRtBackend)
    outputs = run_together(backend, 4)
    assert all(np.array_equal(out, outputs[0]) for out in outputs)
    assert backend.interpreters >= 1


# -------------------------------------------------------------------- no LiteRT, or tflite-runtime


def test_without_litert_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, docker_export: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    with pytest.raises(ModelLoadError) as info:
        Predictor.load(docker_export, cpu_options())
    assert info.value.path == str(docker_export / "model.tflite")
    assert "edge-runtime[litert]" in str(info.value) and "tflite-runtime" in str(info.value)


def test_tflite_runtime_is_used_when_litert_is_absent(
    monkeypatch: pytest.MonkeyPatch, docker_export: Path
) -> None:
    from ai_edge_litert import interpreter

    fake = types.ModuleType("tflite_runtime")
    fake.interpreter = interpreter  # type: ignore[attr-defined]  # the same Interpreter API
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", fake)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", interpreter)
    predictor = Predictor.load(docker_export, cpu_options())
    best = max(predictor.predict_bytes(red_png()).predictions, key=lambda p: p.probability)
    assert best.tag_name == "red"


# ----------------------------------------------------------------------------------- the backend


def run_together(backend: litert.LiteRtBackend, count: int, size: int = 16) -> list[Any]:
    """`count` runs started at once from `count` threads; their outputs."""
    barrier = threading.Barrier(count)
    outputs: list[Any] = [None] * count
    errors: list[BaseException] = []

    def work(i: int) -> None:
        tensor = np.full((1, size, size, 3), 100.0, np.float32)
        try:
            barrier.wait(10)
            for _ in range(20):
                outputs[i] = backend.run(tensor)["model_outputs"]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return outputs


def test_overlapping_runs_each_get_their_own_interpreter(tmp_path: Path) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(classifier_tflite())
    backend = litert.LiteRtBackend(model, CPU_PLAN, threads=1)
    assert backend.interpreters == 1
    outputs = run_together(backend, 4)
    expected = backend.run(np.full((1, 16, 16, 3), 100.0, np.float32))["model_outputs"]
    assert all(np.array_equal(out, expected) for out in outputs)
    assert 1 <= backend.interpreters <= 4  # never more than the runs that overlapped
    settled = backend.interpreters
    for _ in range(5):
        backend.run(np.zeros((1, 16, 16, 3), np.float32))
    assert backend.interpreters == settled  # one thread at a time reuses an idle one
    backend.close()


def test_another_batch_size_and_a_bad_shape(tmp_path: Path) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(classifier_tflite())
    backend = litert.LiteRtBackend(model, CPU_PLAN)
    red, blue = np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 16, 16, 3), np.float32)
    red[..., 2], blue[..., 0] = 255, 255
    batch = backend.run(np.concatenate([red, blue]))["model_outputs"]
    assert batch.shape == (2, 3) and batch[0].argmax() == 2 and batch[1].argmax() == 0
    with pytest.raises(InferenceError, match="LiteRT failed"):
        backend.run(np.zeros((1, 8, 8, 3), np.float32))  # only the batch dimension is free
    assert backend.run(red)["model_outputs"].argmax() == 2  # a failed run leaves the backend usable


@pytest.mark.parametrize(("threads", "expected"), [(0, None), (1, 1), (3, 3)])
def test_threads_are_passed_to_each_interpreter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, threads: int, expected: int | None
) -> None:
    seen: list[int | None] = []
    real = tflite_file.open_interpreter

    def spy(path: Path, content: bytes | None = None, **options: Any) -> Any:
        seen.append(options.get("num_threads"))
        return real(path, content, **options)

    monkeypatch.setattr(litert, "open_interpreter", spy)
    model = tmp_path / "model.tflite"
    model.write_bytes(classifier_tflite())
    backend = litert.LiteRtBackend(model, CPU_PLAN, threads)
    run_together(backend, 3)
    assert seen and set(seen) == {expected}


# ------------------------------------------------------------------------------------ device rules


def test_cpu_and_auto_plans() -> None:
    plan = select_provider(parse_device("cpu"), Availability((CPU_EP,), ()), TFLITE)
    assert (plan.backend, plan.device, plan.reason) == (BackendKind.LITERT, "cpu", "requested cpu")
    plan = select_provider(parse_device("auto"), Availability((CUDA_EP, CPU_EP), ()), TFLITE)
    assert (plan.backend, plan.device) == (BackendKind.LITERT, "cpu")
    assert plan.reason == "auto: CUDA found but a TFLite model runs only on the CPU (LiteRT)"
    plan = select_provider(parse_device("auto"), Availability((CPU_EP,), ("CPU", "GPU")), TFLITE)
    assert plan.backend is BackendKind.LITERT
    assert plan.reason == "auto: Intel GPU found but a TFLite model does not run on OpenVINO"


@pytest.mark.parametrize("device", ["cuda", "openvino:GPU", "openvino:CPU", "openvino"])
def test_accelerators_are_refused_or_fall_back_aloud(device: str) -> None:
    everything = Availability((CUDA_EP, OPENVINO_EP, CPU_EP), ("CPU", "GPU"))
    with pytest.raises(DeviceUnavailableError, match=r"a TFLite model runs only on the CPU \(LiteRT\)"):
        select_provider(parse_device(device), everything, TFLITE)
    plan = select_provider(parse_device(device, allow_fallback=True), everything, TFLITE)
    assert (plan.backend, plan.device) == (BackendKind.LITERT, "cpu")
    assert plan.fallback_from == str(parse_device(device))
    assert plan.reason.startswith("fallback: openvino:" if "openvino" in device else "fallback: cuda:")
    assert "a TFLite model runs only on the CPU (LiteRT); then auto: " in plan.reason


def test_a_fallback_is_logged_and_shown(docker_export: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "edge_runtime.engine")
    predictor = Predictor.load(
        docker_export, cpu_options("cuda", allow_fallback=True), Availability((CUDA_EP, CPU_EP), ())
    )
    assert predictor.plan.fallback_from == "cuda" and predictor.device == "cpu"
    assert any("device cuda missing, using cpu" in r.getMessage() for r in caplog.records)
    with pytest.raises(DeviceUnavailableError, match="cuda: a TFLite model runs only on the CPU"):
        Predictor.load(docker_export, cpu_options("cuda"), Availability((CUDA_EP, CPU_EP), ()))
