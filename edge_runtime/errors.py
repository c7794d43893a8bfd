"""One exception tree for the whole package.

    EdgeRuntimeError
    ├── ConfigError                 bad settings or command-line values
    ├── ModelLoadError              an export that cannot be used (names the file and the problem)
    │   ├── ModelIntegrityError     ModelFileSHA1 does not match the file
    │   └── UnsupportedModelError   a real export we cannot run (ONNX 1.0, TensorFlow, ...)
    ├── DeviceUnavailableError      the requested device is not on this machine
    ├── InferenceError              the backend failed while running a loaded model
    ├── ModelNotReady               no model serves yet: loading, or its load failed
    ├── Overloaded                  every inference slot stayed taken for the whole bounded wait
    ├── SinkUnavailableError        a sink cannot take messages now (they wait in the outbox)
    ├── SourceError                 a camera source cannot be opened (message safe to log: no credentials)
    └── ImageError                  bytes that are not a usable image
        ├── ImageDecodeError        not an image, or a broken one
        ├── ImageTooLargeError      more pixels than the configured limit
        └── ImageFetchError         an image URL refused (scheme, internal address) or its download failed
            └── ImageFetchTooLargeError  the download is bigger than the body limit

Foreign errors (onnxruntime, openvino, PIL, zipfile, json, aiohttp, OpenCV) are translated where they
are raised, so callers only ever catch these. The HTTP answer for each is one table, api/errors.py's
`answer_for`.
"""

from __future__ import annotations

from pathlib import Path


class EdgeRuntimeError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(EdgeRuntimeError):
    pass


class ModelLoadError(EdgeRuntimeError):
    """A model export could not be loaded; the message always names the file."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelIntegrityError(ModelLoadError):
    pass


class UnsupportedModelError(ModelLoadError):
    pass


class DeviceUnavailableError(EdgeRuntimeError):
    pass


class InferenceError(EdgeRuntimeError):
    pass


class ImageError(EdgeRuntimeError):
    pass


class ImageDecodeError(ImageError):
    pass


class ImageTooLargeError(ImageError):
    pass


class SinkUnavailableError(EdgeRuntimeError):
    """A sink cannot take messages right now; they wait in the outbox."""


class ImageFetchError(ImageError):
    """The URL or an address it leads to is not allowed, or the download failed; message is user-facing."""


class ImageFetchTooLargeError(ImageFetchError):
    pass


class SourceError(EdgeRuntimeError):
    """A camera source could not be opened; the message is safe to log (no credentials)."""


class ModelNotReady(EdgeRuntimeError):
    """No model serves yet: it is loading, or the load failed (`error`)."""

    def __init__(self, error: str | None) -> None:
        self.error = error
        super().__init__(f"model failed to load: {error}" if error else "model is loading")


class Overloaded(EdgeRuntimeError):
    """Every inference slot stayed taken for the whole bounded wait."""
