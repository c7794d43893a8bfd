"""Admin bodies are read like every other body: decoded (gzip), bounded, JSON errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import aiohttp

KEY = "admin-key-for-tests"


async def test_a_gzip_patch_applies_and_a_broken_one_is_a_json_400(
    start_server: Any, demo_dir: Path, http: Any
) -> None:
    server = start_server(demo_dir, http.settings(server={"admin_key": KEY}))
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with aiohttp.ClientSession() as client:
        body = gzip.compress(json.dumps({"log_level": "INFO"}).encode())  # as it is: no side effect
        async with client.patch(server.url + "/admin/desired", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()
        async with client.patch(server.url + "/admin/desired", data=b"not gzip", headers=headers) as response:
            assert response.status == 400
            assert (await response.json())["code"] == "BadRequest"
