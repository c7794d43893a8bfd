"""Detector predictions as rows rounded to 6 places, to compare with boxes worked out by hand."""

from __future__ import annotations

from edge_runtime.domain import Prediction

Row = tuple[str, int | None, float, tuple[float, ...]]  # tag name, tag id, probability, (l, t, w, h)


def rounded(predictions: tuple[Prediction, ...]) -> list[Row]:
    """Each prediction's name, id, probability and box (left, top, width, height), rounded to 6 places;
    every prediction must have a box."""
    out = []
    for p in predictions:
        box = p.bounding_box
        assert box is not None
        out.append(
            (
                p.tag_name,
                p.tag_id,
                round(p.probability, 6),
                tuple(round(v, 6) for v in (box.left, box.top, box.width, box.height)),
            )
        )
    return out
