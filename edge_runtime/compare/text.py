"""The report for a terminal (`edge-runtime compare` without --json)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from edge_runtime.compare.report import NONE, ComparisonReport

SHOWN_IMAGES = 20  # the text report lists at most this many disagreeing images (JSON has all)


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _dp(value: float | None) -> str:
    """A probability difference: small ones in scientific notation (1.5e-07 must not read 0.0000)."""
    if value is None:
        return "-"
    if value == 0.0:
        return "0"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.4f}"


def _common_folder(names: Sequence[str]) -> str:
    """The folder every image name is under ('' when none, or for a single image's own folder)."""
    folders = [os.path.dirname(name) for name in names]
    if not folders or any(not folder for folder in folders):
        return ""
    try:
        common = os.path.commonpath(folders)
    except ValueError:  # absolute and relative names mixed
        return ""
    return common if common not in ("", os.sep) else ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Plain aligned columns: text left, numbers right, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in (header, *rows):
        cells = [
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(row, widths, right, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _top(label: str | None, probability: float | None) -> str:
    return NONE if label is None else f"{label} {probability:.4f}"


def render_text(report: ComparisonReport) -> str:
    """The report for a terminal: plain aligned columns, one section per question. Image names are shown
    under the folder they all share (named once); --json keeps them whole."""
    folder = _common_folder([i.image for i in report.images] + [f.image for f in report.failures])

    def shown(name: str | None) -> str:
        if name is None:
            return "-"
        return os.path.relpath(name, folder) if folder else name

    out: list[str] = []
    for role, side in (("old", report.old), ("new", report.new)):
        device = f", {side.device}" if side.device else ""
        out.append(f"{role}: {side.path} ({side.task.value}, {len(side.labels)} labels{device})")
    failed = f", {len(report.failures)} not compared" if report.failures else ""
    under = f" (under {folder}{os.sep})" if folder else ""
    out.append(f"images: {len(report.images)} compared{failed}{under}")
    out.append("")
    if report.agreement is None:
        out.append("top-1 agreement: - (no image compared)")
    else:
        out.append(f"top-1 agreement: {report.agreed}/{len(report.images)} ({100 * report.agreement:.1f} %)")
    if report.old_only_labels or report.new_only_labels:
        out.append(f"labels only in old: {', '.join(report.old_only_labels) or '-'}")
        out.append(f"labels only in new: {', '.join(report.new_only_labels) or '-'}")
    out.append("")

    if report.labels:
        out.append("probability by label (|dp| = |new - old|, per image)")
        rows = [
            [
                s.label,
                _dp(s.max_abs_dp),
                _dp(s.mean_abs_dp),
                _f(s.mean_old),
                _f(s.mean_new),
                shown(s.worst_image),
            ]
            for s in report.labels
        ]
        header = ["label", "max |dp|", "mean |dp|", "mean old", "mean new", "max at"]
        out += _table(header, rows, [False, True, True, True, True, False])
    else:
        out.append("probability by label: no label in both models")
    out.append("")

    if report.confusion.labels:
        out.append("top-1 confusion (rows: old, columns: new)")
        names = report.confusion.labels
        rows = [
            [name, *(str(n) for n in counts)]
            for name, counts in zip(names, report.confusion.counts, strict=True)
        ]
        out += _table(["old \\ new", *names], rows, [False, *(True for _ in names)])
        out.append("")

    total = report.box_total
    if report.boxes is not None and total is not None:
        out.append(f"boxes (matched by label, IoU >= {report.iou:g}, probability >= {report.threshold:g})")
        rows = [
            [
                label,
                str(b.matched),
                _f(b.mean_iou),
                str(b.only_old),
                str(b.only_new),
                _dp(b.max_abs_dp),
                _dp(b.mean_abs_dp),
            ]
            for label, b in [*((b.label, b) for b in report.boxes), ("all", total)]
        ]
        header = ["label", "matched", "mean IoU", "only old", "only new", "max |dp|", "mean |dp|"]
        out += _table(header, rows, [False, True, True, True, True, True, True])
        out.append("")

    differing = [image for image in report.images if not image.agree]
    if differing:
        out.append(f"top-1 differs on {len(differing)} of {len(report.images)} images")
        rows = [
            [
                shown(d.image),
                _top(d.old_top, d.old_top_probability),
                _top(d.new_top, d.new_top_probability),
                _dp(d.max_abs_dp),
            ]
            for d in differing[:SHOWN_IMAGES]
        ]
        out += _table(["image", "old top-1", "new top-1", "max |dp|"], rows, [False, False, False, True])
        if len(differing) > SHOWN_IMAGES:
            out.append(f"... and {len(differing) - SHOWN_IMAGES} more (--json lists every image)")
        out.append("")

    if report.failures:
        out.append(f"not compared ({len(report.failures)})")
        out += [f"  {shown(failure.image)}: {failure.error}" for failure in report.failures]
        out.append("")
    return "\n".join(out).rstrip() + "\n"
