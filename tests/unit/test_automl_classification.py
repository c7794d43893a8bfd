"""AutoML for Images classifiers (input1 -> output1 logits), per the ONNX inference how-to: the
validation transform (shorter side -> valid_resize_size, centre crop valid_crop_size), RGB /255 with
ImageNet mean/std, softmax (multi-class) or sigmoid over 0.5 (multi-label). The expected probabilities
are computed here from the documented recipe and the graph's weights, not through the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from layout_graphs import automl_classifier, write_folder
from PIL import Image
from synthetic import cpu_options, pattern_image

from edge_runtime.domain import Task
from edge_runtime.engine import Predictor
from edge_runtime.errors import ModelLoadError
from edge_runtime.model.loader import LoadOptions, load_spec
from edge_runtime.model.spec import Postprocess, Resize
from edge_runtime.model_card import ModelCard

LABELS = ("milk", "water", "juice", "cola")
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def documented_logits(
    image: Image.Image, weight: np.ndarray, bias: np.ndarray, resize: int = 256, crop: int = 224
) -> np.ndarray:
    """The how-to's torchvision transform written out: Resize(resize) keeps the aspect with the long
    side int()-truncated, CenterCrop rounds its offsets, ToTensor /255, Normalize(ImageNet)."""
    w, h = image.size
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    resized = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    left, top = round((size[0] - crop) / 2.0), round((size[1] - crop) / 2.0)
    pixels = np.asarray(resized.crop((left, top, left + crop, top + crop)), np.float64) / 255
    normalised = (pixels - MEAN) / STD
    result: np.ndarray = normalised.mean(axis=(0, 1)) @ weight.astype(np.float64) + bias
    return result


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    out: np.ndarray = e / e.sum()
    return out


def export(
    tmp_path: Path, settings: dict[str, Any] | None, **model: Any
) -> tuple[Path, np.ndarray, np.ndarray]:
    graph, weight, bias = automl_classifier(len(LABELS), **model)
    return write_folder(tmp_path / "automl", graph, LABELS, settings=settings), weight, bias


def test_multiclass_is_softmax_over_every_label(tmp_path: Path) -> None:
    root, weight, bias = export(tmp_path, {"multilabel": False, "valid_resize_size": 256})
    predictor = Predictor.load(root, cpu_options())
    assert predictor.spec.postprocess is Postprocess.LOGITS_MULTICLASS
    assert predictor.spec.task is Task.CLASSIFICATION
    for seed, size in ((1, (500, 300)), (2, (300, 500)), (3, (224, 224))):
        image = pattern_image(*size, seed=seed)
        got = predictor.predict_image(image).predictions
        want = softmax(documented_logits(image, weight, bias))
        assert [p.tag_name for p in got] == list(LABELS)  # labels.json order
        assert all(p.tag_id is None and p.bounding_box is None for p in got)
        assert np.allclose([p.probability for p in got], want, atol=2e-6), (got, want)


def test_the_recipe_comes_from_settings_json(tmp_path: Path) -> None:
    root, weight, bias = export(tmp_path, {"task_type": "image-classification", "valid_resize_size": 300})
    spec = load_spec(root)
    recipe = spec.preprocess
    assert (recipe.resize, recipe.resize_target, recipe.input_size) == (
        Resize.TORCHVISION_CROP,
        (300, 300),
        (224, 224),
    )
    assert (recipe.bgr, recipe.scale, recipe.mean, recipe.std) == (False, 1 / 255, tuple(MEAN), tuple(STD))
    image = pattern_image(640, 480, seed=5)
    got = Predictor.load(root, cpu_options()).predict_image(image).predictions
    assert np.allclose(
        [p.probability for p in got], softmax(documented_logits(image, weight, bias, 300)), atol=2e-6
    )


def test_multilabel_is_sigmoid_over_the_threshold(tmp_path: Path) -> None:
    root, weight, bias = export(tmp_path, {"task_type": "image-classification-multilabel"})
    image = pattern_image(400, 400, seed=11)
    probabilities = 1 / (1 + np.exp(-documented_logits(image, weight, bias)))
    assert (probabilities > 0.5).any() and (probabilities <= 0.5).any()  # the threshold matters here
    got = Predictor.load(root, cpu_options()).predict_image(image).predictions
    listed = [(label, p) for label, p in zip(LABELS, probabilities, strict=True) if p > 0.5]
    assert [p.tag_name for p in got] == [label for label, _ in listed]
    assert np.allclose([p.probability for p in got], [p for _, p in listed], atol=2e-6)
    everything = Predictor.load(root, cpu_options(score_threshold=0.0)).predict_image(image).predictions
    assert np.allclose([p.probability for p in everything], probabilities, atol=2e-6)


def test_model_layout_says_what_settings_json_would(tmp_path: Path) -> None:
    root, _, _ = export(tmp_path, None)
    assert (
        load_spec(root, LoadOptions(layout=Postprocess.LOGITS_MULTILABEL)).postprocess
        is Postprocess.LOGITS_MULTILABEL
    )
    assert (
        load_spec(root, LoadOptions(layout=Postprocess.LOGITS_MULTICLASS)).postprocess
        is Postprocess.LOGITS_MULTICLASS
    )


def test_without_settings_json_the_kind_of_classifier_is_asked_for(tmp_path: Path) -> None:
    root, _, _ = export(tmp_path, None)
    with pytest.raises(
        ModelLoadError, match=r"is missing: .*multi-class .*multi-label .*model\.layout"
    ) as info:
        load_spec(root)
    assert info.value.path == str(root / "settings.json")


def test_settings_json_that_does_not_say_is_named(tmp_path: Path) -> None:
    root, _, _ = export(tmp_path, {"valid_resize_size": 256})
    with pytest.raises(ModelLoadError, match="does not say") as info:
        load_spec(root)
    assert info.value.path == str(root / "settings.json")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"multilabel": "yes"}, "multilabel is 'yes', expected true or false"),
        ({"multilabel": False, "valid_resize_size": -3}, "valid_resize_size is -3"),
        (
            {"multilabel": False, "valid_resize_size": 200},
            "valid_resize_size 200 is smaller than the model's input",
        ),
    ],
)
def test_bad_settings_values_name_the_file(tmp_path: Path, settings: dict[str, Any], match: str) -> None:
    root, _, _ = export(tmp_path, settings)
    with pytest.raises(ModelLoadError, match=match) as info:
        load_spec(root)
    assert info.value.path == str(root / "settings.json")


def test_settings_json_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    root, _, _ = export(tmp_path, None)
    (root / "settings.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="expected a JSON object") as info:
        load_spec(root)
    assert info.value.path == str(root / "settings.json")


@pytest.mark.parametrize(
    ("text", "match"), [('{"a": 1}', "JSON list"), ("[]", "empty"), ("[1,", "not valid JSON")]
)
def test_bad_labels_json_is_named(tmp_path: Path, text: str, match: str) -> None:
    root, _, _ = export(tmp_path, {"multilabel": False})
    (root / "labels.json").write_text(text)
    with pytest.raises(ModelLoadError, match=match) as info:
        load_spec(root)
    assert info.value.path == str(root / "labels.json")


def test_wrong_label_count_names_labels_json(tmp_path: Path) -> None:
    graph, _, _ = automl_classifier(3)
    root = write_folder(tmp_path / "e", graph, LABELS, settings={"multilabel": False})
    with pytest.raises(ModelLoadError, match="4 labels but the model output 'output1' has 3 classes") as info:
        load_spec(root)
    assert info.value.path == str(root / "labels.json")


def test_onnx_normalization_inside_the_graph_means_none_outside(tmp_path: Path) -> None:
    root, _, _ = export(tmp_path, {"multilabel": False, "enable_onnx_normalization": True})
    spec = load_spec(root)
    assert (spec.preprocess.mean, spec.preprocess.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert any("enable_onnx_normalization" in note for note in spec.notes)


def test_a_fixed_batch_classifier_runs_the_picture_batch_times(tmp_path: Path) -> None:
    root, weight, bias = export(tmp_path, {"multilabel": False}, batch=4)
    predictor = Predictor.load(root, cpu_options())
    assert predictor.spec.preprocess.batch == 4
    image = pattern_image(300, 200, seed=8)
    got = predictor.predict_image(image).predictions
    assert np.allclose(
        [p.probability for p in got], softmax(documented_logits(image, weight, bias)), atol=2e-6
    )


def test_the_model_card(tmp_path: Path) -> None:
    root, _, _ = export(tmp_path, {"multilabel": True, "model_name": "vitb16r224"})
    card = ModelCard.of(Predictor.load(root, cpu_options())).to_dict()
    assert card["domain"] == "AutoML for Images: multi-label classification (vitb16r224)"
    assert card["postprocess"] == "logits-multilabel"
    assert (
        card["decoder"]
        == "logits [B, C] -> sigmoid, the labels over the score threshold (0.5); reads output1"
    )
    assert str(card["preprocessing"]).startswith(
        "torchvision-crop (target 256x256, input 224x224, bilinear), RGB 0..1"
    )
    assert "minus mean [0.485, 0.456, 0.406] over std [0.229, 0.224, 0.225]" in str(card["preprocessing"])
