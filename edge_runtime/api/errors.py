"""JSON error answers with the Custom Vision cloud API's codes (the container answers 500 text).

`answer_for` is the one boundary table from the package's errors (errors.py) to HTTP answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from edge_runtime.errors import (
    EdgeRuntimeError,
    ImageDecodeError,
    ImageFetchError,
    ImageFetchTooLargeError,
    ImageTooLargeError,
    InferenceError,
    ModelNotReady,
)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = json.dumps({"code": self.code, "message": self.message}) + "\n"
        return web.Response(
            status=self.status,
            body=body.encode(),
            headers={"Content-Type": "application/json", **self.headers},
        )


def bad_image(message: str) -> ApiError:
    return ApiError(400, "BadRequestImageFormat", message)


def image_too_big(message: str) -> ApiError:
    return ApiError(413, "BadRequestImageSizeBytes", message)


def image_dimensions(message: str) -> ApiError:
    return ApiError(400, "BadRequestImageDimensions", message)


def no_image(message: str) -> ApiError:
    return ApiError(400, "BadRequestImageNotProvided", message)


def bad_url(message: str) -> ApiError:
    return ApiError(400, "BadRequestImageUrl", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "missing or wrong Prediction-Key header")


def bad_request(message: str) -> ApiError:
    """A request that cannot be parsed: malformed multipart, undecodable encoding, bad headers."""
    return ApiError(400, "BadRequest", message)


def unsupported_encoding(message: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", message)


def body_timeout(message: str) -> ApiError:
    return ApiError(408, "RequestTimeout", message, {"Connection": "close"})


def busy(retry_after_s: int, what: str = "inference is saturated", status: int = 503) -> ApiError:
    return ApiError(status, "TooManyRequests", f"{what}; retry later", {"Retry-After": str(retry_after_s)})


def inference_failed(message: str) -> ApiError:
    """The model failed on this input although it loaded and warmed up (see /health/ready)."""
    return ApiError(500, "ModelInferenceFailed", message)


def not_ready(reason: str) -> ApiError:
    return ApiError(503, "ModelNotReady", reason, {"Retry-After": "5"})


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalServerError", message)


# The package's errors that a request can cause, and how each is answered (the message is the error's).
_ANSWERS: dict[type[EdgeRuntimeError], Callable[[str], ApiError]] = {
    ImageFetchTooLargeError: image_too_big,  # 413 BadRequestImageSizeBytes
    ImageFetchError: bad_url,  # 400 BadRequestImageUrl
    ImageTooLargeError: image_dimensions,  # 400 BadRequestImageDimensions
    ImageDecodeError: bad_image,  # 400 BadRequestImageFormat
    InferenceError: inference_failed,  # 500 ModelInferenceFailed
    ModelNotReady: not_ready,  # 503 ModelNotReady, Retry-After 5
}


def answer_for(exc: EdgeRuntimeError) -> ApiError | None:
    """The answer for an error a request caused; None for one no request should meet (a bug: 500).
    The most specific class in the table wins, like httpx's exception map."""
    for cls in type(exc).__mro__:
        answer = _ANSWERS.get(cls)
        if answer is not None:
            return answer(str(exc))
    return None


# Codes for aiohttp's own HTTP errors (no route, wrong method, ...), so every answer is JSON with a code.
HTTP_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    411: "LengthRequired",
    413: "BadRequestImageSizeBytes",
    415: "UnsupportedMediaType",
    417: "ExpectationFailed",
    431: "RequestHeaderFieldsTooLarge",
}
