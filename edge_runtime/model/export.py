"""Read a Custom Vision export (folder or .zip): manifest, labels, metadata sidecar.

This module knows the *files*; `loader.py` combines them with what the model file itself says.
`describe_export` works without the model binary, so sidecar-only folders can be checked too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.domain import Task
from edge_runtime.errors import ModelLoadError, UnsupportedModelError
from edge_runtime.model.formats import FORMATS, model_file_names
from edge_runtime.model.modelfile import ONNX10_ADVICE
from edge_runtime.model.spec import Postprocess, Resize

log = logging.getLogger(__name__)

MANIFEST = "cvexport.manifest"
SIDECAR = "metadata_properties.json"
LABELS = "labels.txt"
MODEL_CANDIDATES = model_file_names()  # from the format table: "model.onnx", "model.xml", "model.tflite"
TENSORFLOW_GRAPH = "model.pb"  # Docker exports before ExporterVersion 2.2, TensorFlow exports
TENSORFLOW_ADVICE = (
    "a TensorFlow frozen graph: running it needs TensorFlow, which edge_runtime does not use. Re-export "
    "the iteration from Custom Vision as ONNX, or as a Docker export of ExporterVersion 2.2 or later "
    "(its app/model.tflite runs here)"
)
MAX_ZIP_BYTES = 2 * 1024**3  # refuse zip bombs: total uncompressed size


@dataclass(frozen=True, slots=True)
class Manifest:
    domain_type: str | None  # "Classification" | "ObjectDetection"
    platform: str | None  # "ONNX" | "OpenVino" | "TensorFlow" | "DockerFile" | ...
    flavor: str | None  # as written; compare case-insensitively
    exporter_version: str | None
    exported_date: str
    iteration_id: str
    model_file: str | None
    label_file: str | None
    metadata_file: str | None
    model_sha1: str | None

    @property
    def flavor_key(self) -> str:
        return (self.flavor or "").lower()


@dataclass(frozen=True, slots=True)
class ExportDescription:
    """What the export's own files say, before the model file is opened."""

    root: Path
    manifest: Manifest | None
    labels: tuple[str, ...] | None  # None: no labels.txt (2018 ONNX 1.2 embeds them)
    sidecar: dict[str, str] = field(default_factory=dict)
    task: Task = Task.CLASSIFICATION
    postprocess: Postprocess = Postprocess.MULTICLASS
    domain: str = "General (compact)"
    resize: Resize = Resize.SHORTER_SIDE_TO_INPUT
    # Recipe sizes (w, h) from the sidecar: resize target (256, 300, 320, 512) and crop (224) when given.
    resize_target: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None


def open_export(path: Path, workdir: Path | None = None) -> Path:
    """Return the folder holding the export; a .zip is extracted (safely) into a new folder in `workdir`
    (kept: the caller owns it) or in a temp dir (see export_folder for one that is removed)."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return _find_root(path)
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelLoadError(path, f"cannot create the extraction folder {workdir}: {exc}") from exc
    target = Path(tempfile.mkdtemp(prefix="edge-runtime-export-", dir=workdir))
    return _find_root(_extract_zip(path, target))


@contextmanager
def export_folder(path: Path, workdir: Path | None = None) -> Iterator[Path]:
    """The folder holding the export, for the duration of a load. A .zip is extracted into a temp folder
    (inside `workdir` when given: a device's /tmp may be small) removed when the block ends (the backends
    hold the model in memory), and errors name the zip and the entry in it, never the temp folder."""
    path = Path(path)
    if not _is_zip(path):
        yield open_export(path)
        return
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelLoadError(path, f"cannot create the extraction folder {workdir}: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="edge-runtime-export-", dir=workdir) as temp:
        try:
            yield _find_root(_extract_zip(path, Path(temp)))
        except ModelLoadError as exc:
            inner = Path(exc.path)
            if not inner.is_relative_to(temp):
                raise
            entry = inner.relative_to(temp).as_posix()
            raise type(exc)(f"{path}" if entry == "." else f"{path}:{entry}", exc.problem) from exc


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(path, "no such file or folder")
    if path.is_dir() or _is_zip(path):
        return
    if any(path.suffix.lower() in row.suffixes for row in FORMATS.values()):
        raise ModelLoadError(path, "give the export folder (or .zip) holding this model file, not the file")
    raise ModelLoadError(path, "not a folder or a .zip Custom Vision export")


def _is_zip(path: Path) -> bool:
    return path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))


def _extract_zip(path: Path, target: Path) -> Path:
    _check_exists(path)
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
            if total > MAX_ZIP_BYTES:
                raise ModelLoadError(path, f"zip expands to {total} bytes, more than {MAX_ZIP_BYTES}")
            for info in zf.infolist():
                dest = (target / info.filename).resolve()
                if not dest.is_relative_to(target.resolve()):
                    raise ModelLoadError(path, f"zip entry {info.filename!r} escapes the export folder")
            bad = zf.testzip()
            if bad is not None:
                raise ModelLoadError(path, f"corrupt zip: entry {bad!r} fails its CRC check")
            zf.extractall(target)
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise ModelLoadError(path, f"corrupt zip: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise ModelLoadError(path, f"cannot read zip: {exc}") from exc
    return target


def _find_root(folder: Path) -> Path:
    """The folder with the manifest or a model file; exports are sometimes zipped inside a folder."""
    for name in (MANIFEST, *MODEL_CANDIDATES):
        if (folder / name).is_file():
            return folder
    hits = sorted({p.parent for name in (MANIFEST, *MODEL_CANDIDATES) for p in folder.rglob(name)})
    if len(hits) == 1:
        return hits[0]
    graphs = sorted(folder.rglob(TENSORFLOW_GRAPH))
    if not hits and len(graphs) == 1:  # a TF-era container's app/ folder, without a manifest
        raise UnsupportedModelError(graphs[0], TENSORFLOW_ADVICE)
    if not hits:
        raise ModelLoadError(folder, f"no {either(MANIFEST, *MODEL_CANDIDATES)} found; {_contents(folder)}")
    found = ", ".join(h.relative_to(folder).as_posix() or "." for h in hits)
    raise ModelLoadError(folder, f"several exports found: {found}")


def either(*names: str) -> str:
    """'a, b or c', for messages that list what was looked for."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _contents(folder: Path, most: int = 12) -> str:
    """What a folder (or an extracted zip) holds instead: the first few paths, so a wrong zip is obvious."""
    entries = sorted(p.relative_to(folder).as_posix() + "/" * p.is_dir() for p in folder.rglob("*"))
    if not entries:
        return "it is empty"
    shown = ", ".join(entries[:most])
    return f"it holds {shown}" + (f" and {len(entries) - most} more" if len(entries) > most else "")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(path, "expected a JSON object")
    return data


def read_manifest(root: Path) -> Manifest | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    raw = _read_json(path)

    def text(key: str) -> str | None:
        value = raw.get(key)
        return None if value is None else str(value)

    return Manifest(
        domain_type=text("DomainType"),
        platform=text("Platform"),
        flavor=text("Flavor"),
        exporter_version=text("ExporterVersion"),
        exported_date=text("ExportedDate") or "",
        iteration_id=text("IterationId") or "",
        model_file=text("ModelFileName"),
        label_file=text("LabelFileName"),
        metadata_file=text("MetadataPropsFileName"),
        model_sha1=text("ModelFileSHA1"),
    )


def read_sidecar(root: Path, manifest: Manifest | None) -> dict[str, str]:
    name = manifest.metadata_file if manifest and manifest.metadata_file else SIDECAR
    path = root / name
    if not path.is_file():
        if manifest and manifest.metadata_file:
            raise ModelLoadError(path, "named by the manifest's MetadataPropsFileName but missing")
        return {}
    return {str(k): str(v) for k, v in _read_json(path).items()}


def read_labels(root: Path, manifest: Manifest | None) -> tuple[str, ...] | None:
    name = manifest.label_file if manifest and manifest.label_file else LABELS
    path = root / name
    if not path.is_file():
        if manifest and manifest.label_file:
            raise ModelLoadError(path, "labels file named by the manifest is missing")
        return None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(path, f"cannot read labels: {exc}") from exc
    labels = tuple(line.strip() for line in lines if line.strip())
    if not labels:
        raise ModelLoadError(path, "labels file is empty")
    return labels


def sidecar_number(value: str | None, default: float = 0.0) -> float:
    """Sidecar numbers are strings, '224' or '224.0'."""
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        return default


def _size(sidecar: dict[str, str], prefix: str) -> tuple[int, int] | None:
    w = int(sidecar_number(sidecar.get(f"CustomVision.Preprocess.{prefix}Width")))
    h = int(sidecar_number(sidecar.get(f"CustomVision.Preprocess.{prefix}Height")))
    return (w, h) if w > 0 and h > 0 else None


UNSUPPORTED_PLATFORMS = {
    "tensorflow": "a TensorFlow export",
    "coreml": "a CoreML export",
    "vaidk": "a Vision AI Dev Kit export",
}


def describe_export(root: Path) -> ExportDescription:
    """Task, flavour and preprocessing recipe from the export's own files (no model binary needed)."""
    manifest = read_manifest(root)
    sidecar = read_sidecar(root, manifest)
    labels = read_labels(root, manifest)
    platform = (manifest.platform or "").lower() if manifest else ""
    if platform in UNSUPPORTED_PLATFORMS:
        raise UnsupportedModelError(
            root / MANIFEST,
            f"{UNSUPPORTED_PLATFORMS[platform]}; edge_runtime runs ONNX, OpenVINO and Docker (TFLite) "
            "exports: re-export the iteration from Custom Vision as ONNX",
        )
    docker = platform == "dockerfile"
    if docker and manifest is not None:  # 2.2 holds model.tflite; older ones a TensorFlow graph
        graph = root / (manifest.model_file or TENSORFLOW_GRAPH)
        unnamed = graph.is_file() and not any((root / name).is_file() for name in MODEL_CANDIDATES)
        if graph.suffix.lower() == ".pb" and (manifest.model_file or unnamed):
            raise UnsupportedModelError(graph, f"the Docker export's model is {TENSORFLOW_ADVICE}")
    flavor = manifest.flavor_key if manifest else ""
    if flavor == "onnx10":
        raise UnsupportedModelError(root / MANIFEST, ONNX10_ADVICE)

    method = sidecar.get("CustomVision.Postprocess.Method", "").lower()
    domain_type = (manifest.domain_type or "").lower() if manifest else ""
    is_detection = method in ("yolo", "ssd") or domain_type == "objectdetection"
    task = Task.DETECTION if is_detection else Task.CLASSIFICATION
    resize_method = sidecar.get("CustomVision.Preprocess.ResizeMethod", "").lower()
    target = _size(sidecar, "Target")
    crop = _size(sidecar, "Crop")

    def described(
        postprocess: Postprocess,
        domain: str,
        resize: Resize,
        resize_target: tuple[int, int],
        crop_size: tuple[int, int] | None = None,
    ) -> ExportDescription:
        return ExportDescription(
            root, manifest, labels, sidecar, task, postprocess, domain, resize, resize_target, crop_size
        )

    if task is Task.DETECTION:
        # No sidecar on 2019 exports: those were all YOLO-grid compact models.
        if method == "ssd" or (not method and resize_method == "stretch"):
            return described(Postprocess.SSD, "General (compact) [S1]", Resize.STRETCH, target or (320, 320))
        return described(
            Postprocess.YOLO, "General (compact)", Resize.PIXEL_COUNT_ALIGN32, target or (512, 512)
        )
    if flavor == "onnx12":
        # 2018 Windows ML export: labels in a ZipMap; verified recipe shorter side 256 -> centre crop.
        return described(
            Postprocess.ZIPMAP,
            "General (compact), ONNX 1.2 (2018)",
            Resize.SHORTER_SIDE_THEN_CROP,
            (256, 256),
        )
    postprocess = Postprocess.MULTILABEL if method == "classificationmultilabel" else Postprocess.MULTICLASS
    if resize_method == "stretch":
        # The 2.2 container's predict.py crops the shorter side in every domain, [S1] too (not run here).
        resize = Resize.SHORTER_SIDE_TO_INPUT if docker else Resize.STRETCH
        return described(postprocess, "General (compact) [S1]", resize, target or (300, 300))
    # Compact classification: the container's measured recipe by default (shorter side -> input size).
    return described(
        postprocess, "General (compact)", Resize.SHORTER_SIDE_TO_INPUT, target or (256, 256), crop
    )


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
