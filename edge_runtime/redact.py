"""Credentials never reach logs, metrics or health output: URLs are shown with the password masked."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """rtsp://user:secret@cam/stream -> rtsp://user:***@cam/stream (query strings are dropped too)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if not parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if port:
        host = f"{host}:{port}"
    if parts.username is not None:
        user = parts.username + (":***" if parts.password is not None else "")
        host = f"{user}@{host}"
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))
