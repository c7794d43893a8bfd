"""Broken exports and broken images: each must be one clear error of ours that names the file."""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import onnx
import pytest
import synthetic
from PIL import Image
from synthetic import CLASSIFIER_LABELS, cpu_options, encode, pattern_image

from edge_runtime.engine import Predictor
from edge_runtime.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    ModelIntegrityError,
    ModelLoadError,
    UnsupportedModelError,
)
from edge_runtime.model.export import sha1_of
from edge_runtime.model.imaging import ImageLimits, decode_image
from edge_runtime.model.loader import LoadOptions, load_spec


def copy_export(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return target


# ------------------------------------------------------------------------------------------ zips


def test_random_bytes_named_zip(tmp_path: Path) -> None:
    archive = tmp_path / "x.zip"
    archive.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError, match="corrupt zip") as info:
        load_spec(archive, LoadOptions(extract_dir=tmp_path))
    assert info.value.path == str(archive)
    assert "x.zip" in str(info.value)


def test_truncated_zip(tmp_path: Path, classifier_export: Path) -> None:
    good = zip_folder(classifier_export, tmp_path / "good.zip")
    archive = tmp_path / "truncated.zip"
    archive.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as info:
        Predictor.load(archive, cpu_options(extract_dir=tmp_path))
    assert info.value.path == str(archive)
    assert "zip" in info.value.problem


def test_zip_with_a_bad_crc(tmp_path: Path, classifier_export: Path) -> None:
    archive = tmp_path / "stored.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(classifier_export.iterdir()):
            zf.write(path, path.name)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("model.onnx")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF  # same length, wrong CRC
    archive.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="CRC") as err:
        load_spec(archive, LoadOptions(extract_dir=tmp_path))
    assert err.value.path == str(archive)


def test_zip_with_a_corrupt_deflate_stream(tmp_path: Path, classifier_export: Path) -> None:
    good = zip_folder(classifier_export, tmp_path / "good.zip")
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("labels.txt")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start] = 0xFF  # first deflate block header: BTYPE 11 is invalid
    archive = tmp_path / "corrupt.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="corrupt") as err:
        load_spec(archive, LoadOptions(extract_dir=tmp_path))
    assert err.value.path == str(archive)


# ------------------------------------------------------------------------------------------ labels


def test_labels_named_by_manifest_missing(tmp_path: Path, classifier_export: Path) -> None:
    root = copy_export(classifier_export, tmp_path / "export")
    (root / "labels.txt").unlink()
    with pytest.raises(ModelLoadError) as info:
        Predictor.load(root, cpu_options())
    assert info.value.path == str(root / "labels.txt")
    assert "missing" in info.value.problem


def test_labels_missing_without_manifest(tmp_path: Path, classifier_export: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    shutil.copy(classifier_export / "model.onnx", root / "model.onnx")
    with pytest.raises(ModelLoadError, match="labels") as info:
        load_spec(root)
    assert info.value.path == str(root / "labels.txt")


def test_label_count_differs_from_classifier_output(tmp_path: Path) -> None:
    root = synthetic.write_export(tmp_path / "e", synthetic.classifier_model(3), ("only", "two"))
    with pytest.raises(ModelLoadError, match="2 labels but the model output 'model_output' has 3") as info:
        load_spec(root)
    assert info.value.path == str(root / "labels.txt")


def test_label_count_differs_from_yolo_channels(tmp_path: Path) -> None:
    root = synthetic.write_export(
        tmp_path / "e", synthetic.yolo_model(2), ("a", "b", "c"), domain_type="ObjectDetection"
    )
    with pytest.raises(ModelLoadError, match=r"3 labels but the YOLO output .* 35 channels .* = 40") as info:
        load_spec(root)
    assert info.value.path == str(root / "labels.txt")


def test_label_count_with_a_dynamic_output_is_caught_at_warm_up(tmp_path: Path) -> None:
    root = synthetic.write_export(
        tmp_path / "e", synthetic.classifier_model(3, static_classes=False), ("only", "two")
    )
    assert load_spec(root).outputs[0].shape == (None, None)  # nothing to check statically
    with pytest.raises(ModelLoadError, match="3 scores for 2 labels") as info:
        Predictor.load(root, cpu_options())
    assert info.value.path == str(root / "model.onnx")


# ------------------------------------------------------------------------------------------ model files


@pytest.mark.parametrize("how", ["manifest removed", "verify_sha1 off"])
def test_truncated_model(tmp_path: Path, classifier_export: Path, how: str) -> None:
    root = copy_export(classifier_export, tmp_path / "export")
    model = root / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    if how == "manifest removed":
        (root / "cvexport.manifest").unlink()
    options = LoadOptions(verify_sha1=how != "verify_sha1 off")
    with pytest.raises(ModelLoadError, match="truncated or corrupt") as info:
        load_spec(root, options)
    assert type(info.value) is ModelLoadError
    assert info.value.path == str(model)


@pytest.mark.shared
def test_truncated_real_model(tmp_path: Path, meter_dir: Path) -> None:
    root = tmp_path / "meter"
    root.mkdir()
    data = (meter_dir / "model.onnx").read_bytes()
    (root / "model.onnx").write_bytes(data[: len(data) // 2])
    shutil.copy(meter_dir / "labels.txt", root / "labels.txt")
    with pytest.raises(ModelLoadError, match="truncated or corrupt") as info:
        load_spec(root)
    assert info.value.path == str(root / "model.onnx")


def test_model_that_is_not_onnx(tmp_path: Path) -> None:
    root = synthetic.write_export(tmp_path / "e", b"\x00garbage\xff" * 50, ("a",))
    with pytest.raises(ModelLoadError) as info:
        Predictor.load(root, cpu_options())
    assert info.value.path == str(root / "model.onnx")


def test_empty_model_file(tmp_path: Path) -> None:
    root = synthetic.write_export(tmp_path / "e", b"", ("a",), manifest=False)
    with pytest.raises(ModelLoadError, match="empty") as info:
        load_spec(root)
    assert info.value.path == str(root / "model.onnx")


def test_model_named_by_manifest_missing(tmp_path: Path, classifier_export: Path) -> None:
    root = copy_export(classifier_export, tmp_path / "export")
    (root / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="ModelFileName") as info:
        load_spec(root)
    assert info.value.path == str(root / "model.onnx")


def _resaved(root: Path) -> tuple[str, str]:
    """Re-save model.onnx with the same graph and weights but a new doc_string: new bytes, same model."""
    path = root / "model.onnx"
    before = sha1_of(path)
    model = onnx.load(str(path))
    model.doc_string = "re-saved by a tool"
    onnx.save(model, str(path))
    return before, sha1_of(path)


def test_modified_model_fails_the_sha1_check(tmp_path: Path, classifier_export: Path) -> None:
    root = copy_export(classifier_export, tmp_path / "export")
    expected, actual = _resaved(root)
    assert expected != actual
    with pytest.raises(ModelIntegrityError) as info:
        Predictor.load(root, cpu_options())
    assert info.value.path == str(root / "model.onnx")
    assert expected in str(info.value) and actual in str(info.value)
    assert "verify_sha1" in str(info.value)


def test_verify_sha1_off_loads_a_resaved_model(tmp_path: Path, classifier_export: Path, jpeg_of) -> None:  # type: ignore[no-untyped-def]
    root = copy_export(classifier_export, tmp_path / "export")
    _, actual = _resaved(root)
    changed = Predictor.load(root, cpu_options(verify_sha1=False))
    assert changed.spec.sha1 == actual
    original = Predictor.load(classifier_export, cpu_options())
    data = jpeg_of(100, 80, 5)
    assert changed.predict_bytes(data).predictions == original.predict_bytes(data).predictions


def test_sha1_mismatch_with_truncated_model_is_an_integrity_error(
    tmp_path: Path, classifier_export: Path
) -> None:
    root = copy_export(classifier_export, tmp_path / "export")
    model = root / "model.onnx"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(ModelIntegrityError):
        load_spec(root)


def test_unsupported_new_opset(tmp_path: Path) -> None:
    model = synthetic.classifier_model(3)
    model.opset_import[0].version = 99
    root = synthetic.write_export(tmp_path / "e", model, CLASSIFIER_LABELS)
    with pytest.raises(UnsupportedModelError, match="opset 99") as info:
        Predictor.load(root, cpu_options())
    assert info.value.path == str(root / "model.onnx")


def test_unsupported_legacy_opset(tmp_path: Path) -> None:
    # Opset < 7 is the 2018 "ONNX 1.0" generation: refuse with the re-export advice.
    model = synthetic.make_model(
        [onnx.helper.make_node("Relu", ["data"], ["model_output"])],
        [onnx.helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("model_output", onnx.TensorProto.FLOAT, [1, 3])],
        opset=5,
        check=False,
    )
    root = synthetic.write_export(tmp_path / "e", model, ("a", "b", "c"), manifest=False)
    with pytest.raises(UnsupportedModelError, match=r"(?i)re-export") as info:
        load_spec(root)
    assert info.value.path == str(root / "model.onnx")


# ------------------------------------------------------------------------------------------ images


@pytest.fixture(scope="module")
def predictor(classifier_export: Path) -> Predictor:
    return Predictor.load(classifier_export, cpu_options(limits=ImageLimits(max_pixels=1_000_000)))


def test_not_an_image(predictor: Predictor) -> None:
    with pytest.raises(ImageDecodeError, match="not a recognised image format"):
        predictor.predict_bytes(b"not an image")


def test_empty_image(predictor: Predictor) -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        predictor.predict_bytes(b"")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg(predictor: Predictor, keep: float) -> None:
    data = encode(pattern_image(200, 150, seed=3), "JPEG", quality=90)
    with pytest.raises(ImageDecodeError, match="broken or truncated"):
        predictor.predict_bytes(data[: int(len(data) * keep)])


def test_jpeg_header_only(predictor: Predictor) -> None:
    data = encode(pattern_image(200, 150, seed=3), "JPEG")
    with pytest.raises(ImageDecodeError):
        predictor.predict_bytes(data[:20])


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height; the pixel data is a token (never decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_huge_dimensions_are_refused_before_decoding(predictor: Predictor) -> None:
    data = png_header(100_000, 100_000)
    assert len(data) < 200
    with pytest.raises(ImageTooLargeError, match="100000x100000"):
        predictor.predict_bytes(data)


def test_default_limit_refuses_a_decompression_bomb_header() -> None:
    with pytest.raises(ImageTooLargeError):
        decode_image(png_header(60_000, 60_000))


def test_limit_from_predictor_options(predictor: Predictor) -> None:
    data = encode(Image.new("RGB", (1001, 1000)), "PNG")
    with pytest.raises(ImageTooLargeError, match="1001000 pixels, more than the limit of 1000000"):
        predictor.predict_bytes(data)
    assert predictor.predict_bytes(encode(Image.new("RGB", (1000, 1000)), "PNG")).image_size == (1000, 1000)
