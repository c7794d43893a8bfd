"""The DockerFile export's own model (ExporterVersion 2.2, app/model.tflite) run by LiteRT, against the
real exported container's answers (skipped when ../shared/customvision-models is absent).

docker22-tflite-classification-meter is an untouched Docker export; the container's probabilities for the
test images were measured by running that export's app.py + predict.py, and are kept beside the ONNX
conversion of the same network: onnx-converted-meter-compact/container_outputs.json.
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from synthetic import cpu_options

from edge_runtime.backends.providers import CPU_EP, CUDA_EP, Availability, BackendKind
from edge_runtime.cli import main
from edge_runtime.engine import Predictor
from edge_runtime.errors import DeviceUnavailableError
from edge_runtime.model.export import sha1_of
from edge_runtime.model.spec import ModelFormat, Postprocess, Resize, TensorInfo

pytestmark = pytest.mark.shared

TOLERANCE = 1e-5  # per probability; the container rounds to 8 decimals


@pytest.fixture(scope="module")
def docker_dir(shared_models: Path) -> Path:
    return shared_models / "docker22-tflite-classification-meter"


@pytest.fixture(scope="module")
def container(meter_dir: Path, docker_dir: Path) -> dict[str, list[float]]:
    """image file name (in meter_dir) -> the real container's probabilities, labels.txt order."""
    data = json.loads((meter_dir / "container_outputs.json").read_text())
    assert data["labels"] == (docker_dir / "labels.txt").read_text().split()
    outputs: dict[str, list[float]] = data["outputs"]
    assert len(outputs) == 6
    return outputs


@pytest.fixture(scope="module")
def tflite(docker_dir: Path) -> Predictor:
    return Predictor.load(docker_dir, cpu_options())


def probabilities(predictor: Predictor, image: Path) -> list[float]:
    result = predictor.predict_bytes(image.read_bytes())
    assert [p.tag_name for p in result.predictions] == list(predictor.spec.labels)  # every label, in order
    return [p.probability for p in result.predictions]


def max_dp(predictor: Predictor, folder: Path, expected: dict[str, list[float]]) -> tuple[float, str]:
    """The largest |p - expected| over every image and label, and the image it was found on."""
    worst, where = 0.0, ""
    for image, want in expected.items():
        got = probabilities(predictor, folder / image)
        dp = max(abs(a - b) for a, b in zip(got, want, strict=True))
        if dp >= worst:
            worst, where = dp, image
    return worst, where


def test_the_docker_export_reproduces_the_container(
    tflite: Predictor,
    meter_dir: Path,
    container: dict[str, list[float]],
    record_property: Callable[[str, object], None],
) -> None:
    worst, where = max_dp(tflite, meter_dir, container)
    record_property("max_abs_dp", worst)
    print(f"docker22 TFLite vs the real container: max |dp| = {worst:.3g} ({where})")
    assert worst <= TOLERANCE, (
        f"max |dp| = {worst:.3g} on {where} over {len(container)} images (tolerance {TOLERANCE})"
    )


def test_the_sidecars_recipe_would_not_match(
    docker_dir: Path, meter_dir: Path, container: dict[str, list[float]]
) -> None:
    # The check above can fail: metadata_properties.json's 256 -> 224 recipe misses by far more.
    predictor = Predictor.load(docker_dir, cpu_options(resize=Resize.SHORTER_SIDE_THEN_CROP))
    worst, _ = max_dp(predictor, meter_dir, container)
    assert worst > 0.1


def test_the_spec_is_the_containers(tflite: Predictor, docker_dir: Path) -> None:
    spec, plan = tflite.spec, tflite.plan
    manifest = json.loads((docker_dir / "cvexport.manifest").read_text())
    assert (manifest["Platform"], manifest["ExporterVersion"]) == ("DockerFile", "2.2")
    assert spec.format is ModelFormat.TFLITE and spec.model_path == docker_dir / "model.tflite"
    assert spec.sha1 == manifest["ModelFileSHA1"] == sha1_of(docker_dir / "model.tflite")
    assert spec.iteration_id == manifest["IterationId"] and spec.flavour == "Linux"
    assert spec.labels == ("bolsa_plastica", "medidor", "sin_medidor")
    assert spec.postprocess is Postprocess.MULTICLASS and spec.domain == "General (compact)"
    assert spec.inputs == (TensorInfo("Placeholder", (None, 224, 224, 3), "float32"),)
    assert spec.outputs == (TensorInfo("model_outputs", (1, 3), "float32"),)
    recipe = spec.preprocess
    # predict.py: shorter side -> 224 (PIL bilinear), centre crop, IS_BGR = True, float32 0..255, NHWC.
    assert recipe.resize is Resize.SHORTER_SIDE_TO_INPUT
    assert recipe.input_size == recipe.resize_target == (224, 224)
    assert (recipe.bgr, recipe.scale, recipe.nchw, recipe.float16) == (True, 1.0, False, False)
    assert (plan.backend, tflite.device, plan.fallback_from) == (BackendKind.LITERT, "cpu", None)
    # The sidecar's Rgb8 / Normalized_0_1 and its 256 -> 224 recipe are overruled, and it says so.
    assert any("Rgb8" in note for note in spec.notes)
    assert any("shorter side -> input size" in note for note in spec.notes)


def test_the_tflite_and_its_onnx_conversion_agree(tflite: Predictor, meter_dir: Path) -> None:
    onnx = Predictor.load(meter_dir, cpu_options())
    for image in sorted(meter_dir.glob("test-*.jpg")):
        assert probabilities(tflite, image) == pytest.approx(probabilities(onnx, image), abs=TOLERANCE)


def test_the_zipped_docker_export(
    tmp_path: Path, docker_dir: Path, meter_dir: Path, container: dict[str, list[float]]
) -> None:
    # As Custom Vision zips it: Dockerfile at the top, the model and its files under app/.
    archive = tmp_path / "docker-export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Dockerfile", "FROM python:3.9-slim-bookworm\n")
        for name in ("cvexport.manifest", "labels.txt", "metadata_properties.json", "model.tflite"):
            zf.write(docker_dir / name, f"app/{name}")
    predictor = Predictor.load(archive, cpu_options(extract_dir=tmp_path / "extract"))
    assert predictor.spec.format is ModelFormat.TFLITE and not predictor.spec.model_path.exists()
    worst, where = max_dp(predictor, meter_dir, container)
    assert worst <= TOLERANCE, f"max |dp| = {worst:.3g} on {where}"


def test_concurrent_requests_get_their_own_answers(
    tflite: Predictor, meter_dir: Path, container: dict[str, list[float]]
) -> None:
    # The container shares one interpreter between its threads (43-73 % errors at 4-8 clients).
    images = sorted(container)
    barrier = threading.Barrier(4)
    failures: list[str] = []

    def client(offset: int) -> None:
        barrier.wait(10)
        for i in range(12):
            image = images[(offset + i) % len(images)]
            got = probabilities(tflite, meter_dir / image)
            if max(abs(a - b) for a, b in zip(got, container[image], strict=True)) > TOLERANCE:
                failures.append(image)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures


def test_cuda_is_refused_or_falls_back_to_the_cpu(docker_dir: Path) -> None:
    cuda_here = Availability((CUDA_EP, CPU_EP), ())
    with pytest.raises(DeviceUnavailableError, match=r"cuda: a TFLite model runs only on the CPU \(LiteRT\)"):
        Predictor.load(docker_dir, cpu_options("cuda"), cuda_here)
    predictor = Predictor.load(docker_dir, cpu_options("cuda", allow_fallback=True), cuda_here)
    assert (predictor.plan.backend, predictor.device, predictor.plan.fallback_from) == (
        BackendKind.LITERT,
        "cpu",
        "cuda",
    )


def test_inspect_shows_format_recipe_and_runtime(
    docker_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "--model", str(docker_dir), "--device", "cpu", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["format"] == "tflite"
    assert card["flavour"] == "Linux" and card["domain"] == "General (compact)"
    assert card["input"] == {
        "name": "Placeholder",
        "shape": [None, 224, 224, 3],
        "dtype": "float32",
        "layout": "NHWC",
        "colour": "BGR",
        "range": "0..255",
    }
    assert card["preprocessing"] == (
        "container (target 224x224, input 224x224, bilinear), BGR 0..255, NHWC, float32"
    )
    assert (card["runtime"], card["device"]) == ("litert", "cpu")
    assert main(["inspect", "--model", str(docker_dir), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    for line in ("format: tflite", "runtime: litert", "preprocessing: container (target 224x224"):
        assert line in text


def test_predict_cli_prints_the_containers_json(
    docker_dir: Path, meter_dir: Path, container: dict[str, list[float]], capsys: pytest.CaptureFixture[str]
) -> None:
    image = "test-cheesecake-2730999.jpg"
    assert main(["predict", "--model", str(docker_dir), "--device", "cpu", str(meter_dir / image)]) == 0
    body = json.loads(capsys.readouterr().out)
    got = [p["probability"] for p in body["predictions"]]
    assert got == pytest.approx(container[image], abs=TOLERANCE)
    assert all(p["tagId"] == "" and p["boundingBox"] is None for p in body["predictions"])
