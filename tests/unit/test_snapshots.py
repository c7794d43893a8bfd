"""The snapshot store: JPEGs with boxes, banner and ROI drawn, overlapping boxes merged, links, the count
and byte caps (oldest first, also under concurrent saves), and only ULID names served."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from factories import T0
from numpy.typing import NDArray

from edge_runtime.domain import BoundingBox
from edge_runtime.events.ids import new_event_id
from edge_runtime.events.snapshots import Drawing, SnapshotStore, merge_overlapping

STARTED = Drawing("started", "stain", 0.9)


def grey_frame(width: int = 200, height: int = 100, value: int = 128) -> NDArray[np.uint8]:
    return np.full((height, width, 3), value, np.uint8)


def decode(path: Path) -> NDArray[np.uint8]:
    import cv2

    data = np.frombuffer(path.read_bytes(), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a decodable image"
    return np.asarray(image, np.uint8)


def is_red(pixel: NDArray[np.uint8]) -> bool:
    b, g, r = (int(v) for v in pixel)
    return r > 150 and r - g > 60 and r - b > 60


def test_snapshot_is_a_jpeg_with_the_box_drawn_in_red(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps", max_count=10, max_bytes=10_000_000)
    event_id = new_event_id()
    # 200 x 100 frame, box from (50, 20) to (150, 80) in pixels.
    path = store.save(
        event_id, grey_frame(), Drawing("started", "stain", 0.9, (BoundingBox(0.25, 0.2, 0.5, 0.6),))
    )
    assert path == tmp_path / "snaps" / f"{event_id}.jpg"
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG SOI marker
    image = decode(path)
    assert image.shape == (100, 200, 3)
    assert all(is_red(image[y, 50]) for y in range(35, 75, 5)), "left edge"
    assert all(is_red(image[y, 150]) for y in range(35, 75, 5)), "right edge"
    assert all(is_red(image[80, x]) for x in range(60, 140, 10)), "bottom edge"
    assert not is_red(image[50, 100]) and abs(int(image[50, 100, 2]) - 128) < 12, "inside stays grey"
    assert not is_red(image[95, 195]), "outside stays grey"
    assert list((tmp_path / "snaps").iterdir()) == [path], "no temporary file left behind"


def test_an_ended_snapshot_is_the_current_frame_with_a_banner_only(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=10, max_bytes=10_000_000)
    image = decode(store.save(new_event_id(), grey_frame(640, 480, 90), Drawing("ended", "stain", 0.1)))
    assert image.shape == (480, 640, 3)
    below_banner = image[60:]
    assert np.abs(below_banner.astype(int) - 90).max() < 6, "no stale boxes: the frame as it is"
    assert np.abs(image[:30, :100].astype(int) - 90).max() > 50, "the banner says what ended"


def test_overlapping_boxes_are_drawn_as_one(tmp_path: Path) -> None:
    cells = [BoundingBox(0.30 + 0.05 * i, 0.4, 0.06, 0.1) for i in range(4)]  # a detector's neighbours
    assert merge_overlapping(cells) == [BoundingBox(0.30, 0.4, pytest.approx(0.21), pytest.approx(0.1))]
    apart = [BoundingBox(0.1, 0.1, 0.1, 0.1), BoundingBox(0.6, 0.6, 0.1, 0.1)]
    assert merge_overlapping(apart) == apart


def test_the_roi_is_outlined(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=10, max_bytes=10_000_000)
    roi = BoundingBox(0.5, 0.5, 0.25, 0.25)
    image = decode(
        store.save(new_event_id(), grey_frame(400, 400, 90), Drawing("started", "x", 0.9, (), roi))
    )
    b, g, r = (int(v) for v in image[280, 201])  # left edge of the ROI, below its name
    assert b > 200 and g > 150 and r < 80, (b, g, r)
    assert np.abs(image[350, 250].astype(int) - 90).max() < 6, "inside the ROI stays as it was"


def test_the_event_link_is_absolute_with_a_public_url(tmp_path: Path) -> None:
    assert SnapshotStore(tmp_path, 1, 1).url_for("E1") == "/snapshots/E1.jpg"
    store = SnapshotStore(tmp_path, 1, 1, "https://edge-3.plant/")
    assert store.url_for("E1") == "https://edge-3.plant/snapshots/E1.jpg"


def test_snapshot_count_cap_removes_the_oldest_first(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=3, max_bytes=10_000_000)
    ids = [new_event_id(T0 + i) for i in range(6)]
    for event_id in ids:
        store.save(event_id, grey_frame(), Drawing("started", "stain", 0.9))
    assert sorted(p.stem for p in tmp_path.glob("*.jpg")) == ids[3:]
    assert store.path_for(ids[0]) is None
    assert store.path_for(ids[5]) == tmp_path / f"{ids[5]}.jpg"


def test_snapshot_byte_cap_removes_the_oldest_first(tmp_path: Path) -> None:
    probe = SnapshotStore(tmp_path / "probe", max_count=10, max_bytes=10_000_000)
    size = (
        probe.save(new_event_id(), grey_frame(), Drawing("started", "stain", 0.9)).stat().st_size
    )  # same frame: same size
    store = SnapshotStore(tmp_path / "snaps", max_count=100, max_bytes=2 * size + size // 2)
    ids = [new_event_id(T0 + i) for i in range(5)]
    for event_id in ids:
        store.save(event_id, grey_frame(), Drawing("started", "stain", 0.9))
    kept = sorted((tmp_path / "snaps").glob("*.jpg"))
    assert [p.stem for p in kept] == ids[3:]
    assert sum(p.stat().st_size for p in kept) <= store.max_bytes


def test_snapshot_caps_hold_under_concurrent_saves(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=5, max_bytes=10_000_000)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(10):
                store.save(
                    new_event_id(T0 + offset * 100 + i), grey_frame(), Drawing("started", "stain", 0.9)
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(list(tmp_path.glob("*.jpg"))) == 5
    assert list(tmp_path.glob("*.tmp")) == []


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "..",
        "../01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",  # 27
        "01arz3ndektsv4rrffq69g5fav",  # lower case
        "01ARZ3NDEKTSV4RRFFQ69G5FAI",  # I is not Crockford base32
        "01ARZ3NDEKTSV4RRFFQ69G5F/V",
        "",
    ],
)
def test_path_for_rejects_non_ulid_names(tmp_path: Path, name: str) -> None:
    store = SnapshotStore(tmp_path / "snaps", max_count=10, max_bytes=10_000_000)
    (tmp_path / "x.jpg").write_bytes(b"secret")  # what "../x" would reach
    assert store.path_for(name) is None


def test_path_for_unknown_id_is_none(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=10, max_bytes=10_000_000)
    assert store.path_for(new_event_id()) is None
