"""The one boundary table from the package's errors to HTTP answers (api/errors.answer_for)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edge_runtime.api import errors as api
from edge_runtime.api.errors import ApiError, answer_for
from edge_runtime.errors import (
    ConfigError,
    DeviceUnavailableError,
    EdgeRuntimeError,
    ImageDecodeError,
    ImageError,
    ImageFetchError,
    ImageFetchTooLargeError,
    ImageTooLargeError,
    InferenceError,
    ModelLoadError,
    ModelNotReady,
    SinkUnavailableError,
    SourceError,
)

ANSWERS: dict[type[EdgeRuntimeError], tuple[int, str, Callable[[str], ApiError]]] = {
    ImageFetchTooLargeError: (413, "BadRequestImageSizeBytes", api.image_too_big),
    ImageFetchError: (400, "BadRequestImageUrl", api.bad_url),
    ImageTooLargeError: (400, "BadRequestImageDimensions", api.image_dimensions),
    ImageDecodeError: (400, "BadRequestImageFormat", api.bad_image),
    InferenceError: (500, "ModelInferenceFailed", api.inference_failed),
}


@pytest.mark.parametrize("cls", ANSWERS, ids=lambda cls: cls.__name__)
def test_each_error_has_its_answer(cls: type[EdgeRuntimeError]) -> None:
    status, code, helper = ANSWERS[cls]
    answer = answer_for(cls("the message"))
    assert answer is not None
    assert (answer.status, answer.code, answer.message, answer.headers) == (status, code, "the message", {})
    # Byte for byte what the routes answered with the helper before the table existed.
    assert answer.response().body == helper("the message").response().body


def test_a_model_not_ready_is_503_with_retry_after_and_says_why() -> None:
    loading, failed = answer_for(ModelNotReady(None)), answer_for(ModelNotReady("corrupt graph"))
    assert loading is not None and failed is not None
    assert (loading.status, loading.code, loading.message) == (503, "ModelNotReady", "model is loading")
    assert failed.message == "model failed to load: corrupt graph"
    assert loading.headers == {"Retry-After": "5"}


def test_the_most_specific_class_wins() -> None:
    class Deeper(ImageFetchTooLargeError):
        pass

    answer = answer_for(Deeper("big"))
    assert answer is not None and answer.status == 413


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("x"),
        DeviceUnavailableError("x"),
        ModelLoadError("m", "x"),
        SinkUnavailableError("x"),
        SourceError("x"),
        ImageError("x"),
        EdgeRuntimeError("x"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_errors_no_request_should_meet_have_no_answer(exc: EdgeRuntimeError) -> None:
    assert answer_for(exc) is None


def test_the_tree_is_closed() -> None:
    assert issubclass(ImageFetchTooLargeError, ImageFetchError)
    assert issubclass(ImageFetchError, ImageError)
    assert issubclass(SourceError, EdgeRuntimeError)
