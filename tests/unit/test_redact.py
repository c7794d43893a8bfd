"""redact_url and scrub: credentials never survive, whatever the URL looks like (parseable or not)."""

from __future__ import annotations

import logging

import pytest

from edge_runtime.redact import ScrubFilter, redact_url, scrub, scrub_tree

SECRETS = ("SECRET", "TOKEN", "sig=", "p@ss", "s3cr")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # userinfo: user AND password hidden
        ("rtsp://u:SECRET@h:554/s", "rtsp://***@h:554/s"),
        ("https://TOKEN@github.example/org/repo.zip", "https://***@github.example/org/repo.zip"),
        ("rtsp://admin:p%40ss@10.0.0.21:554/stream1", "rtsp://***@10.0.0.21:554/stream1"),
        # a raw '@' or ':' in the password: the last '@' of the authority ends the userinfo
        ("rtsp://admin:p@ss:w@rd@cam:554/s", "rtsp://***@cam:554/s"),
        ("rtsp://ad:min:SECRET@cam/s", "rtsp://***@cam/s"),
        # query and fragment
        ("https://acct.blob.example/m/v7.zip?sv=1&sig=SECRET", "https://acct.blob.example/m/v7.zip?***"),
        ("https://u:SECRET@127.0.0.1:99999/m.zip?sig=S", "https://***@127.0.0.1:99999/m.zip?***"),
        ("https://h/m.zip#TOKEN", "https://h/m.zip#***"),
        ("https://h/m.zip?sig=SECRET#frag", "https://h/m.zip?***#***"),
        ("https://h/m.zip#frag?sig=SECRET", "https://h/m.zip#***"),
        # ports urlsplit refuses (out of range, not a number): still redacted, never "unparseable"
        ("rtsp://u:SECRET@h:99999/s", "rtsp://***@h:99999/s"),
        ("rtsp://u:SECRET@h:abc/s", "rtsp://***@h:abc/s"),
        # IPv6, good and broken
        ("rtsp://u:SECRET@[fe80::1]:554/s", "rtsp://***@[fe80::1]:554/s"),
        ("rtsp://[fe80::1%25eth0]:554/s?TOKEN", "rtsp://[fe80::1%25eth0]:554/s?***"),
        ("https://u:SECRET@[::1/m.zip?sig=S", "https://***@[::1/m.zip?***"),
        # no scheme, scheme-relative
        ("u:SECRET@cam.local:554/stream", "***@cam.local:554/stream"),
        ("//u:SECRET@cam/s", "//***@cam/s"),
        ("cam.local/snap.jpg?token=SECRET", "cam.local/snap.jpg?***"),
        # a password with a raw '/', '?' or '#': nothing of it survives
        ("rtsp://u:s3cr/et@cam/s", "rtsp://***@cam/s"),
        ("rtsp://u:s3cr?et@cam/s", "rtsp://***"),
        ("rtsp://u:s3cr#et@cam/s", "rtsp://***"),
        # nothing to hide
        ("rtsp://cam:554/stream", "rtsp://cam:554/stream"),
        ("synthetic://conveyor", "synthetic://conveyor"),
        ("/videos/line1.mp4", "/videos/line1.mp4"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    shown = redact_url(url)
    assert shown == expected
    assert not any(secret in shown for secret in SECRETS)
    assert redact_url(shown) == shown  # idempotent: redacting twice changes nothing


@pytest.mark.parametrize(
    "message",
    [
        # aiohttp's InvalidUrlClientError is the URL itself
        "InvalidUrlClientError: https://u:SECRET@127.0.0.1:99999/m.zip?sig=SECRET",
        # aiohttp's ClientResponseError quotes the URL
        "400, message='Bad Request', url='https://acct.blob.example/m/v7.zip?sv=1&sig=SECRET'",
        # yarl's repr
        "cannot fetch URL('https://u:SECRET@h/m.zip')",
        "<urlopen error rtsp://admin:p@ss@cam/s: refused>",
        "first http://a:SECRET@h1/x?TOKEN then rtsps://TOKEN@h2:322/y",
    ],
)
def test_scrub_redacts_every_url_in_a_message(message: str) -> None:
    cleaned = scrub(message)
    assert not any(secret in cleaned for secret in SECRETS), cleaned
    assert "***" in cleaned
    assert scrub(cleaned) == cleaned


def test_scrub_keeps_the_rest_of_the_message() -> None:
    cleaned = scrub("400, message='Bad Request', url='https://h/m/v7.zip?sig=SECRET'")
    assert cleaned.startswith("400, message='Bad Request', url='https://h/m/v7.zip?***")
    assert scrub("Cannot connect to host 127.0.0.1:1 ssl:default") == (
        "Cannot connect to host 127.0.0.1:1 ssl:default"
    )


def test_scrub_replaces_a_known_url_even_where_it_has_spaces() -> None:
    url = "https://u:SE CRET@h/m.zip?sig=SE CRET"
    cleaned = scrub(f"InvalidUrlClientError: {url} (bad)", url)
    assert "CRET" not in cleaned and "SE" not in cleaned.replace("InvalidUrlClientError", "")
    assert cleaned == "InvalidUrlClientError: https://***@h/m.zip?*** (bad)"


def test_scrub_tree_scrubs_every_string_of_a_status() -> None:
    status = {"model": {"error": "x https://u:SECRET@h/m?sig=TOKEN", "update": 3}, "l": ["rtsp://TOKEN@c/s"]}
    assert scrub_tree(status) == {
        "model": {"error": "x https://***@h/m?***", "update": 3},
        "l": ["rtsp://***@c/s"],
    }


def test_scrub_filter_redacts_log_records() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "failed: %s (%d)", ("rtsp://u:SECRET@c/s", 3), None
    )
    assert ScrubFilter().filter(record) is True
    assert record.getMessage() == "failed: rtsp://***@c/s (3)"
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "nothing %s", ("here",), None)
    assert ScrubFilter().filter(plain) and plain.args == ("here",)  # untouched
