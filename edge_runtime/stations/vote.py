"""A station's vote: which defect rules the inspected frames meet (pure, table-tested).

A rule holds when at least `votes` of the inspected frames (every camera's, or only the rule's
`cameras`) show its tag at `min_probability` or above in any of its ROIs; `votes: 1` means any frame.
A part fails when any rule holds. A pass needs every frame of every camera (the caller's part).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_runtime.settings import DefectSettings
from edge_runtime.stations.verdict import Defect, FrameEvidence


def defects_found(rules: Sequence[DefectSettings], frames: Sequence[FrameEvidence]) -> tuple[Defect, ...]:
    found = []
    for rule in rules:
        votes, best, where = 0, 0.0, ("", "")
        for frame in frames:
            if rule.cameras and frame.camera not in rule.cameras:
                continue
            hit = False
            for roi in frame.rois:
                if rule.rois and roi.roi not in rule.rois:
                    continue
                for p in roi.predictions:
                    if p.tag_name != rule.tag or p.probability < rule.min_probability:
                        continue
                    if p.bounding_box is not None and p.bounding_box.area < rule.min_box_area:
                        continue
                    hit = True
                    if p.probability > best:
                        best, where = p.probability, (frame.camera, roi.roi)
            votes += hit
        if votes >= rule.votes:
            found.append(Defect(rule.tag, best, votes, rule.votes, where[0], where[1]))
    return tuple(found)
