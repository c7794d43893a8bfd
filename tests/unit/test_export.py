"""Reading the export's own files (manifest, labels, sidecar) and opening folders / zips."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import synthetic

from edge_runtime.domain import Task
from edge_runtime.errors import ModelLoadError, UnsupportedModelError
from edge_runtime.model.export import (
    describe_export,
    open_export,
    read_labels,
    read_manifest,
    sha1_of,
    sidecar_number,
)
from edge_runtime.model.loader import LoadOptions, load_spec
from edge_runtime.model.spec import Postprocess, Resize


def export_files(
    folder: Path,
    *,
    domain_type: str = "Classification",
    sidecar: dict[str, str] | None = None,
    flavor: str | None = None,
    platform: str = "ONNX",
    labels: tuple[str, ...] = ("x", "y"),
) -> Path:
    """An export without its model binary (like the metadata-only fixtures)."""
    return synthetic.write_export(
        folder, None, labels, domain_type=domain_type, metadata=sidecar, flavor=flavor, platform=platform
    )


DESCRIBE = {
    "compact yolo": (
        dict(domain_type="ObjectDetection", sidecar=synthetic.yolo_sidecar()),
        Task.DETECTION,
        Postprocess.YOLO,
        Resize.PIXEL_COUNT_ALIGN32,
        (512, 512),
        None,
        "General (compact)",
    ),
    "od without sidecar (2019)": (
        dict(domain_type="ObjectDetection"),
        Task.DETECTION,
        Postprocess.YOLO,
        Resize.PIXEL_COUNT_ALIGN32,
        (512, 512),
        None,
        "General (compact)",
    ),
    "[S1] ssd": (
        dict(domain_type="ObjectDetection", sidecar=synthetic.sidecar("SSD", "Stretch", 320)),
        Task.DETECTION,
        Postprocess.SSD,
        Resize.STRETCH,
        (320, 320),
        None,
        "General (compact) [S1]",
    ),
    "od stretch without method": (
        dict(domain_type="ObjectDetection", sidecar=synthetic.sidecar("", "Stretch", 320)),
        Task.DETECTION,
        Postprocess.SSD,
        Resize.STRETCH,
        (320, 320),
        None,
        "General (compact) [S1]",
    ),
    "yolo method, classification manifest": (
        dict(sidecar=synthetic.yolo_sidecar()),
        Task.DETECTION,
        Postprocess.YOLO,
        Resize.PIXEL_COUNT_ALIGN32,
        (512, 512),
        None,
        "General (compact)",
    ),
    "compact multiclass": (
        dict(sidecar=synthetic.classification_sidecar()),
        Task.CLASSIFICATION,
        Postprocess.MULTICLASS,
        Resize.SHORTER_SIDE_TO_INPUT,
        (256, 256),
        (224, 224),
        "General (compact)",
    ),
    "compact multilabel": (
        dict(sidecar=synthetic.classification_sidecar("ClassificationMultiLabel")),
        Task.CLASSIFICATION,
        Postprocess.MULTILABEL,
        Resize.SHORTER_SIDE_TO_INPUT,
        (256, 256),
        (224, 224),
        "General (compact)",
    ),
    "[S1] classification": (
        dict(
            sidecar=synthetic.sidecar(
                "ClassificationMultiClass", "Stretch", 300, crop_method="FullImageShorterSide"
            )
        ),
        Task.CLASSIFICATION,
        Postprocess.MULTICLASS,
        Resize.STRETCH,
        (300, 300),
        None,
        "General (compact) [S1]",
    ),
    "onnx12 flavour": (
        dict(flavor="ONNX12"),
        Task.CLASSIFICATION,
        Postprocess.ZIPMAP,
        Resize.SHORTER_SIDE_THEN_CROP,
        (256, 256),
        None,
        "General (compact), ONNX 1.2 (2018)",
    ),
    "onnx12 flavour, lower case": (
        dict(flavor="onnx12"),
        Task.CLASSIFICATION,
        Postprocess.ZIPMAP,
        Resize.SHORTER_SIDE_THEN_CROP,
        (256, 256),
        None,
        "General (compact), ONNX 1.2 (2018)",
    ),
    "no sidecar classification": (
        dict(),
        Task.CLASSIFICATION,
        Postprocess.MULTICLASS,
        Resize.SHORTER_SIDE_TO_INPUT,
        (256, 256),
        None,
        "General (compact)",
    ),
}


@pytest.mark.parametrize(
    ("files", "task", "postprocess", "resize", "target", "crop", "domain"),
    DESCRIBE.values(),
    ids=DESCRIBE.keys(),
)
def test_describe_export_without_a_model_file(
    tmp_path: Path,
    files: dict[str, object],
    task: Task,
    postprocess: Postprocess,
    resize: Resize,
    target: tuple[int, int],
    crop: tuple[int, int] | None,
    domain: str,
) -> None:
    root = export_files(tmp_path / "export", **files)  # type: ignore[arg-type]
    assert not (root / "model.onnx").exists()
    desc = describe_export(root)
    assert desc.task is task
    assert desc.postprocess is postprocess
    assert desc.resize is resize
    assert desc.resize_target == target
    assert desc.crop == crop
    assert desc.domain == domain
    assert desc.labels == ("x", "y")


@pytest.mark.parametrize("platform", ["TensorFlow", "CoreML", "VAIDK", "tensorflow"])
def test_unsupported_platforms_are_rejected_with_advice(tmp_path: Path, platform: str) -> None:
    root = export_files(tmp_path / "export", platform=platform)
    with pytest.raises(UnsupportedModelError) as info:
        describe_export(root)
    assert info.value.path == str(root / "cvexport.manifest")
    assert "re-export" in str(info.value).lower()


@pytest.mark.parametrize("flavor", ["ONNX10", "onnx10"])
def test_onnx10_flavour_is_rejected(tmp_path: Path, flavor: str) -> None:
    root = export_files(tmp_path / "export", flavor=flavor)
    with pytest.raises(UnsupportedModelError, match=r"(?i)re-export"):
        describe_export(root)


def test_manifest_fields(tmp_path: Path) -> None:
    root = export_files(tmp_path / "export", sidecar=synthetic.classification_sidecar())
    manifest = read_manifest(root)
    assert manifest is not None
    assert manifest.platform == "ONNX" and manifest.domain_type == "Classification"
    assert manifest.metadata_file == "metadata_properties.json"
    assert manifest.flavor is None and manifest.flavor_key == ""
    assert read_manifest(tmp_path) is None


def test_labels_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_bytes("\ufeffcat\r\n\r\n dog \r\nNegative\r\n\r\n".encode())
    assert read_labels(tmp_path, None) == ("cat", "dog", "Negative")


def test_empty_labels_file(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("\n\n")
    with pytest.raises(ModelLoadError) as info:
        read_labels(tmp_path, None)
    assert info.value.path.endswith("labels.txt")


def test_labels_named_by_manifest_but_missing(tmp_path: Path) -> None:
    root = export_files(tmp_path / "export")
    (root / "labels.txt").unlink()
    with pytest.raises(ModelLoadError, match=r"labels\.txt"):
        describe_export(root)


def test_sidecar_named_by_manifest_but_missing(tmp_path: Path) -> None:
    root = export_files(tmp_path / "export", sidecar=synthetic.classification_sidecar())
    (root / "metadata_properties.json").unlink()
    with pytest.raises(ModelLoadError, match=r"metadata_properties\.json"):
        describe_export(root)


@pytest.mark.parametrize(("text", "problem"), [("{not json", "not valid JSON"), ("[1, 2]", "JSON object")])
def test_broken_manifest_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    root = export_files(tmp_path / "export")
    (root / "cvexport.manifest").write_text(text)
    with pytest.raises(ModelLoadError, match=problem) as info:
        describe_export(root)
    assert info.value.path == str(root / "cvexport.manifest")


def test_sidecar_numbers_parse_leniently(tmp_path: Path) -> None:
    assert sidecar_number("224") == 224.0 and sidecar_number("224.0") == 224.0
    assert (
        sidecar_number("") == 0.0 and sidecar_number(None, 5.0) == 5.0 and sidecar_number("n/a", 1.0) == 1.0
    )
    sidecar = synthetic.classification_sidecar("ClassificationMultiLabel")
    sidecar.update({k: f"{v}.0" for k, v in sidecar.items() if k.endswith(("Width", "Height"))})
    desc = describe_export(export_files(tmp_path / "export", sidecar=sidecar))
    assert desc.resize_target == (256, 256) and desc.crop == (224, 224)


def test_bom_in_manifest_is_accepted(tmp_path: Path) -> None:
    root = export_files(tmp_path / "export", domain_type="ObjectDetection")
    text = (root / "cvexport.manifest").read_text()
    (root / "cvexport.manifest").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert describe_export(root).task is Task.DETECTION


# ------------------------------------------------------------------------------------------ open_export


def test_open_export_finds_a_nested_folder(tmp_path: Path) -> None:
    export_files(tmp_path / "outer" / "inner")
    assert open_export(tmp_path / "outer") == tmp_path / "outer" / "inner"


def test_open_export_refuses_two_exports(tmp_path: Path) -> None:
    export_files(tmp_path / "outer" / "a")
    export_files(tmp_path / "outer" / "b")
    with pytest.raises(ModelLoadError, match="several exports"):
        open_export(tmp_path / "outer")


def test_open_export_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        open_export(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no cvexport\.manifest"):
        open_export(tmp_path / "empty")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="export folder"):
        open_export(tmp_path / "model.onnx")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match=r"not a folder or a \.zip"):
        open_export(tmp_path / "notes.txt")


def zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return target


@pytest.mark.parametrize("prefix", ["", "CustomVisionExport/"])
def test_open_export_extracts_zips(tmp_path: Path, prefix: str) -> None:
    source = export_files(tmp_path / "src", domain_type="ObjectDetection")
    archive = zip_folder(source, tmp_path / "export.zip", prefix)
    work = tmp_path / "work"
    work.mkdir()
    root = open_export(archive, work)
    assert root.is_relative_to(work)
    assert (root / "cvexport.manifest").read_text() == (source / "cvexport.manifest").read_text()
    assert describe_export(root).task is Task.DETECTION


def test_zip_without_zip_suffix_is_recognised(tmp_path: Path) -> None:
    source = export_files(tmp_path / "src")
    archive = zip_folder(source, tmp_path / "export.bin")
    assert (open_export(archive, tmp_path) / "labels.txt").is_file()


def test_zip_entry_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cvexport.manifest", "{}")
        zf.writestr("../../escaped.txt", "boo")
    with pytest.raises(ModelLoadError, match="escapes") as info:
        open_export(archive, tmp_path)
    assert info.value.path == str(archive)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_load_spec_from_zip_with_extract_dir(tmp_path: Path) -> None:
    source = synthetic.write_export(
        tmp_path / "src",
        synthetic.classifier_model(2),
        ("p", "q"),
        metadata=synthetic.classification_sidecar(),
    )
    archive = zip_folder(source, tmp_path / "export.zip")
    extract = tmp_path / "extract"
    extract.mkdir()
    spec = load_spec(archive, LoadOptions(extract_dir=extract))
    assert spec.root.is_relative_to(extract)
    assert spec.labels == ("p", "q")
    assert spec.sha1 == sha1_of(source / "model.onnx")
    assert spec.iteration_id == json.loads((source / "cvexport.manifest").read_text())["IterationId"]
    assert spec.model_id == spec.iteration_id
