"""Client mistakes are logged at INFO, once per kind per interval, never as tracebacks.

A broken or hostile client can send thousands of malformed requests a minute; one log line per kind and
interval (with how many were folded into it) says what is happening without drowning real errors.
Server faults keep their traceback, but also at most once per kind per interval.
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

INTERVAL_S = 60.0


class RateLimiter:
    """Says, per kind, whether to log now, and how many occurrences were folded since the last line."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._folded: dict[str, int] = {}

    def admit(self, kind: str) -> int | None:
        """None: fold this one into the next line. An int: log now; that many were folded before it."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._folded[kind] = self._folded.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._folded.pop(kind, 0)


class ClientErrorLog:
    def __init__(self, logger: logging.Logger, interval_s: float = INTERVAL_S) -> None:
        self._log = logger
        self._limiter = RateLimiter(interval_s)

    def mistake(self, kind: str, status: int, message: str) -> None:
        folded = self._limiter.admit(f"{status} {kind}")
        if folded is not None:
            more = f" (and {folded} more like it in {self._limiter.interval_s:g} s)" if folded else ""
            self._log.info("client error %d %s: %s%s", status, kind, message, more)

    def fault(self, kind: str, message: str, exc: BaseException) -> None:
        folded = self._limiter.admit(f"fault {kind}")
        if folded is not None:
            more = f" (and {folded} more in the last {self._limiter.interval_s:g} s)" if folded else ""
            self._log.error("%s%s", message, more, exc_info=exc)


class QuietProtocolErrors(logging.Filter):
    """For aiohttp's server logger: requests it rejects before any handler (a malformed request line or
    header, a body that cannot be decoded) are client mistakes: one INFO line per kind and interval."""

    CLIENT_ERRORS: ClassVar[tuple[type[BaseException], ...]] = (
        HttpProcessingError,
        RequestPayloadError,
        ConnectionError,
    )

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        super().__init__()
        self._limiter = RateLimiter(interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        client = isinstance(exc, self.CLIENT_ERRORS)
        folded = self._limiter.admit(("client " if client else "fault ") + type(exc).__name__)
        if folded is None:
            return False
        if client:
            reason = " ".join((getattr(exc, "message", None) or str(exc) or type(exc).__name__).split())
            record.msg = f"client error: {type(exc).__name__}: {reason}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        if folded:
            record.msg = f"{record.getMessage()} (and {folded} more like it)"
            record.args = ()
        return True


def quiet_aiohttp_server_log() -> None:
    """Install the filter once per process (apps may be created many times, e.g. in tests)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietProtocolErrors) for f in logger.filters):
        logger.addFilter(QuietProtocolErrors())
