"""FFmpeg's reasons (through PyAV's exceptions) become operator messages, never quoting the URL.

PyAV raises its errors with the URL as `filename`, so `str(exc)` carries the camera's credentials:
describe_av_error must name the reason from the exception's class and strerror only.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import av
import pytest

from edge_runtime.errors import SourceError
from edge_runtime.sources.decoding import HwAccel
from edge_runtime.sources.pyav_reader import PyAvReader, describe_av_error

USER, SECRET = "operator", "s3cr3t-Pa55"
URL = f"rtsp://{USER}:{SECRET}@10.1.2.3:554/Streaming/Channels/101?token={SECRET}"
LEAKS = (SECRET, f"{USER}:", "10.1.2.3", "Streaming/Channels")  # nothing of the URL at all

CODE = av.error.ErrorType  # FFmpeg's error codes (FFERRTAG) as PyAV passes them to its exceptions


def clean(message: str) -> str:
    leaked = [part for part in LEAKS if part in message]
    assert not leaked, f"{message!r} quotes the URL: {leaked}"
    return message


def test_pyavs_own_message_does_quote_the_url() -> None:
    """Why the table below matters: str() of a PyAV error is `[Errno N] reason: '<url>'`."""
    exc = av.error.HTTPUnauthorizedError(
        CODE.HTTP_UNAUTHORIZED.value, "Server returned 401 Unauthorized", URL
    )
    assert SECRET in str(exc)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            av.error.HTTPNotFoundError(CODE.HTTP_NOT_FOUND.value, "Server returned 404 Not Found", URL),
            "404 Not Found: the camera has no stream at this path",
        ),
        (
            av.error.HTTPUnauthorizedError(
                CODE.HTTP_UNAUTHORIZED.value, "Server returned 401 Unauthorized (authorization failed)", URL
            ),
            "401 Unauthorized: check the camera's user name and password",
        ),
        (
            av.error.HTTPForbiddenError(
                CODE.HTTP_FORBIDDEN.value, "Server returned 403 Forbidden (access denied)", URL
            ),
            "403 Forbidden: the camera refused this user",
        ),
        (
            av.error.ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused", URL),
            "Connection refused",
        ),
        (
            av.error.ConnectionResetError(errno.ECONNRESET, "Connection reset by peer", URL),
            "Connection reset by peer",
        ),
        (av.error.OSError(errno.EHOSTUNREACH, "No route to host", URL), "No route to host"),
        (av.error.OSError(errno.EIO, "Input/output error", URL), "Input/output error"),
        (
            av.error.HTTPServerError(
                CODE.HTTP_SERVER_ERROR.value, "Server returned 5XX Server Error reply", URL
            ),
            "Server returned 5XX Server Error reply",
        ),
        (
            av.error.ExitError(
                CODE.EXIT.value, "Immediate exit requested", URL
            ),  # FFmpeg's interrupt: the timeout
            "timed out after 2.5 s (no answer from the source)",
        ),
        (
            av.error.TimeoutError(errno.ETIMEDOUT, "Connection timed out", URL),
            "timed out after 2.5 s (no answer from the source)",
        ),
        (TimeoutError(), "timed out after 2.5 s (no answer from the source)"),
        (
            av.error.InvalidDataError(
                CODE.INVALIDDATA.value, "Invalid data found when processing input", URL
            ),
            "invalid data: not a video stream FFmpeg can read (wrong URL, path or format)",
        ),
        (
            av.error.DecoderNotFoundError(CODE.DECODER_NOT_FOUND.value, "Decoder not found", URL),
            "unsupported codec: PyAV's FFmpeg has no decoder for it",
        ),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused", URL), "Connection refused"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "Name or service not known"),
        (
            av.error.HTTPOtherClientError(
                CODE.HTTP_OTHER_4XX.value, "Server returned 4XX Client Error, but not one of 40{0,1,3,4}", URL
            ),
            "Server returned 4XX Client Error, but not one of 40{0,1,3,4}",
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_describe_av_error_names_the_reason_without_the_url(exc: BaseException, expected: str) -> None:
    assert clean(describe_av_error(exc, 2.5)) == expected


@pytest.mark.parametrize(
    "exc",
    [av.error.UnknownError(CODE.UNKNOWN.value, "", URL), OSError(errno.EIO, "", URL)],
    ids=["av-unknown-empty-strerror", "oserror-empty-strerror"],
)
def test_an_error_without_a_reason_still_never_quotes_the_url(exc: BaseException) -> None:
    message = clean(describe_av_error(exc, 2.5))
    assert message, "an empty reason tells an operator nothing"


# --- the same through a real open ---------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_refused_rtsp_open_says_refused_without_the_credentials() -> None:
    url = f"rtsp://{USER}:{SECRET}@127.0.0.1:{closed_port()}/Streaming/Channels/101"
    with pytest.raises(SourceError) as caught:
        PyAvReader(url, 2.0, 2.0, HwAccel.NONE)
    message = str(caught.value)
    assert message == "cannot open the stream: Connection refused"
    assert SECRET not in message and USER not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained av error


def test_a_file_that_is_not_video_says_invalid_data(tmp_path: Path) -> None:
    fake = tmp_path / "camera.mp4"
    fake.write_bytes(b"this is not an mp4 file\n" * 100)
    with pytest.raises(SourceError, match=r"^cannot open the stream: invalid data: not a video stream"):
        PyAvReader(str(fake), 2.0, 2.0, HwAccel.NONE, file_loop=True)
