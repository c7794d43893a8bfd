"""JSON error answers with the Custom Vision cloud API's codes (the container answers 500 text)."""

from __future__ import annotations

import json

from aiohttp import web


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


def busy(retry_after_s: int) -> ApiError:
    return ApiError(
        503, "TooManyRequests", "inference is saturated; retry later", {"Retry-After": str(retry_after_s)}
    )


def not_ready(reason: str) -> ApiError:
    return ApiError(503, "ModelNotReady", reason, {"Retry-After": "5"})
