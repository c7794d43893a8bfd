"""Which files to compare: the paths named on the command line, folders searched for images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_runtime.compare.report import ImageFailure

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def discover_images(paths: Sequence[Path]) -> tuple[list[Path], list[ImageFailure]]:
    """The images to compare: each file named (whatever its suffix), and every file with an image suffix
    under each folder named (recursive, sorted, hidden files and folders skipped). A path that does not
    exist is a failure, not an error; a file found twice is compared once."""
    found: dict[Path, None] = {}
    failures: list[ImageFailure] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            found.update(dict.fromkeys(inside))
        elif path.is_file():
            found[path] = None
        else:
            failures.append(ImageFailure(str(path), "no such file or folder"))
    return list(found), failures
