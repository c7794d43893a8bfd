"""Defects a review found in the hostile-input and configuration work, each pinned by a test."""

from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image
from synthetic import cpu_options

from edge_runtime.api.body import _Decoder, image_from_body
from edge_runtime.api.errors import ApiError
from edge_runtime.domain import BoundingBox
from edge_runtime.engine import Predictor
from edge_runtime.errors import ConfigError, ModelLoadError
from edge_runtime.events.snapshots import merge_overlapping
from edge_runtime.settings import build_settings, load_settings

IMAGE = b"\xff\xd8 an image \xff\xd9"


def multipart(disposition: str, boundary: str = "b") -> tuple[bytes, str]:
    body = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + IMAGE
    return body + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    "disposition", ["form-data; name*=utf-8''imageData; name*0=x", "form-data; name*1=a; name*=b"]
)
def test_rfc2231_continuations_the_parser_cannot_sort_are_a_400(disposition: str) -> None:
    with pytest.raises(ApiError) as info:
        image_from_body(*multipart(disposition))
    assert info.value.status == 400


@pytest.mark.parametrize("boundary", ["*****", "Boundary_#12345", "{curly}", "x" * 150])
def test_boundaries_clients_send_in_the_field_are_accepted(boundary: str) -> None:
    assert image_from_body(*multipart('form-data; name="imageData"', boundary)) == IMAGE


def test_a_huge_content_disposition_is_refused_before_parsing() -> None:
    with pytest.raises(ApiError) as info:
        image_from_body(*multipart('form-data; name="imageData"' + ";" * 8000))
    assert info.value.status == 400 and "longer than" in info.value.message


def test_gzip_with_trailing_data_is_refused() -> None:
    decoder = _Decoder("gzip")
    with pytest.raises(ApiError, match="after the end"):
        decoder.feed(gzip.compress(IMAGE) + b"junk", 1000)


def test_deflate_arriving_one_byte_at_a_time_decodes() -> None:
    decoder = _Decoder("deflate")
    out = b"".join(decoder.feed(bytes([byte]), 1000) for byte in zlib.compress(IMAGE))
    decoder.finish()
    assert out == IMAGE


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "cameras:\n  - &camera {id: a, url: synthetic://conveyor, fps: 2}\n  - {<<: *camera, id: b, fps: 4}\n"
    )
    settings = load_settings(config, env={})
    assert [(c.id, c.fps) for c in settings.cameras] == [("a", 2), ("b", 4)]


def test_a_null_beside_its_file_keeps_the_file_whatever_the_order(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-the-file\n")
    for mqtt in (
        {"password_file": str(secret), "password": None},
        {"password": None, "password_file": str(secret)},
    ):
        settings = build_settings({"sinks": {"mqtt": {"host": "broker", **mqtt}}})
        assert settings.sinks.mqtt is not None and settings.sinks.mqtt.password is not None
        assert settings.sinks.mqtt.password.get_secret_value() == "from-the-file"


def test_a_url_file_must_hold_a_url_and_its_line_is_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "not-a-url"
    secret.write_text("HostName=hub;SharedAccessKey=c2VjcmV0\n")
    with pytest.raises(ConfigError, match="is not a URL") as info:
        build_settings({"cameras": [{"id": "c", "url_file": str(secret)}]})
    assert "SharedAccessKey" not in str(info.value)


def test_boxes_merge_when_a_union_reaches_a_box_passed_over() -> None:
    a, b, c = (
        BoundingBox(0, 0.5, 0.13, 0.1),
        BoundingBox(0.15, 0, 0.3, 0.3),
        BoundingBox(0.4, 0.25, 0.3, 0.45),
    )
    assert len(merge_overlapping([a, b, c])) == len(merge_overlapping([b, c, a])) == 1


def test_a_zip_with_two_exports_names_them_inside_the_zip(classifier_export: Path, tmp_path: Path) -> None:
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for top in ("a", "b"):
            for path in classifier_export.iterdir():
                zf.write(path, f"{top}/{path.name}")
    with pytest.raises(ModelLoadError, match="several exports found: a, b") as info:
        Predictor.load(archive, cpu_options())
    assert "edge-runtime-export-" not in str(info.value)


def test_a_downloaded_zip_loads_again_without_leaving_copies(classifier_export: Path, tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in classifier_export.iterdir():
            zf.write(path, path.name)
    workdir = tmp_path / "models" / "sha"
    options = cpu_options(extract_dir=workdir)
    for _ in range(3):
        assert Predictor.load(archive, options).predict_image(Image.new("RGB", (40, 30))).predictions
    assert list(workdir.iterdir()) == []
