"""`edge-runtime predict | inspect`: the container's JSON on stdout, errors on stderr with exit code 2."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import synthetic
from onnx import TensorProto, helper
from synthetic import CLASSIFIER_LABELS, cpu_options, encode, pattern_image

from edge_runtime.cli import main
from edge_runtime.engine import Predictor

METER_IMAGES = ("test-cat.jpg", "test-dog.jpg", "test-donuts-3291252.jpg")


def container_formatted(text: str) -> dict:  # type: ignore[type-arg]
    """Parse one response and check it is byte-for-byte Flask jsonify output (sorted, compact, newline)."""
    body = json.loads(text)
    assert text == json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
    assert list(body) == ["created", "id", "iteration", "predictions", "project"]
    assert body["id"] == body["project"] == body["iteration"] == ""
    created = body["created"]
    assert not created.endswith("Z") and "+" not in created
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?", created)
    datetime.fromisoformat(created)
    return body


@pytest.fixture()
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(pattern_image(160, 120, seed=12), "JPEG"))
    return path


def test_predict_prints_the_container_json(
    classifier_export: Path, image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["predict", "--model", str(classifier_export), "--device", "cpu", str(image_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    body = container_formatted(out)
    preds = body["predictions"]
    assert [p["tagName"] for p in preds] == list(CLASSIFIER_LABELS)
    assert all(p["tagId"] == "" and p["boundingBox"] is None for p in preds)
    assert all(list(p) == ["boundingBox", "probability", "tagId", "tagName"] for p in preds)
    direct = Predictor.load(classifier_export, cpu_options()).predict_bytes(image_file.read_bytes())
    for p, d in zip(preds, direct.predictions, strict=True):
        assert p["probability"] == round(d.probability, 8)
        assert p["probability"] != d.probability  # really rounded (these values have > 8 decimals)


def test_predict_detection_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bias = np.zeros(synthetic.yolo_channels(1), np.float32)
    bias[4::6] = -12.0
    bias[4] = 2.0  # anchor 0 of every cell fires: 0.8808
    root = synthetic.write_export(
        tmp_path / "det",
        synthetic.yolo_model(1, channel_bias=bias),
        ("spot",),
        domain_type="ObjectDetection",
        metadata=synthetic.yolo_sidecar(),
    )
    image = tmp_path / "frame.png"
    image.write_bytes(encode(pattern_image(640, 480, seed=1), "PNG"))
    assert main(["predict", "--model", str(root), "--device", "cpu", str(image)]) == 0
    body = container_formatted(capsys.readouterr().out)
    preds = body["predictions"]
    assert len(preds) == 20
    for p in preds:
        assert p["tagId"] == 0 and p["tagName"] == "spot"
        assert p["probability"] == round(synthetic.sigmoid(2.0), 8)
        box = p["boundingBox"]
        assert list(box) == ["height", "left", "top", "width"]
        assert all(v == round(v, 8) and 0.0 <= v <= 1.0 for v in box.values())


def test_predict_several_images_and_a_bad_one(
    classifier_export: Path, image_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    missing = tmp_path / "missing.jpg"
    code = main(
        [
            "predict",
            "--model",
            str(classifier_export),
            "--device",
            "cpu",
            str(image_file),
            str(broken),
            str(missing),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines(keepends=True)
    assert len(lines) == 1
    body = json.loads(lines[0])
    assert body["image"] == str(image_file)
    assert len(body["predictions"]) == 3
    assert f"{broken}: not a recognised image" in err
    assert str(missing) in err


def test_inspect_json(classifier_export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", str(classifier_export), "--device", "cpu", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["task"] == "classification"
    assert card["postprocess"] == "multiclass"
    assert card["labels"] == list(CLASSIFIER_LABELS)
    assert card["device"] == "cpu"
    assert card["fallback_from"] is None
    assert card["format"] == "onnx"
    assert card["input"] == {
        "name": "data",
        "shape": [None, 3, 32, 32],
        "dtype": "float32",
        "layout": "NCHW",
        "colour": "RGB",
        "range": "0..1",
    }
    assert card["detection"] is None
    assert "CPUExecutionProvider" in card["devices_available"]["onnxruntime"]
    assert card["sha1"] == json.loads((classifier_export / "cvexport.manifest").read_text())["ModelFileSHA1"]
    assert card["notes"]


def test_inspect_text(classifier_export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", str(classifier_export), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "task: classification" in out
    assert "device: cpu" in out


def test_inspect_detection_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = synthetic.write_export(
        tmp_path / "det",
        synthetic.yolo_model(2),
        ("a", "b"),
        domain_type="ObjectDetection",
        metadata=synthetic.yolo_sidecar(),
    )
    assert main(["inspect", "--model", str(root), "--device", "cpu", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["task"] == "detection" and card["postprocess"] == "yolo"
    assert card["detection"]["prob_threshold"] == 0.1
    assert card["detection"]["max_detections"] == 20
    assert card["detection"]["anchors"][0] == [0.57273, 0.677385]
    assert card["input"]["colour"] == "BGR" and card["input"]["range"] == "0..255"


def test_legacy_model_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = synthetic.make_model(
        [helper.make_node("Relu", ["data"], ["loss"])],
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [1, 3])],
        opset=1,
        check=False,
    )
    root = synthetic.write_export(tmp_path / "old", model, ("a", "b", "c"), manifest=False)
    code = main(["inspect", "--model", str(root), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert str(root / "model.onnx") in err
    assert "re-export" in err.lower()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "device 'tpu'"),
        (["--device", "cuda"], "cuda"),  # onnxruntime here has no CUDA: refused, not silently CPU
    ],
)
def test_device_errors_exit_2(
    classifier_export: Path,
    image_file: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    from edge_runtime.backends.providers import CUDA_EP, detect_availability

    if args[1] == "cuda" and CUDA_EP in detect_availability().ort_providers:
        pytest.skip("CUDA is really available here")
    code = main(["predict", "--model", str(classifier_export), *args, str(image_file)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert message in err


def test_cuda_with_allow_fallback_runs_on_cpu(
    classifier_export: Path, image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_runtime.backends.providers import CUDA_EP, detect_availability

    if CUDA_EP in detect_availability().ort_providers:
        pytest.skip("CUDA is really available here")
    args = ["inspect", "--model", str(classifier_export), "--device", "cuda", "--allow-fallback", "--json"]
    assert main(args) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["fallback_from"] == "cuda"
    assert card["device_reason"].startswith("fallback:")


def test_missing_model_exits_2(tmp_path: Path, image_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", str(tmp_path / "nope"), "--device", "cpu", str(image_file)]) == 2
    assert f"{tmp_path / 'nope'}: no such file" in capsys.readouterr().err


def test_logging_setup_quiets_the_iot_hub_sdk(tmp_path: Path, image_file: Path) -> None:
    sdk = logging.getLogger("azure.iot.device")
    sdk.setLevel(logging.NOTSET)
    assert main(["predict", "--model", str(tmp_path / "nope"), str(image_file)]) == 2
    assert sdk.level == logging.WARNING


def test_console_script(classifier_export: Path) -> None:
    script = Path(sys.executable).parent / "edge-runtime"
    if not script.exists():
        script_path = shutil.which("edge-runtime")
        if script_path is None:
            pytest.skip("edge-runtime console script is not installed")
        script = Path(script_path)
    proc = subprocess.run(
        [
            str(script),
            "--log-level",
            "WARNING",
            "inspect",
            "--model",
            str(classifier_export),
            "--device",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["labels"] == list(CLASSIFIER_LABELS)


# ------------------------------------------------------------------------------------------ real fixtures


@pytest.mark.shared
def test_predict_meter_matches_the_container(meter_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads((meter_dir / "container_outputs.json").read_text())
    for name in METER_IMAGES:
        assert main(["predict", "--model", str(meter_dir), "--device", "cpu", str(meter_dir / name)]) == 0
        body = container_formatted(capsys.readouterr().out)
        preds = body["predictions"]
        assert [p["tagName"] for p in preds] == expected["labels"]
        assert all(p["tagId"] == "" and p["boundingBox"] is None for p in preds)
        got = [p["probability"] for p in preds]
        assert got == pytest.approx(expected["outputs"][name], abs=1e-6)
        assert all(len(repr(v).split(".")[-1]) <= 8 for v in got if "e" not in repr(v))


@pytest.mark.shared
def test_predict_meter_with_sidecar_recipe(meter_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads((meter_dir / "expected_outputs.json").read_text())["outputs"]
    image = meter_dir / "test-dog.jpg"
    args = ["predict", "--model", str(meter_dir), "--device", "cpu", "--resize", "sidecar", str(image)]
    assert main(args) == 0
    got = [p["probability"] for p in json.loads(capsys.readouterr().out)["predictions"]]
    assert got == pytest.approx(expected["test-dog.jpg"], abs=1e-6)


@pytest.mark.shared
def test_onnx10_model_exits_2(shared_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_models / "onnx10-cheesecake-donuts-fries"
    code = main(
        ["predict", "--model", str(folder), "--device", "cpu", str(folder / "test-fries-2846809.jpg")]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert str(folder / "model.onnx") in err
    assert "re-export" in err.lower()
