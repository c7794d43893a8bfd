"""edge_runtime.compare on hand-made PredictionResults: agreement, |dp| by label name, confusion, greedy
box matching by IoU, unmatched labels, JSON and the text report, image discovery."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge_runtime.compare import (
    NONE,
    SHOWN_IMAGES,
    ComparisonReport,
    ImageFailure,
    ModelSide,
    compare,
    discover_images,
    iou,
    match_boxes,
    render_text,
    top1,
)
from edge_runtime.domain import BoundingBox, Prediction, PredictionResult, StageTimings, Task

ABC = ("a", "b", "c")
OLD = ModelSide("old-export", Task.CLASSIFICATION, ABC, "cpu")
NEW = ModelSide("new-export", Task.CLASSIFICATION, ABC, "openvino:CPU")
OLD_DET = ModelSide("old-det", Task.DETECTION, ("stain", "glare"))
NEW_DET = ModelSide("new-det", Task.DETECTION, ("stain", "glare"))


def cls(**probs: float) -> PredictionResult:
    """A classifier's result: one prediction per label, in the order given."""
    return PredictionResult(
        Task.CLASSIFICATION,
        tuple(Prediction(name, p) for name, p in probs.items()),
        (64, 48),
        StageTimings(),
    )


def det(*boxes: tuple[str, float, tuple[float, float, float, float]]) -> PredictionResult:
    """A detector's result: (label, probability, (left, top, width, height))."""
    return PredictionResult(
        Task.DETECTION,
        tuple(Prediction(name, p, 0, BoundingBox(*box)) for name, p, box in boxes),
        (640, 480),
        StageTimings(),
    )


def run(
    old: list[PredictionResult],
    new: list[PredictionResult],
    threshold: float = 0.0,
    failures: Sequence[ImageFailure] = (),
) -> ComparisonReport:
    sides = (OLD, NEW) if old and old[0].task is Task.CLASSIFICATION else (OLD_DET, NEW_DET)
    names = [f"/data/line4/img{i}.jpg" for i in range(len(old))]
    return compare(*sides, names, old, new, threshold=threshold, failures=failures)


# ---------------------------------------------------------------------------------------- classification


def test_identical_results_agree_with_zero_dp() -> None:
    results = [cls(a=0.7, b=0.2, c=0.1), cls(a=0.1, b=0.1, c=0.8)]
    report = run(results, results)
    assert report.agreed == 2 and report.agreement == 1.0
    assert [s.label for s in report.labels] == list(ABC)
    assert all(s.max_abs_dp == 0.0 and s.mean_abs_dp == 0.0 and s.images == 2 for s in report.labels)
    assert report.old_only_labels == report.new_only_labels == ()
    assert report.boxes is None and report.box_total is None
    assert [(i.max_abs_dp, i.worst_label) for i in report.images] == [(0.0, None), (0.0, None)]
    assert all(s.worst_image is None for s in report.labels)


def test_label_stats_by_hand() -> None:
    old = [cls(a=0.70, b=0.20, c=0.10), cls(a=0.10, b=0.30, c=0.60), cls(a=0.50, b=0.40, c=0.10)]
    new = [cls(a=0.60, b=0.30, c=0.10), cls(a=0.10, b=0.30, c=0.60), cls(a=0.20, b=0.70, c=0.10)]
    report = run(old, new)
    a, b, c = report.labels
    assert a.max_abs_dp == pytest.approx(0.3) and a.mean_abs_dp == pytest.approx(0.4 / 3)
    assert a.worst_image == "/data/line4/img2.jpg"
    assert a.mean_old == pytest.approx(1.3 / 3) and a.mean_new == pytest.approx(0.9 / 3)
    assert b.max_abs_dp == pytest.approx(0.3) and b.mean_abs_dp == pytest.approx(0.4 / 3)
    assert c.max_abs_dp == 0.0 and c.worst_image is None  # no image differs
    # top-1: a/a, c/c, a/b
    assert [(i.old_top, i.new_top, i.agree) for i in report.images] == [
        ("a", "a", True),
        ("c", "c", True),
        ("a", "b", False),
    ]
    assert report.agreed == 2 and report.agreement == pytest.approx(2 / 3)
    assert report.images[2].max_abs_dp == pytest.approx(0.3)
    assert report.images[2].worst_label == "a"  # a and b both differ by 0.3: the first label


def test_labels_are_matched_by_name_not_position() -> None:
    old = [cls(a=0.7, b=0.2, c=0.1)]
    reordered = ModelSide("new", Task.CLASSIFICATION, ("c", "b", "a"))
    new = [cls(c=0.1, b=0.2, a=0.7)]  # the same model with labels.txt in another order
    report = compare(OLD, reordered, ["x.jpg"], old, new)
    assert report.agreement == 1.0
    assert all(s.max_abs_dp == 0.0 for s in report.labels)
    # ... while the same outputs under swapped names disagree (a labels.txt mix-up)
    swapped = [cls(c=0.7, b=0.2, a=0.1)]
    report = compare(OLD, reordered, ["x.jpg"], old, swapped)
    assert report.agreement == 0.0
    assert report.images[0].new_top == "c"
    assert {s.label: s.max_abs_dp for s in report.labels} == pytest.approx({"a": 0.6, "b": 0.0, "c": 0.6})


def test_unmatched_labels_are_listed_and_left_out_of_label_stats() -> None:
    new_side = ModelSide("new", Task.CLASSIFICATION, ("a", "b", "d"))
    old = [cls(a=0.1, b=0.1, c=0.8), cls(a=0.8, b=0.1, c=0.1)]
    new = [cls(a=0.1, b=0.1, d=0.8), cls(a=0.8, b=0.1, d=0.1)]
    report = compare(OLD, new_side, ["1.jpg", "2.jpg"], old, new)
    assert report.old_only_labels == ("c",) and report.new_only_labels == ("d",)
    assert [s.label for s in report.labels] == ["a", "b"]
    assert report.images[0].old_top == "c" and report.images[0].new_top == "d"
    assert report.confusion.labels == ("a", "c", "d")
    assert report.confusion.count("c", "d") == 1 and report.confusion.count("a", "a") == 1
    text = render_text(report)
    assert "labels only in old: c" in text and "labels only in new: d" in text


def test_a_label_missing_from_a_result_scores_zero() -> None:
    report = run([cls(a=0.9, b=0.1, c=0.0)], [cls(a=0.9, b=0.1)])
    assert {s.label: s.max_abs_dp for s in report.labels} == {"a": 0.0, "b": 0.0, "c": 0.0}
    report = run([cls(a=0.5, b=0.1, c=0.4)], [cls(a=0.5, b=0.1)])
    assert report.labels[2].max_abs_dp == pytest.approx(0.4)


def test_confusion_table() -> None:
    old = [cls(a=0.9, b=0.05, c=0.05)] * 3 + [cls(a=0.1, b=0.8, c=0.1)] * 2 + [cls(a=0.1, b=0.1, c=0.8)]
    new = [cls(a=0.9, b=0.05, c=0.05)] * 2 + [cls(a=0.1, b=0.8, c=0.1)] * 3 + [cls(a=0.1, b=0.1, c=0.8)]
    report = run(old, new)
    assert report.confusion.labels == ABC
    assert report.confusion.counts == ((2, 1, 0), (0, 2, 0), (0, 0, 1))
    assert sum(report.confusion.counts[i][i] for i in range(3)) == report.agreed == 5
    assert report.confusion.count("a", "b") == 1 and report.confusion.count("z", "a") == 0
    # a label no image has as top-1 is not a row
    report = run([cls(a=0.9, b=0.1, c=0.0)], [cls(a=0.9, b=0.1, c=0.0)])
    assert report.confusion.labels == ("a",) and report.confusion.counts == ((1,),)


def test_results_must_be_parallel() -> None:
    with pytest.raises(ValueError, match="not parallel"):
        compare(OLD, NEW, ["x.jpg"], [cls(a=1.0)], [])


def test_no_images() -> None:
    report = compare(OLD, NEW, [], [], [], failures=[ImageFailure("x.jpg", "broken")])
    assert report.agreement is None and report.labels[0].images == 0
    assert report.confusion.labels == ()
    text = render_text(report)
    assert "top-1 agreement: - (no image compared)" in text
    assert "x.jpg: broken" in text
    json.dumps(report.to_dict())


# --------------------------------------------------------------------------------------------- detection


def test_iou() -> None:
    box = BoundingBox(0.1, 0.1, 0.2, 0.2)
    assert iou(box, box) == pytest.approx(1.0)
    assert iou(box, BoundingBox(0.2, 0.1, 0.2, 0.2)) == pytest.approx(1 / 3)  # half of each
    assert iou(box, BoundingBox(0.15, 0.15, 0.1, 0.1)) == pytest.approx(0.25)  # inside
    assert iou(box, BoundingBox(0.3, 0.1, 0.2, 0.2)) == pytest.approx(0.0, abs=1e-12)  # touching edges
    assert iou(box, BoundingBox(0.6, 0.6, 0.1, 0.1)) == 0.0
    assert iou(BoundingBox(0.1, 0.1, 0.0, 0.0), BoundingBox(0.1, 0.1, 0.0, 0.0)) == 0.0


def test_greedy_matching_takes_the_highest_iou_first() -> None:
    # a overlaps x at 0.6 and y at 0.9; b sits exactly on x (1.0) and overlaps y at 0.55. Taking a's
    # first partner above the threshold (x) would leave b with y; the highest IoU first gives b-x, a-y.
    a = Prediction("s", 0.9, 0, BoundingBox(0.0, 0.0, 0.4, 0.4))
    b = Prediction("s", 0.8, 0, BoundingBox(0.1, 0.0, 0.4, 0.4))
    x = Prediction("s", 0.7, 0, BoundingBox(0.1, 0.0, 0.4, 0.4))
    y = Prediction("s", 0.6, 0, BoundingBox(0.0, 0.0, 0.4, 0.36))
    assert bb(a, x) == pytest.approx(0.6) and bb(a, y) == pytest.approx(0.9) and bb(b, x) == 1.0
    pairing = match_boxes([a, b], [x, y], 0.5)
    assert [(o, n) for o, n, _ in pairing.pairs] == [(b, x), (a, y)]  # IoU 1.0 first, then 0.9
    assert pairing.only_old == pairing.only_new == 0
    pairing = match_boxes([a, b], [x, y], 0.95)
    assert [(o, n) for o, n, _ in pairing.pairs] == [(b, x)]
    assert pairing.only_old == pairing.only_new == 1


def bb(p: Prediction, q: Prediction) -> float:
    assert p.bounding_box is not None and q.bounding_box is not None
    return iou(p.bounding_box, q.bounding_box)


def test_boxes_matched_per_label_by_name() -> None:
    here = (0.1, 0.1, 0.2, 0.2)
    shifted = (0.12, 0.1, 0.2, 0.2)  # IoU 0.8182
    far = (0.6, 0.6, 0.2, 0.2)
    old = [det(("stain", 0.9, here), ("glare", 0.6, far)), det(("stain", 0.5, here))]
    new = [det(("stain", 0.8, shifted), ("stain", 0.4, far)), det(("glare", 0.5, here))]
    report = run(old, new)
    assert report.boxes is not None
    stain, glare = report.boxes
    assert (stain.label, stain.matched, stain.only_old, stain.only_new) == ("stain", 1, 1, 1)
    assert stain.mean_iou == pytest.approx(0.036 / 0.044)
    assert stain.max_abs_dp == pytest.approx(0.1) and stain.mean_abs_dp == pytest.approx(0.1)
    # glare in the same place as old's stain is not a match: labels by name
    assert (glare.label, glare.matched, glare.only_old, glare.only_new) == ("glare", 0, 1, 1)
    assert glare.mean_iou is None and glare.max_abs_dp is None
    total = report.box_total
    assert total is not None
    assert (total.matched, total.only_old, total.only_new) == (1, 2, 2)
    assert [(i.boxes_matched, i.boxes_only_old, i.boxes_only_new) for i in report.images] == [
        (1, 1, 1),
        (0, 1, 1),
    ]
    # label scores: the best box of each label per image (0 when none)
    assert {s.label: s.max_abs_dp for s in report.labels} == pytest.approx({"stain": 0.5, "glare": 0.6})


def test_box_total_weights_means_by_matches() -> None:
    box = (0.1, 0.1, 0.2, 0.2)
    other = (0.5, 0.5, 0.2, 0.2)
    old = [det(("stain", 0.9, box), ("stain", 0.9, other), ("glare", 0.5, box))]
    new = [det(("stain", 0.8, box), ("stain", 0.7, other), ("glare", 0.9, box))]
    report = run(old, new)
    total = report.box_total
    assert total is not None and total.matched == 3
    assert total.mean_iou == pytest.approx(1.0)
    assert total.mean_abs_dp == pytest.approx((0.1 + 0.2 + 0.4) / 3)
    assert total.max_abs_dp == pytest.approx(0.4)


def test_threshold_leaves_weak_boxes_out_of_matching_and_top1() -> None:
    box = (0.1, 0.1, 0.2, 0.2)
    old = [det(("stain", 0.9, box), ("glare", 0.2, (0.5, 0.5, 0.1, 0.1)))]
    new = [det(("stain", 0.85, box))]
    report = run(old, new, threshold=0.3)
    assert report.box_total is not None and report.box_total.only_old == 0
    assert report.boxes is not None and [b.label for b in report.boxes] == ["stain"]
    unfiltered = run(old, new).box_total
    assert unfiltered is not None and unfiltered.only_old == 1
    weak = [det(("stain", 0.2, box))]
    report = run(weak, new, threshold=0.3)
    assert report.images[0].old_top is None and report.images[0].new_top == "stain"
    assert report.confusion.labels == ("stain", NONE)
    assert report.confusion.count(None, "stain") == 1
    assert top1(weak[0], 0.3) is None and top1(weak[0]) == weak[0].predictions[0]


def test_no_box_in_either_model_agrees() -> None:
    report = run([det()], [det()])
    assert report.agreement == 1.0 and report.images[0].old_top is None
    assert report.confusion.labels == (NONE,) and report.confusion.counts == ((1,),)
    assert report.boxes == () and report.box_total is not None and report.box_total.matched == 0


def test_a_classifier_against_a_detector_has_no_box_section() -> None:
    report = compare(
        OLD_DET,
        ModelSide("n", Task.CLASSIFICATION, ("stain", "glare")),
        ["x"],
        [det()],
        [cls(stain=0.9, glare=0.1)],
    )
    assert report.boxes is None
    assert "boxes" not in render_text(report)
    assert report.images[0].new_top == "stain" and report.images[0].old_top is None


# ------------------------------------------------------------------------------------------ JSON and text


def test_to_dict_round_trips_through_json() -> None:
    box = (0.1, 0.1, 0.2, 0.2)
    report = run([det(("stain", 0.9, box))], [det(("stain", 0.8, box), ("glare", 0.4, box))])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["old"] == {"path": "old-det", "task": "detection", "labels": ["stain", "glare"], "device": ""}
    assert data["top1"] == {"agreed": 1, "compared": 1, "agreement": 1.0}
    assert data["unmatched_labels"] == {"old_only": [], "new_only": []}
    assert data["confusion"] == {"labels": ["stain"], "counts": [[1]]}
    assert data["boxes"]["total"]["matched"] == 1 and data["boxes"]["total"]["only_new"] == 1
    assert [b["label"] for b in data["boxes"]["by_label"]] == ["stain", "glare"]
    assert data["images"][0]["image"] == "/data/line4/img0.jpg" and data["images"][0]["agree"] is True
    assert data["labels"][1]["max_abs_dp"] == pytest.approx(0.4)
    assert data["iou"] == 0.5 and data["threshold"] == 0.0
    assert data["images_compared"] == 1 and data["images_failed"] == 0 and data["failures"] == []


def columns(line: str) -> list[int]:
    """Where each cell of a table line ends (cells are two or more spaces apart; right-aligned columns
    end where their header ends)."""
    return [m.end() for m in re.finditer(r"\S+(?: \S+)*", line)]


def test_text_report() -> None:
    old = [cls(a=0.7, b=0.2, c=0.1), cls(a=0.1, b=0.3, c=0.6), cls(a=0.5, b=0.4, c=0.1)]
    new = [cls(a=0.7, b=0.2, c=0.1), cls(a=0.1, b=0.3, c=0.6), cls(a=0.2, b=0.7, c=0.1)]
    report = run(old, new, failures=[ImageFailure("/data/line4/bad/x.jpg", "not a recognised image")])
    text = render_text(report)
    lines = text.splitlines()
    assert lines[0] == "old: old-export (classification, 3 labels, cpu)"
    assert lines[1] == "new: new-export (classification, 3 labels, openvino:CPU)"
    assert lines[2] == "images: 3 compared, 1 not compared (under /data/line4/)"
    assert "top-1 agreement: 2/3 (66.7 %)" in lines
    table = lines[lines.index("probability by label (|dp| = |new - old|, per image)") + 1 :][:4]
    assert table[0].split() == [
        "label",
        "max",
        "|dp|",
        "mean",
        "|dp|",
        "mean",
        "old",
        "mean",
        "new",
        "max",
        "at",
    ]
    assert table[1].split() == ["a", "0.3000", "0.1000", "0.4333", "0.3333", "img2.jpg"]
    assert table[3].split() == ["c", "0", "0", "0.2667", "0.2667", "-"]
    for row in table[1:]:  # numbers right-aligned under their headers
        assert columns(row)[1:5] == columns(table[0])[1:5]
    confusion = lines[lines.index("top-1 confusion (rows: old, columns: new)") + 1 :][:4]
    assert report.confusion.labels == ABC  # b is only NEW's top-1 (once): still a row and a column
    assert [row.split() for row in confusion] == [
        ["old", "\\", "new", "a", "b", "c"],
        ["a", "1", "1", "0"],
        ["b", "0", "0", "0"],
        ["c", "0", "0", "1"],
    ]
    for row in confusion[1:]:
        assert columns(row)[1:] == columns(confusion[0])[1:]
    differs = lines[lines.index("top-1 differs on 1 of 3 images") + 1 :][:2]
    assert differs[1].split() == ["img2.jpg", "a", "0.5000", "b", "0.7000", "0.3000"]
    assert "not compared (1)" in lines and "  bad/x.jpg: not a recognised image" in lines
    assert "boxes" not in text and "labels only" not in text
    assert all(line == line.rstrip() for line in lines)


def test_text_report_small_differences_are_not_zero() -> None:
    report = run([cls(a=0.5, b=0.5)], [cls(a=0.50000015, b=0.49999985)])
    line = next(row for row in render_text(report).splitlines() if row.startswith("a "))
    assert line.split()[1:3] == ["1.5e-07", "1.5e-07"]


def test_text_report_detection_and_long_lists() -> None:
    box = (0.1, 0.1, 0.2, 0.2)
    n = SHOWN_IMAGES + 5
    report = run([det(("stain", 0.9, box))] * n, [det(("glare", 0.9, box))] * n)
    text = render_text(report)
    assert "boxes (matched by label, IoU >= 0.5, probability >= 0)" in text
    rows = {
        line.split()[0]: line.split()[1:]
        for line in text.splitlines()
        if line.startswith(("stain ", "glare ", "all "))
    }
    assert rows["stain"][:4] == ["0", "-", str(n), "0"]
    assert rows["glare"][:4] == ["0", "-", "0", str(n)]
    assert rows["all"][:4] == ["0", "-", str(n), str(n)]
    assert f"top-1 differs on {n} of {n} images" in text
    assert "... and 5 more (--json lists every image)" in text
    assert sum(1 for line in text.splitlines() if line.startswith("img")) == SHOWN_IMAGES


# --------------------------------------------------------------------------------------------- discovery


def test_discover_images(tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    (shots / "day2" / "cam1").mkdir(parents=True)
    (shots / ".cache").mkdir()
    for name in ("b.jpg", "a.PNG", "notes.txt", "day2/cam1/c.jpeg", "day2/d.webp", ".cache/e.jpg", ".f.jpg"):
        (shots / name).write_bytes(b"x")
    odd = tmp_path / "frame.raw"
    odd.write_bytes(b"x")
    found, failures = discover_images([shots, odd, shots / "b.jpg", tmp_path / "missing.jpg"])
    assert found == [
        shots / "a.PNG",
        shots / "b.jpg",
        shots / "day2" / "cam1" / "c.jpeg",
        shots / "day2" / "d.webp",
        odd,  # named: compared whatever its suffix (it may fail to decode, then it is listed)
    ]
    assert failures == [ImageFailure(str(tmp_path / "missing.jpg"), "no such file or folder")]
    assert discover_images([tmp_path / "empty"]) == (
        [],
        [ImageFailure(str(tmp_path / "empty"), "no such file or folder")],
    )
