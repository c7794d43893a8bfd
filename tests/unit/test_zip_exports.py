"""A zipped export is extracted only while it loads: nothing is left behind, and every message names the
user's zip (and the entry in it), never a temp folder."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from synthetic import cpu_options

from edge_runtime.engine import Predictor
from edge_runtime.errors import ModelLoadError


def zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("edge-runtime-export-*")}


def test_a_zip_loads_and_leaves_no_folder_behind(classifier_export: Path, tmp_path: Path) -> None:
    archive = zip_folder(classifier_export, tmp_path / "line3.zip", prefix="export/")
    before = leftovers()
    for _ in range(3):
        predictor = Predictor.load(archive, cpu_options())
        assert predictor.spec.shown_path == archive
        assert predictor.predict_image(Image.new("RGB", (64, 48))).predictions
    assert leftovers() == before


def test_an_error_inside_a_zip_names_the_zip_and_the_entry(classifier_export: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in classifier_export.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "labels.txt").unlink()
    archive = zip_folder(broken, tmp_path / "line3.zip")
    before = leftovers()
    with pytest.raises(ModelLoadError) as info:
        Predictor.load(archive, cpu_options())
    assert str(info.value).startswith(f"{archive}:"), info.value
    assert "edge-runtime-export-" not in str(info.value)
    assert leftovers() == before


def test_a_zip_without_an_export_lists_what_it_holds(tmp_path: Path) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("holiday/beach.jpg", b"x")
        zf.writestr("notes.txt", b"y")
    with pytest.raises(ModelLoadError) as info:
        Predictor.load(archive, cpu_options())
    message = str(info.value)
    assert message.startswith(str(archive)) and "edge-runtime-export-" not in message
    assert "holiday/beach.jpg" in message and "notes.txt" in message
