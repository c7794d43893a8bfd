"""JPEGs of each camera's last inspected frame, for people watching: encoded only when someone asks,
once per frame and size however many watch, and at most `fps` new ones per camera and size (a faster
asker gets the last one again). The overlays are drawn by the page from the inspection's JSON."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_runtime.sources.inspections import Inspection

WIDTHS = (320, 640, 1280)  # thumbnails, tablets, desktops: a few sizes keep the cache small
JPEG_QUALITY = 80

Offload = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Jpeg:
    sequence: int  # the inspection it shows
    body: bytes


def encode(image: NDArray[np.uint8], width: int) -> bytes:
    height, full = image.shape[:2]
    shown: NDArray[Any] = image
    if full > width:
        shown = cv2.resize(image, (width, max(1, round(height * width / full))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", shown, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf)


def width_for(asked: int) -> int:
    """The smallest cached size at least `asked` wide (the largest when none is)."""
    return next((w for w in WIDTHS if w >= asked), WIDTHS[-1])


class FrameJpegs:
    """Touched on the event loop only; the encoding runs on `offload` (the inference pool)."""

    def __init__(self, offload: Offload, fps: float) -> None:
        self._offload = offload
        self._period = 1.0 / fps
        self._done: dict[tuple[str, int], tuple[Jpeg, float]] = {}  # (camera, width) -> (jpeg, made at)
        self._pending: dict[tuple[str, int, int], asyncio.Future[Jpeg]] = {}

    async def get(self, inspection: Inspection, width: int) -> Jpeg:
        key = (inspection.camera, width)
        done = self._done.get(key)
        if done is not None:
            jpeg, made_at = done
            if jpeg.sequence == inspection.sequence or time.monotonic() - made_at < self._period:
                return jpeg
        pending_key = (inspection.camera, width, inspection.sequence)
        pending = self._pending.get(pending_key)
        if pending is None:
            pending = asyncio.ensure_future(self._encode(inspection, width))
            self._pending[pending_key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(pending_key, None))
        return await asyncio.shield(pending)  # one asker leaving does not cancel the others' encode

    async def _encode(self, inspection: Inspection, width: int) -> Jpeg:
        # The period counts from the encode's start: a 1080p encode's own time (~7 ms, more under load)
        # must not push every other frame inside the period (a page at live_fps 2 then refreshed ~1/s).
        started = time.monotonic()
        body = await self._offload(encode, inspection.frame.image, width)
        jpeg = Jpeg(inspection.sequence, body)
        self._done[(inspection.camera, width)] = (jpeg, started)
        return jpeg

    def forget(self, camera: str) -> None:
        for key in [k for k in self._done if k[0] == camera]:
            del self._done[key]
