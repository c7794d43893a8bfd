"""The one protocol every backend implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


class Backend(Protocol):
    @property
    def device(self) -> str:
        """The device actually in use, shown in /health and metrics ("cpu", "cuda", "openvino:GPU")."""

    def run(self, tensor: NDArray[np.floating[Any]]) -> Mapping[str, Any]:
        """Run one input tensor; outputs by name. Safe to call from several threads at once."""

    def close(self) -> None:
        """Release the session / compiled model."""
