"""Client mistakes logged once per kind and interval at INFO; server faults keep their traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError

from edge_runtime.api import client_errors
from edge_runtime.api.client_errors import ClientErrorLog, QuietProtocolErrors, RateLimiter


class Clock:
    """Stands in for the module's `time`: monotonic() is whatever the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(client_errors, "time", fake)
    return fake


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.client_errors")
    caplog.set_level(logging.DEBUG, log.name)
    yield log
    for f in list(log.filters):
        log.removeFilter(f)


def raised(exc: BaseException) -> BaseException:
    """The exception with a traceback, as a logger sees it inside `except`."""
    try:
        raise exc
    except BaseException as caught:
        return caught


# ---------------------------------------------------------------------------------------------- RateLimiter


def test_rate_limiter_folds_repeats_within_the_interval(clock: Clock) -> None:
    limiter = RateLimiter(interval_s=60)
    assert limiter.admit("400 multipart") == 0  # the first is logged, nothing folded before it
    assert [limiter.admit("400 multipart") for _ in range(5)] == [None] * 5
    clock.now += 59.9
    assert limiter.admit("400 multipart") is None
    clock.now += 0.1
    assert limiter.admit("400 multipart") == 6  # logged, and says how many were folded
    assert limiter.admit("400 multipart") is None
    clock.now += 600
    assert limiter.admit("400 multipart") == 1
    clock.now += 600
    assert limiter.admit("400 multipart") == 0  # the count starts again after each line


def test_rate_limiter_kinds_are_independent(clock: Clock) -> None:
    limiter = RateLimiter(interval_s=10)
    assert limiter.admit("a") == 0
    assert limiter.admit("b") == 0
    assert limiter.admit("a") is None
    clock.now += 5
    assert limiter.admit("c") == 0
    assert limiter.admit("b") is None
    clock.now += 5
    assert (limiter.admit("a"), limiter.admit("b"), limiter.admit("c")) == (1, 1, None)


# ------------------------------------------------------------------------------------------- ClientErrorLog


def test_mistakes_are_info_lines_without_traceback(
    clock: Clock, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    log = ClientErrorLog(logger, interval_s=60)
    for _ in range(3):
        log.mistake("BadRequest", 400, "the multipart body is truncated")
    log.mistake("Unauthorized", 401, "missing key")  # another kind: its own line
    log.mistake("BadRequest", 413, "too big")  # same kind, other status: its own line
    clock.now += 60
    log.mistake("BadRequest", 400, "no boundary")
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records] == [
        (logging.INFO, "client error 400 BadRequest: the multipart body is truncated", None),
        (logging.INFO, "client error 401 Unauthorized: missing key", None),
        (logging.INFO, "client error 413 BadRequest: too big", None),
        (logging.INFO, "client error 400 BadRequest: no boundary (and 2 more like it in 60 s)", None),
    ]


def test_faults_keep_their_traceback_but_are_rate_limited(
    clock: Clock, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    log = ClientErrorLog(logger, interval_s=30)
    first = raised(RuntimeError("boom"))
    log.fault("inference", "inference failed: boom", first)
    log.fault("inference", "inference failed: again", raised(RuntimeError("again")))
    log.fault("decode", "decoder crashed", raised(ValueError("x")))
    clock.now += 30
    last = raised(RuntimeError("later"))
    log.fault("inference", "inference failed: later", last)
    records = caplog.records
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.ERROR, "inference failed: boom"),
        (logging.ERROR, "decoder crashed"),
        (logging.ERROR, "inference failed: later (and 1 more in the last 30 s)"),
    ]
    assert records[0].exc_info is not None and records[0].exc_info[1] is first
    assert records[2].exc_info is not None and records[2].exc_info[1] is last
    assert "Traceback" in caplog.text and "RuntimeError: later" in caplog.text


# -------------------------------------------------------------------------------------- QuietProtocolErrors


def log_error(logger: logging.Logger, exc: BaseException) -> None:
    """What aiohttp's server does with an exception while handling a request."""
    logger.error("Error handling request from %s", "10.0.0.7", exc_info=raised(exc))


@pytest.mark.parametrize(
    "exc",
    [
        BadHttpMessage("Invalid method encountered:\n\n  b'G\\x00T'"),
        RequestPayloadError("Response payload is not completed"),
        ConnectionResetError("reset by peer"),
    ],
)
def test_protocol_client_errors_become_one_info_line_per_interval(
    clock: Clock, logger: logging.Logger, caplog: pytest.LogCaptureFixture, exc: BaseException
) -> None:
    logger.addFilter(QuietProtocolErrors(interval_s=60))
    for _ in range(4):
        log_error(logger, exc)
    clock.now += 60
    log_error(logger, exc)
    name = type(exc).__name__
    reason = " ".join((getattr(exc, "message", None) or str(exc)).split())
    assert [(r.levelname, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("INFO", logging.INFO, f"client error: {name}: {reason}"),
        ("INFO", logging.INFO, f"client error: {name}: {reason} (and 3 more like it)"),
    ]
    assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)
    assert "Traceback" not in caplog.text and "\n" not in caplog.records[0].getMessage()


def test_other_exceptions_keep_their_traceback_rate_limited(
    clock: Clock, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    logger.addFilter(QuietProtocolErrors(interval_s=60))
    log_error(logger, KeyError("handler bug"))
    log_error(logger, KeyError("handler bug"))
    log_error(logger, BadHttpMessage("bad header"))  # a client kind: its own count
    log_error(logger, ZeroDivisionError("other bug"))  # another fault kind: its own count
    clock.now += 61
    log_error(logger, KeyError("handler bug"))
    got = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert got == [
        (logging.ERROR, "Error handling request from 10.0.0.7", True),
        (logging.INFO, "client error: BadHttpMessage: bad header", False),
        (logging.ERROR, "Error handling request from 10.0.0.7", True),
        (logging.ERROR, "Error handling request from 10.0.0.7 (and 1 more like it)", True),
    ]
    assert caplog.text.count("Traceback") == 3 and "KeyError: 'handler bug'" in caplog.text


def test_records_without_an_exception_pass_untouched(
    clock: Clock, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    logger.addFilter(QuietProtocolErrors(interval_s=60))
    for _ in range(3):
        logger.warning("server %s", "busy")
        logger.error("no exception here", exc_info=False)
    assert [(r.levelno, r.msg, r.args) for r in caplog.records] == [
        (logging.WARNING, "server %s", ("busy",)),
        (logging.ERROR, "no exception here", ()),
    ] * 3


def test_the_filter_is_installed_once() -> None:
    server_log = logging.getLogger("aiohttp.server")
    before = list(server_log.filters)
    try:
        client_errors.quiet_aiohttp_server_log()
        client_errors.quiet_aiohttp_server_log()
        assert sum(isinstance(f, QuietProtocolErrors) for f in server_log.filters) == 1
    finally:
        for f in [f for f in server_log.filters if f not in before]:
            server_log.removeFilter(f)
