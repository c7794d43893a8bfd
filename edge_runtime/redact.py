"""Credentials never reach an error message, a log line, a status or a reported property.

    redact_url(url)      one URL for display: userinfo (user and password) -> ***, query -> ?***,
                         fragment -> #***:  https://u:pw@host:99999/m.zip?sig=x -> https://***@host:99999/m.zip?***
    scrub(text, *known)  any text that may quote URLs (messages of aiohttp, yarl, urllib, OpenCV, ...):
                         every URL in it redacted, and each `known` URL wherever it appears verbatim
    scrub_tree(tree)     a status (dicts, lists, strings) with every string scrubbed
    ScrubFilter          a logging filter for handlers: a record whose message quotes a URL is redacted

Both work on the characters, never through urlsplit: a URL that does not parse (port 99999, a broken
IPv6 bracket, a raw '@', ':' or '/' in the password) is redacted like a good one, and redacting
twice changes nothing. Where a URL is ambiguous they hide too much rather than too little.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
_PREFIX = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//")
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://\S+")


def redact_url(url: str) -> str:
    """The URL with its userinfo, query and fragment masked; the scheme, host, port and path kept."""
    prefix_match = _PREFIX.match(url)
    prefix = prefix_match.group(0) if prefix_match else ""
    rest = url[len(prefix) :]
    end = len(rest)
    for stop in "?#":
        found = rest.find(stop)
        if found >= 0:
            end = min(end, found)
    head, tail = rest[:end], rest[end:]
    at = head.rfind("@")
    if at >= 0:  # the last '@' before the query: a raw '@', ':' or '/' in the password stays hidden
        head = MASK + head[at:]
    elif "@" in tail and "/" not in head:
        return prefix + MASK  # a raw '?' or '#' inside the password: nothing after '//' can be trusted
    if tail.startswith("?"):
        return prefix + head + "?" + MASK + ("#" + MASK if "#" in tail else "")
    if tail:
        return prefix + head + "#" + MASK
    return prefix + head


def scrub(text: str, *known: str) -> str:
    """`text` with every URL in it redacted (the known ones first: they may hold spaces)."""
    for url in known:
        if url:
            text = text.replace(url, redact_url(url))
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def scrub_tree(tree: object) -> object:
    """A JSON-like tree (a status) with scrub applied to every string in it."""
    if isinstance(tree, str):
        return scrub(tree)
    if isinstance(tree, dict):
        return {key: scrub_tree(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [scrub_tree(item) for item in tree]
    return tree


class ScrubFilter(logging.Filter):
    """For a log handler (handler.addFilter): the last line of defence for messages quoting URLs.

    Attach it to handlers, not loggers: a logger's filters never see records from its children."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


SECRET_KEYS = frozenset({"password", "connection_string", "prediction_key", "admin_key", "viewer_key"})


def masked_tree(tree: object) -> object:
    """A configuration tree fit to show: secrets (SecretStr values, SECRET_KEYS) as MASK, every value
    under a key ending in "url" redacted (a camera URL shows its host, not its credentials)."""
    from pydantic import SecretStr

    if isinstance(tree, dict):
        out: dict[object, object] = {}
        for key, value in tree.items():
            if isinstance(value, SecretStr) or (str(key) in SECRET_KEYS and value):
                out[key] = MASK
            elif str(key).endswith("url") and isinstance(value, str):
                out[key] = redact_url(value)
            else:
                out[key] = masked_tree(value)
        return out
    if isinstance(tree, list | tuple):
        return [masked_tree(item) for item in tree]
    if isinstance(tree, SecretStr):
        return MASK
    return tree
