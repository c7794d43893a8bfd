"""`edge-runtime compare --model OLD --model NEW PATHS...` end to end: real models predict real images.

Agreement where it must be (the meter export on onnxruntime vs OpenVINO; the meter's TFLite original vs
its ONNX conversion), disagreement where it must show (the demo detector vs a copy that sees glare
earlier; a classifier vs the same network with its labels.txt reversed), and the usage errors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import synthetic
from onnx import numpy_helper
from PIL import Image
from synthetic import CLASSIFIER_LABELS, cpu_options, encode, pattern_image

from edge_runtime.cli import main
from edge_runtime.demo.model import BELT_GREY, BRIGHT_ABOVE, DARK_BELOW, build_demo_export
from edge_runtime.engine import Predictor

METER_IMAGES = 6  # the test-*.jpg in the meter fixture folders
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture()
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """main(["--log-level", "WARNING", "compare", *args]) -> (exit code, stdout, stderr)."""

    def call(*args: str | Path) -> tuple[int, str, str]:
        code = main(["--log-level", "WARNING", "compare", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def report_of(run: Run, *args: str | Path) -> dict[str, Any]:
    code, out, err = run(*args, "--json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def label_dp(report: dict[str, Any]) -> dict[str, float]:
    return {row["label"]: row["max_abs_dp"] for row in report["labels"]}


# ----------------------------------------------------------------------------------- agreement: the meter


@pytest.mark.shared
def test_meter_on_onnxruntime_and_openvino_agree(meter_dir: Path, run: Run) -> None:
    args = ("--model", meter_dir, "--model", meter_dir, "--device", "cpu", "--device", "openvino:CPU")
    report = report_of(run, *args, meter_dir)
    assert report["old"]["device"] == "cpu" and report["new"]["device"] == "openvino:CPU"
    assert report["top1"] == {"agreed": METER_IMAGES, "compared": METER_IMAGES, "agreement": 1.0}
    assert report["failures"] == [] and report["boxes"] is None
    assert report["unmatched_labels"] == {"old_only": [], "new_only": []}
    assert list(label_dp(report)) == ["bolsa_plastica", "medidor", "sin_medidor"]
    assert all(dp < 1e-5 for dp in label_dp(report).values()), label_dp(report)
    counts = report["confusion"]["counts"]
    assert sum(counts[i][i] for i in range(len(counts))) == METER_IMAGES
    assert {Path(image["image"]).name for image in report["images"]} == {
        p.name for p in meter_dir.glob("test-*.jpg")
    }

    code, out, err = run(*args, meter_dir)
    assert code == 0, err
    assert f"top-1 agreement: {METER_IMAGES}/{METER_IMAGES} (100.0 %)" in out.splitlines()
    assert f"images: {METER_IMAGES} compared (under {meter_dir}/)" in out
    assert "top-1 differs" not in out and "not compared" not in out


def tflite_supported() -> bool:
    """The TFLite backend (ModelFormat.TFLITE, backends/litert.py) and a TFLite runtime are installed."""
    try:
        from edge_runtime.model.spec import ModelFormat

        if not hasattr(ModelFormat, "TFLITE"):
            return False
        importlib.import_module("edge_runtime.backends.litert")
    except ImportError:
        return False
    return any(importlib.util.find_spec(name) for name in ("ai_edge_litert", "tflite_runtime"))


@pytest.mark.shared
@pytest.mark.skipif(
    not tflite_supported(),
    reason="no TFLite support: backends/litert.py or a LiteRT runtime is not installed",
)
def test_meter_tflite_original_and_onnx_conversion_agree(
    shared_models: Path, meter_dir: Path, run: Run
) -> None:
    tflite = shared_models / "docker22-tflite-classification-meter"
    report = report_of(run, "--model", tflite, "--model", meter_dir, "--device", "cpu", meter_dir)
    assert report["old"]["path"] == str(tflite) and report["new"]["path"] == str(meter_dir)
    assert report["top1"] == {"agreed": METER_IMAGES, "compared": METER_IMAGES, "agreement": 1.0}
    assert report["unmatched_labels"] == {"old_only": [], "new_only": []}
    assert all(dp < 1e-5 for dp in label_dp(report).values()), label_dp(report)  # 6.3e-07 measured
    assert report["failures"] == []


# --------------------------------------------------------------------- disagreement: a perturbed detector


def perturbed_demo(folder: Path, bright_level: float) -> Path:
    """The demo detector with its glare level moved (a NEW model that reports glare earlier)."""
    shutil.copytree(build_demo_export(folder.parent / "demo"), folder)
    model = onnx.load(folder / "model.onnx")
    (level,) = (init for init in model.graph.initializer if init.name == "bright_level")
    level.CopyFrom(numpy_helper.from_array(np.array(bright_level, np.float32), "bright_level"))
    data = model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest["ModelFileSHA1"] = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    return folder


def belt_image(path: Path, *patches: tuple[int, int, int]) -> Path:
    """A 640x480 belt with 96x96 patches (x, y, grey level)."""
    pixels = np.full((480, 640, 3), BELT_GREY, np.uint8)
    for x, y, grey in patches:
        pixels[y : y + 96, x : x + 96] = grey
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_perturbed_detector_disagrees(tmp_path: Path, run: Run) -> None:
    old = build_demo_export(tmp_path / "demo")
    new = perturbed_demo(tmp_path / "perturbed", bright_level=200)
    faint = 215  # glare for NEW only: between its level (200) and the demo's (BRIGHT_ABOVE)
    assert 200 < faint < BRIGHT_ABOVE
    images = tmp_path / "belt"
    belt_image(images / "clean.png")
    belt_image(images / "stain.png", (64, 64, 20))
    belt_image(images / "stain-and-faint.png", (64, 64, 20), (384, 256, faint))
    belt_image(images / "day2" / "faint.png", (384, 256, faint))
    belt_image(images / "day2" / "glare.png", (384, 256, 250))
    assert DARK_BELOW > 20 and BRIGHT_ABOVE < 250

    same = report_of(run, "--model", old, "--model", old, "--device", "cpu", images)
    assert same["top1"]["agreement"] == 1.0 and same["images_compared"] == 5
    assert same["boxes"]["total"]["only_old"] == same["boxes"]["total"]["only_new"] == 0
    assert same["boxes"]["total"]["max_abs_dp"] == 0.0

    report = report_of(run, "--model", old, "--model", new, "--device", "cpu", images)
    by_image = {Path(i["image"]).relative_to(images).as_posix(): i for i in report["images"]}
    assert set(by_image) == {
        "clean.png",
        "stain.png",
        "stain-and-faint.png",
        "day2/faint.png",
        "day2/glare.png",
    }
    assert report["top1"] == {"agreed": 4, "compared": 5, "agreement": 0.8}
    faint_only = by_image["day2/faint.png"]
    assert faint_only["old_top"] is None and faint_only["new_top"] == "glare"
    assert faint_only["boxes_matched"] == 0 and faint_only["boxes_only_new"] > 0
    assert by_image["clean.png"]["old_top"] is None and by_image["clean.png"]["agree"]
    assert by_image["stain-and-faint.png"]["old_top"] == by_image["stain-and-faint.png"]["new_top"] == "stain"
    confusion = report["confusion"]
    assert confusion["labels"] == ["stain", "glare", "(none)"]
    assert confusion["counts"] == [[2, 0, 0], [0, 1, 0], [0, 1, 1]]
    stain, glare = report["boxes"]["by_label"]
    assert stain["label"] == "stain" and stain["only_old"] == stain["only_new"] == 0
    assert stain["matched"] > 0 and stain["mean_iou"] == pytest.approx(1.0) and stain["max_abs_dp"] == 0.0
    assert glare["label"] == "glare" and glare["only_old"] == 0 and glare["only_new"] > 0
    assert glare["matched"] > 0 and glare["max_abs_dp"] > 0.01  # the bright glare: more confident in NEW
    assert label_dp(report)["stain"] == 0.0 and label_dp(report)["glare"] > 0.5

    code, out, err = run("--model", old, "--model", new, "--device", "cpu", images)
    assert code == 0, err
    lines = out.splitlines()
    assert "top-1 agreement: 4/5 (80.0 %)" in lines
    assert "top-1 differs on 1 of 5 images" in lines
    differs = lines[lines.index("top-1 differs on 1 of 5 images") + 2]
    assert differs.split()[:3] == ["day2/faint.png", "(none)", "glare"]
    assert "boxes (matched by label, IoU >= 0.5, probability >= 0)" in lines
    strict = report_of(run, "--model", old, "--model", new, "--iou", "0.99", "--threshold", "0.9", images)
    assert strict["iou"] == 0.99 and strict["threshold"] == 0.9


# ------------------------------------------------------------------ disagreement: labels.txt reversed


COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255), (255, 255, 0), (0, 255, 255))


def test_classifier_with_reversed_labels_disagrees(tmp_path: Path, run: Run) -> None:
    def export(name: str, labels: tuple[str, ...]) -> Path:
        # seed 8: these colours' top-1 are alpha, beta and gamma (the default seed says beta to nearly all)
        model = synthetic.classifier_model(len(CLASSIFIER_LABELS), seed=8)
        folder: Path = synthetic.write_export(
            tmp_path / name, model, labels, metadata=synthetic.classification_sidecar()
        )
        return folder

    original = export("original", CLASSIFIER_LABELS)
    swapped = export("swapped", tuple(reversed(CLASSIFIER_LABELS)))
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(COLOURS):
        (images / f"{i}.png").write_bytes(encode(Image.new("RGB", (120, 90), colour), "PNG"))
    # What the comparison must find, from the OLD model's own predictions: NEW says the same numbers under
    # the reversed names, so only images whose top-1 is the middle label agree.
    direct = Predictor.load(original, cpu_options())
    tops = [direct.predict_bytes(p.read_bytes()) for p in sorted(images.iterdir())]
    expected_agreed = sum(
        1 for r in tops if max(r.predictions, key=lambda p: p.probability).tag_name == "beta"
    )
    assert len({max(r.predictions, key=lambda p: p.probability).tag_name for r in tops}) == 3
    alpha_gamma = max(abs(r.predictions[0].probability - r.predictions[2].probability) for r in tops)

    report = report_of(run, "--model", original, "--model", swapped, "--device", "cpu", images)
    assert report["top1"]["agreed"] == expected_agreed < len(COLOURS)
    assert report["top1"]["compared"] == len(COLOURS)
    assert report["new"]["labels"] == list(reversed(CLASSIFIER_LABELS))
    dps = label_dp(report)
    assert dps["beta"] < 1e-6
    assert dps["alpha"] == pytest.approx(alpha_gamma, abs=1e-6)
    assert dps["gamma"] == pytest.approx(alpha_gamma, abs=1e-6)
    confusion = report["confusion"]
    for old_label, new_label, count in (
        (old, new, confusion["counts"][i][j])
        for i, old in enumerate(confusion["labels"])
        for j, new in enumerate(confusion["labels"])
    ):
        mirrored = {"alpha": "gamma", "gamma": "alpha", "beta": "beta"}[old_label]
        assert count == 0 or new_label == mirrored

    # the same comparison with the NEW model's labels renamed: one unmatched label each way
    renamed = export("renamed", ("alpha", "beta", "delta"))
    report = report_of(run, "--model", original, "--model", renamed, "--device", "cpu", images)
    assert report["unmatched_labels"] == {"old_only": ["gamma"], "new_only": ["delta"]}
    assert [row["label"] for row in report["labels"]] == ["alpha", "beta"]
    assert all(row["max_abs_dp"] < 1e-6 for row in report["labels"])


# ------------------------------------------------------------------------------------ images and errors


BROKEN = "not a recognised image format (accepted: JPEG, PNG, BMP, GIF, WEBP)"


def test_unreadable_images_are_listed_not_fatal(classifier_export: Path, tmp_path: Path, run: Run) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(encode(pattern_image(64, 48, seed=3), "JPEG"))
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("not an image, not looked at")
    missing = tmp_path / "gone.jpg"
    code, out, err = run("--model", classifier_export, "--model", classifier_export, folder, missing)
    assert code == 0, err
    lines = out.splitlines()
    assert f"images: 1 compared, 2 not compared (under {tmp_path}/)" in lines
    assert "  gone.jpg: no such file or folder" in lines  # names under the folder they share
    assert "  shots/broken.jpg: " + BROKEN in lines
    report = report_of(run, "--model", classifier_export, "--model", classifier_export, folder, missing)
    assert {Path(f["image"]).name: f["error"] for f in report["failures"]} == {
        "gone.jpg": "no such file or folder",
        "broken.jpg": BROKEN,
    }
    assert [Path(i["image"]).name for i in report["images"]] == ["good.jpg"]

    code, out, err = run("--model", classifier_export, "--model", classifier_export, folder / "broken.jpg")
    assert code == 1  # nothing compared: the report says why
    assert "top-1 agreement: - (no image compared)" in out and "broken.jpg: not a recognised" in out


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{m}"], "compare needs two models, --model OLD --model NEW (got 1)"),
        ([], "compare needs two models, --model OLD --model NEW (got 0)"),
        (["--model", "{m}"] * 3, "(got 3)"),
        (["--model", "{m}", "--model", "{m}", "--device", "cpu"] + ["--device", "cpu"] * 2, "--device: give"),
        (["--model", "{m}", "--model", "{m}", "--iou", "0"], "--iou 0: expected a value above 0"),
        (["--model", "{m}", "--model", "{m}", "--iou", "1.5"], "--iou 1.5"),
        (["--model", "{m}", "--model", "{m}", "--threshold", "-0.1"], "--threshold -0.1"),
        (
            ["--model", "{m}", "--model", "{m}", "--device", "tpu"],
            "error: old model ({m}): invalid settings: device 'tpu'",
        ),
        (
            ["--model", "{m}", "--model", "{m}", "--device", "cpu", "--device", "tpu"],
            "error: new model ({m})",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_error_line(
    classifier_export: Path,
    jpeg_of: Callable[..., bytes],
    tmp_path: Path,
    run: Run,
    args: list[str],
    message: str,
) -> None:
    image = tmp_path / "x.jpg"
    image.write_bytes(jpeg_of())
    code, out, err = run(*(a.format(m=classifier_export) for a in args), image)
    assert code == 2 and out == ""
    assert message.format(m=classifier_export) in error_line(err)


def test_no_images_exit_2(classifier_export: Path, tmp_path: Path, run: Run) -> None:
    (tmp_path / "empty").mkdir()
    code, out, err = run("--model", classifier_export, "--model", classifier_export, tmp_path / "empty")
    assert code == 2 and out == ""
    assert error_line(err) == f"error: no images to compare in {tmp_path / 'empty'}"
    code, _, err = run("--model", classifier_export, "--model", classifier_export, tmp_path / "nope")
    assert code == 2
    assert error_line(err).endswith(f"; {tmp_path / 'nope'}: no such file or folder")


def test_a_broken_model_is_named(
    classifier_export: Path, jpeg_of: Callable[..., bytes], tmp_path: Path, run: Run
) -> None:
    image = tmp_path / "x.jpg"
    image.write_bytes(jpeg_of())
    broken = shutil.copytree(classifier_export, tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"garbage")
    code, out, err = run("--model", classifier_export, "--model", broken, "--no-verify-sha1", image)
    assert code == 2 and out == ""
    line = error_line(err)
    assert line.startswith(f"error: new model ({broken}): ") and str(broken / "model.onnx") in line
    code, out, err = run("--model", tmp_path / "missing", "--model", classifier_export, image)
    assert code == 2 and out == ""
    assert error_line(err).startswith(f"error: old model ({tmp_path / 'missing'}): ")


def test_a_model_failing_on_an_image_is_named(tmp_path: Path, run: Run) -> None:
    """NEW runs at one input size only: images of other sizes fail in NEW, and are listed as its failure."""
    fixed = synthetic.write_export(
        tmp_path / "fixed",
        synthetic.yolo_model(1, grid=np.zeros((1, synthetic.yolo_channels(1), 14, 19), np.float32)),
        ("spot",),
        domain_type="ObjectDetection",
        metadata=synthetic.yolo_sidecar(),
    )
    free = synthetic.write_export(
        tmp_path / "free",
        synthetic.yolo_model(1),
        ("spot",),
        domain_type="ObjectDetection",
        metadata=synthetic.yolo_sidecar(),
    )
    good = tmp_path / "images" / "640x480.png"
    good.parent.mkdir()
    good.write_bytes(encode(pattern_image(640, 480, seed=1), "PNG"))
    odd = tmp_path / "images" / "500x500.png"
    odd.write_bytes(encode(pattern_image(500, 500, seed=2), "PNG"))
    report = report_of(run, "--model", free, "--model", fixed, "--device", "cpu", good.parent)
    assert [Path(i["image"]).name for i in report["images"]] == ["640x480.png"]
    ((failure),) = report["failures"]
    assert Path(failure["image"]).name == "500x500.png" and failure["error"].startswith("new model: ")
