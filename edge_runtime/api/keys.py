"""Comparing a key a client sent with a configured one: in constant time, and never crashing on the
non-ASCII bytes aiohttp keeps in header values as surrogates."""

from __future__ import annotations

import hmac

from aiohttp import web
from pydantic import SecretStr


def key_matches(given: str, key: SecretStr) -> bool:
    return bool(given) and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), key.get_secret_value().encode()
    )


def bearer_matches(request: web.Request, key: SecretStr) -> bool:
    """`Authorization: Bearer <key>` names `key`."""
    header = request.headers.get("Authorization", "")
    return header.startswith("Bearer ") and key_matches(header.removeprefix("Bearer ").strip(), key)
