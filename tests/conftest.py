"""Shared fixtures: where the real Custom Vision fixtures live, test images, synthetic exports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:  # `import synthetic` from every test module, without __init__.py files
    sys.path.insert(0, str(TESTS))

import synthetic  # noqa: E402
from synthetic import CLASSIFIER_LABELS, encode, pattern_image  # noqa: E402

# <repo>/../shared/customvision-models, computed from this file (no environment variable needed).
SHARED_CANDIDATES = tuple(
    dict.fromkeys(
        ((REPO / ".." / "shared" / "customvision-models").resolve(), Path("/work/shared/customvision-models"))
    )
)


def find_shared_models() -> Path | None:
    for candidate in SHARED_CANDIDATES:
        if (candidate / "onnx-converted-meter-compact" / "model.onnx").is_file():
            return candidate
    return None


SHARED_MODELS = find_shared_models()
SHARED_MISSING = (
    f"Custom Vision fixtures not found (looked in {', '.join(str(c) for c in SHARED_CANDIDATES)}); "
    "these tests need ../shared/customvision-models beside the repository"
)


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if SHARED_MODELS is None:
        pytest.skip(SHARED_MISSING)
    return SHARED_MODELS


@pytest.fixture(scope="session")
def meter_dir(shared_models: Path) -> Path:
    """The real meter classifier export (ONNX, General compact): the one `meter_dir` for every test."""
    return shared_models / "onnx-converted-meter-compact"


@pytest.fixture(scope="session")
def jpeg_of() -> Callable[..., bytes]:
    def make(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
        return encode(pattern_image(width, height, seed), "JPEG", quality=92)

    return make


@pytest.fixture(scope="session")
def classifier_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compact multiclass classifier export (fp32, 32x32 input, softmax), with manifest and sidecar."""
    folder = tmp_path_factory.mktemp("classifier") / "export"
    return synthetic.write_export(
        folder,
        synthetic.classifier_model(len(CLASSIFIER_LABELS)),
        CLASSIFIER_LABELS,
        metadata=synthetic.classification_sidecar(),
    )
