"""Golden tests on the real Custom Vision fixtures in ../shared/customvision-models (skipped when absent).

Reference values come from the fixture folders themselves: container_outputs.json (the real exported
container), expected_outputs.json (the original TF/TFLite network) and PROVENANCE.md (verified top-1).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import synthetic
from synthetic import cpu_options

from edge_runtime.backends.providers import BackendKind
from edge_runtime.domain import Task
from edge_runtime.engine import Predictor
from edge_runtime.errors import DeviceUnavailableError, UnsupportedModelError
from edge_runtime.model.export import describe_export, sha1_of
from edge_runtime.model.loader import LoadOptions, load_spec
from edge_runtime.model.spec import DEFAULT_YOLO_ANCHORS, Postprocess, Resize

pytestmark = pytest.mark.shared

TOLERANCE = 1e-4  # per probability


def reference(folder: Path, name: str) -> dict[str, list[float]]:
    data = json.loads((folder / name).read_text())
    assert data["labels"] == (folder / "labels.txt").read_text().split()
    return data["outputs"]


def check_outputs(predictor: Predictor, folder: Path, expected: dict[str, list[float]]) -> None:
    assert len(expected) == 6
    for image, probabilities in expected.items():
        result = predictor.predict_bytes((folder / image).read_bytes())
        assert [p.tag_name for p in result.predictions] == list(predictor.spec.labels)
        got = [p.probability for p in result.predictions]
        assert got == pytest.approx(probabilities, abs=TOLERANCE), image


@pytest.fixture(scope="module")
def meter_predictor(meter_dir: Path) -> Predictor:
    return Predictor.load(meter_dir, cpu_options())


# ------------------------------------------------------------------------------ meter (ShuffleNet-like)


def test_meter_reproduces_the_container_from_jpeg_bytes(meter_predictor: Predictor, meter_dir: Path) -> None:
    spec = meter_predictor.spec
    assert spec.task is Task.CLASSIFICATION and spec.postprocess is Postprocess.MULTICLASS
    assert spec.preprocess.resize is Resize.SHORTER_SIDE_TO_INPUT  # the default recipe
    assert meter_predictor.device == "cpu"
    check_outputs(meter_predictor, meter_dir, reference(meter_dir, "container_outputs.json"))


def test_meter_container_values_are_not_the_sidecar_values(
    meter_predictor: Predictor, meter_dir: Path
) -> None:
    # The two reference files differ by up to 0.16: matching one is not matching both by accident.
    container = reference(meter_dir, "container_outputs.json")
    sidecar = reference(meter_dir, "expected_outputs.json")
    assert max(abs(a - b) for k in container for a, b in zip(container[k], sidecar[k], strict=True)) > 0.1


def test_meter_with_the_sidecar_recipe_reproduces_the_original_network(meter_dir: Path) -> None:
    predictor = Predictor.load(meter_dir, cpu_options(resize=Resize.SHORTER_SIDE_THEN_CROP))
    check_outputs(predictor, meter_dir, reference(meter_dir, "expected_outputs.json"))


def test_meter_spec(meter_predictor: Predictor, meter_dir: Path) -> None:
    spec = meter_predictor.spec
    manifest = json.loads((meter_dir / "cvexport.manifest").read_text())
    assert spec.labels == ("bolsa_plastica", "medidor", "sin_medidor")
    assert spec.sha1 == manifest["ModelFileSHA1"] == sha1_of(meter_dir / "model.onnx")
    assert spec.iteration_id == manifest["IterationId"]
    assert spec.input.name == "data" and spec.input.shape == (None, 3, 224, 224)
    assert spec.outputs[0].name == "model_output" and spec.outputs[0].shape == (None, 3)
    assert spec.domain == "General (compact)"
    # sidecar Rgb8 / Normalized_0_1 overruled by the model's Bgr8 / NominalRange_0_255
    assert spec.preprocess.bgr is True and spec.preprocess.scale == 1.0
    assert any("Rgb8" in note and "not" in note for note in spec.notes)  # the overruled keys are noted


def test_meter_from_a_zip(tmp_path: Path, meter_dir: Path, meter_predictor: Predictor) -> None:
    archive = tmp_path / "meter.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("cvexport.manifest", "labels.txt", "metadata_properties.json", "model.onnx"):
            zf.write(meter_dir / name, name)
    extract = tmp_path / "extract"
    extract.mkdir()
    zipped = Predictor.load(archive, cpu_options(extract_dir=extract))
    assert zipped.spec.root.is_relative_to(extract)
    assert zipped.spec.sha1 == meter_predictor.spec.sha1
    for image in ("test-cat.jpg", "test-dog.jpg", "test-fries-2846809.jpg"):
        data = (meter_dir / image).read_bytes()
        assert zipped.predict_bytes(data).predictions == meter_predictor.predict_bytes(data).predictions
    check_outputs(zipped, meter_dir, reference(meter_dir, "container_outputs.json"))


def test_meter_without_manifest_or_sidecar(tmp_path: Path, meter_dir: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(meter_dir / "model.onnx", bare / "model.onnx")
    shutil.copy(meter_dir / "labels.txt", bare / "labels.txt")
    predictor = Predictor.load(bare, cpu_options())
    spec = predictor.spec
    # Documented defaults: compact multiclass, container recipe; colour and range from the model's metadata.
    assert spec.flavour is None and spec.iteration_id == ""
    assert spec.model_id == spec.sha1[:12]
    assert spec.postprocess is Postprocess.MULTICLASS
    assert spec.preprocess.resize is Resize.SHORTER_SIDE_TO_INPUT
    assert spec.preprocess.bgr is True and spec.preprocess.scale == 1.0
    assert not any("metadata_properties.json" in note for note in spec.notes)  # nothing to overrule
    check_outputs(predictor, meter_dir, reference(meter_dir, "container_outputs.json"))


def test_meter_on_openvino_cpu_reproduces_the_container(meter_dir: Path) -> None:
    predictor = Predictor.load(meter_dir, cpu_options("openvino:CPU"))
    assert predictor.plan.backend is BackendKind.OPENVINO
    check_outputs(predictor, meter_dir, reference(meter_dir, "container_outputs.json"))


def test_meter_on_openvino_cpu_agrees_on_top1(meter_dir: Path, meter_predictor: Predictor) -> None:
    predictor = Predictor.load(meter_dir, cpu_options("openvino:CPU"))
    assert predictor.device == "openvino:CPU"
    for image in reference(meter_dir, "container_outputs.json"):
        data = (meter_dir / image).read_bytes()
        a = [p.probability for p in predictor.predict_bytes(data).predictions]
        b = [p.probability for p in meter_predictor.predict_bytes(data).predictions]
        assert a.index(max(a)) == b.index(max(b))
        assert a == pytest.approx(b, abs=5e-2)


# ------------------------------------------------------------------------------------------ apple/banana


def test_applebanana_with_the_sidecar_recipe(shared_models: Path) -> None:
    folder = shared_models / "onnx-converted-applebanana-compact"
    predictor = Predictor.load(folder, cpu_options(resize=Resize.SHORTER_SIDE_THEN_CROP))
    spec = predictor.spec
    assert spec.labels == ("Apple", "Banana")
    assert spec.preprocess.input_size == (227, 227) and spec.preprocess.resize_target == (256, 256)
    assert spec.preprocess.bgr is True and spec.preprocess.scale == 1.0
    check_outputs(predictor, folder, reference(folder, "expected_outputs.json"))


# ------------------------------------------------------------------------------------------ 2018 exports


@pytest.fixture(scope="module")
def cat_or_dog(shared_models: Path) -> Predictor:
    return Predictor.load(shared_models / "onnx12-cat-or-dog", cpu_options())


@pytest.mark.parametrize(
    ("image", "label"), [("test-cat.jpg", "cat"), ("test-dog.jpg", "dog"), ("test-dog1.jpg", "dog")]
)
def test_onnx12_cat_or_dog_top1(cat_or_dog: Predictor, shared_models: Path, image: str, label: str) -> None:
    result = cat_or_dog.predict_bytes((shared_models / "onnx12-cat-or-dog" / image).read_bytes())
    best = max(result.predictions, key=lambda p: p.probability)
    assert best.tag_name == label
    assert best.probability > 0.99  # PROVENANCE.md: 1.0
    assert [p.tag_name for p in result.predictions] == ["cat", "dog", "Negative"]


def test_onnx12_spec(cat_or_dog: Predictor) -> None:
    spec = cat_or_dog.spec
    assert spec.postprocess is Postprocess.ZIPMAP
    assert spec.labels == ("cat", "dog", "Negative")  # embedded: the folder has no labels.txt
    assert "2018" in spec.domain
    assert spec.preprocess.resize is Resize.SHORTER_SIDE_THEN_CROP
    assert spec.preprocess.resize_target == (256, 256) and spec.preprocess.input_size == (227, 227)
    assert spec.preprocess.bgr is True and spec.preprocess.scale == 1.0  # Bgr8, ImageScaler(scale=1)
    assert cat_or_dog.device == "cpu"


def test_onnx12_refuses_openvino(shared_models: Path) -> None:
    with pytest.raises(DeviceUnavailableError, match="ZipMap"):
        Predictor.load(shared_models / "onnx12-cat-or-dog", cpu_options("openvino:CPU"))
    fallback = Predictor.load(
        shared_models / "onnx12-cat-or-dog", cpu_options("openvino:CPU", allow_fallback=True)
    )
    assert fallback.plan.fallback_from == "openvino:CPU"
    assert fallback.plan.backend is BackendKind.ONNXRUNTIME


def test_onnx10_is_rejected_with_advice(shared_models: Path) -> None:
    folder = shared_models / "onnx10-cheesecake-donuts-fries"
    with pytest.raises(UnsupportedModelError) as info:
        Predictor.load(folder, cpu_options())
    assert info.value.path == str(folder / "model.onnx")
    assert str(folder / "model.onnx") in str(info.value)
    assert "re-export" in str(info.value).lower()


# The Docker 2.2 export (model.tflite) loads: tests/golden/test_golden_tflite.py.


def test_tensorflow_graph_is_refused_with_advice(shared_models: Path) -> None:
    # A TF-era container's app/ folder: model.pb and labels.txt, no manifest.
    folder = shared_models / "tf-classification-apple-banana"
    with pytest.raises(UnsupportedModelError) as info:
        load_spec(folder)
    assert info.value.path == str(folder / "model.pb")
    assert "needs TensorFlow" in str(info.value)
    assert "as ONNX" in str(info.value) and "2.2" in str(info.value)


# ------------------------------------------------------------------------------------------ metadata-only

C, D = Task.CLASSIFICATION, Task.DETECTION
COMPACT, S1, ONNX12 = "General (compact)", "General (compact) [S1]", "General (compact), ONNX 1.2 (2018)"
SHORTER, SIDECAR, STRETCH, ALIGN32 = (
    Resize.SHORTER_SIDE_TO_INPUT,
    Resize.SHORTER_SIDE_THEN_CROP,
    Resize.STRETCH,
    Resize.PIXEL_COUNT_ALIGN32,
)

# Written from each folder's files and metadata-only/PROVENANCE.md.
METADATA_ONLY = {
    "onnx-cls-compact-2026-classroom": (
        C,
        Postprocess.MULTICLASS,
        SHORTER,
        (256, 256),
        (224, 224),
        COMPACT,
        None,
        ("jeniter", "student"),
    ),
    "onnx-cls-compact-multilabel-2021-letters": (
        C,
        Postprocess.MULTILABEL,
        SHORTER,
        (256, 256),
        (224, 224),
        COMPACT,
        None,
        ("Letra A", "Letra E", "Letra i", "Letra O", "Letra U"),
    ),
    "onnx-cls-s1-2025-bills": (
        C,
        Postprocess.MULTICLASS,
        STRETCH,
        (300, 300),
        None,
        S1,
        None,
        ("electricity_bill", "non_bill"),
    ),
    "onnx-cls-s1-2025-firesmoke": (
        C,
        Postprocess.MULTICLASS,
        STRETCH,
        (300, 300),
        None,
        S1,
        None,
        ("fire", "Neutral", "Smoke"),
    ),
    "onnx-od-2019-car-trafficlight": (
        D,
        Postprocess.YOLO,
        ALIGN32,
        (512, 512),
        None,
        COMPACT,
        None,
        ("Car", "TrafficLight"),
    ),
    "onnx-od-compact-yolo-2021-cat": (
        D,
        Postprocess.YOLO,
        ALIGN32,
        (512, 512),
        None,
        COMPACT,
        None,
        ("cat",),
    ),
    "onnx-od-compact-yolo-2024-bloodcells": (
        D,
        Postprocess.YOLO,
        ALIGN32,
        (512, 512),
        None,
        COMPACT,
        None,
        (
            "Basophil",
            "Blast",
            "Eosinophil",
            "Immature Granulocyte",
            "Lymphocyte",
            "Monocyte",
            "Neutrophil",
            "NRBC",
        ),
    ),
    "onnx-od-s1-ssd-2021-fish": (D, Postprocess.SSD, STRETCH, (320, 320), None, S1, None, ("Ikan",)),
    "onnx12-cls-2019-chair-table": (
        C,
        Postprocess.ZIPMAP,
        SIDECAR,
        (256, 256),
        None,
        ONNX12,
        "ONNX12",
        ("Chair", "Table"),
    ),
}


def test_metadata_only_table_covers_every_folder(shared_models: Path) -> None:
    folders = {p.name for p in (shared_models / "metadata-only").iterdir() if p.is_dir()}
    assert folders == set(METADATA_ONLY)


@pytest.mark.parametrize(
    ("name", "task", "postprocess", "resize", "target", "crop", "domain", "flavor", "labels"),
    [(name, *values) for name, values in METADATA_ONLY.items()],
    ids=list(METADATA_ONLY),
)
def test_metadata_only_folders(
    shared_models: Path,
    name: str,
    task: Task,
    postprocess: Postprocess,
    resize: Resize,
    target: tuple[int, int],
    crop: tuple[int, int] | None,
    domain: str,
    flavor: str | None,
    labels: tuple[str, ...],
) -> None:
    desc = describe_export(shared_models / "metadata-only" / name)
    assert desc.task is task
    assert desc.postprocess is postprocess
    assert desc.resize is resize
    assert desc.resize_target == target
    assert desc.crop == crop
    assert desc.domain == domain
    assert desc.labels == labels
    assert desc.manifest is not None and desc.manifest.platform == "ONNX"
    assert desc.manifest.flavor == flavor


# Real sidecars + a synthetic model of the right shape in place of the binary we could not obtain.
# (verify_sha1 off: the manifests' ModelFileSHA1 is the real model's.)
def _stand_in(name: str, labels: int) -> object:
    if name.startswith("onnx-od-s1"):
        return synthetic.ssd_model([[0.1, 0.1, 0.5, 0.5]], [0.9], [0])
    if name.startswith("onnx-od"):
        return synthetic.yolo_model(labels, metadata=None)
    size = 300 if "s1" in name else 224
    return synthetic.classifier_model(
        labels, size=size, activation="sigmoid" if "multilabel" in name else "softmax"
    )


@pytest.mark.parametrize(
    ("name", "resize", "target", "bgr", "scale", "anchors", "iou"),
    [
        ("onnx-od-compact-yolo-2021-cat", ALIGN32, (512, 512), True, 1.0, "biases", 0.45),
        ("onnx-od-2019-car-trafficlight", ALIGN32, (512, 512), True, 1.0, "default", 0.45),
        ("onnx-od-s1-ssd-2021-fish", STRETCH, (320, 320), False, 1.0, "none", 0.45),
        ("onnx-cls-s1-2025-firesmoke", STRETCH, (300, 300), False, 1 / 255, None, None),
        ("onnx-cls-compact-multilabel-2021-letters", SHORTER, (224, 224), False, 1 / 255, None, None),
    ],
)
def test_metadata_only_sidecars_drive_the_loader(
    tmp_path: Path,
    shared_models: Path,
    name: str,
    resize: Resize,
    target: tuple[int, int],
    bgr: bool,
    scale: float,
    anchors: str | None,
    iou: float | None,
) -> None:
    folder = shutil.copytree(shared_models / "metadata-only" / name, tmp_path / name)
    labels = (folder / "labels.txt").read_text().split("\n")
    count = len([label for label in labels if label.strip()])
    (folder / "model.onnx").write_bytes(_stand_in(name, count).SerializeToString())  # type: ignore[attr-defined]
    spec = load_spec(folder, LoadOptions(verify_sha1=False))
    assert spec.preprocess.resize is resize
    assert spec.preprocess.resize_target == target
    assert spec.preprocess.bgr is bgr and spec.preprocess.scale == pytest.approx(scale)
    if anchors == "biases":
        sidecar = json.loads((folder / "metadata_properties.json").read_text())
        values = json.loads(sidecar["CustomVision.Postprocess.Yolo.Biases"])
        assert spec.detection.anchors == tuple(zip(values[0::2], values[1::2], strict=True))
    elif anchors == "default":
        assert spec.detection.anchors == DEFAULT_YOLO_ANCHORS
    elif anchors == "none":
        assert spec.detection.anchors == ()
    if iou is not None:
        assert spec.detection.iou_threshold == iou
    # And the export runs end to end with its real sidecar.
    predictor = Predictor.load(folder, cpu_options(verify_sha1=False))
    result = predictor.predict_bytes((shared_models / "onnx12-cat-or-dog" / "test-dog.jpg").read_bytes())
    assert result.task is spec.task
    if spec.task is Task.CLASSIFICATION:
        assert [p.tag_name for p in result.predictions] == list(spec.labels)
