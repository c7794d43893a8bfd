"""Where the picture lies inside the network input, so that boxes found in input pixels come back to the
original image.

`InputGeometry` is made by preprocessing (`preprocess.prepare`) for every image and handed, with the
tensor, to the decoder (`postprocess.postprocess`): a letterbox shrinks the picture and centres it on grey
padding, a stretch fills the input. The arithmetic of the letterbox is AutoML for Images' YOLOv5 recipe
(Microsoft's `yolo_onnx_preprocessing_utils.py`, documented with the AutoML ONNX inference how-to):
scale r = min(input_h / h, input_w / w) (at most 1 without upscaling), resized size round(w r) x
round(h r), padding split as round(d / 2 - 0.1) before and the rest after, grey 114, OpenCV's bilinear
resize; boxes lose the padding, are clipped to the resized picture and divided by its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

PAD_GREY = 114  # the letterbox's padding value, every channel


@dataclass(frozen=True, slots=True)
class InputGeometry:
    """The picture's place in the network input, in input pixels: `content` is (left, top, width, height)
    of the (resized) picture; the rest of `input_size` (w, h) is padding."""

    input_size: tuple[int, int]
    content: tuple[int, int, int, int]

    @classmethod
    def filling(cls, input_size: tuple[int, int]) -> InputGeometry:
        """A picture stretched (or cropped) to the whole input."""
        return cls(input_size, (0, 0, input_size[0], input_size[1]))

    def to_fractions(self, xyxy: NDArray[np.float64]) -> NDArray[np.float64]:
        """[N, 4] x1, y1, x2, y2 in input pixels -> the same corners as fractions of the original picture,
        clipped to [0, 1]."""
        left, top, width, height = self.content
        out = np.empty_like(xyxy, dtype=np.float64)
        out[:, 0::2] = (xyxy[:, 0::2] - left) / width
        out[:, 1::2] = (xyxy[:, 1::2] - top) / height
        clipped: NDArray[np.float64] = np.clip(out, 0.0, 1.0)
        return clipped


def letterbox_geometry(width: int, height: int, input_size: tuple[int, int], scale_up: bool) -> InputGeometry:
    """Where a width x height picture goes in a letterboxed input of `input_size` (w, h)."""
    target_w, target_h = input_size
    ratio = min(target_h / height, target_w / width)
    if not scale_up:
        ratio = min(ratio, 1.0)
    resized_w, resized_h = round(width * ratio), round(height * ratio)
    left = round((target_w - resized_w) / 2 - 0.1)
    top = round((target_h - resized_h) / 2 - 0.1)
    return InputGeometry(input_size, (left, top, resized_w, resized_h))


def letterbox_image(image: Image.Image, geometry: InputGeometry) -> Image.Image:
    """The RGB picture resized (OpenCV bilinear) into `geometry` and padded with grey 114."""
    pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    left, top, width, height = geometry.content
    if (pixels.shape[1], pixels.shape[0]) != (width, height):
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    target_w, target_h = geometry.input_size
    padded = cv2.copyMakeBorder(
        pixels,
        top,
        target_h - height - top,
        left,
        target_w - width - left,
        cv2.BORDER_CONSTANT,
        value=(PAD_GREY, PAD_GREY, PAD_GREY),
    )
    return Image.fromarray(padded, "RGB")
