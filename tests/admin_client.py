"""A tiny client for the runtime's admin API (`Authorization: Bearer <key>`), shared by integration tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def admin_call(
    base_url: str,
    key: str,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 120,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    """(status, decoded JSON) for any answer, errors included; `raw` sends bytes as they are."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base_url + path,
        method=method,
        data=data,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())
