"""Faults of the admin API's model updates, black-box over real TCP (what an outside trial found).

- A model URL's credentials (user, password, query) never show in an answer, a status or a log line,
  even for a URL that does not parse (port 99999).
- A failed `PUT /admin/model` is reported, but the configured model stays the one serving, so a
  reload afterwards reloads that one (200, not 500).
- Admin bodies that are not a usable JSON object (deep, huge numbers, not UTF-8) answer 400 with a
  JSON body, never 500.

Concurrent PUTs, each answered with its own outcome, are in test_model_swap.py (they need a slow
https model host).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from admin_client import admin_call

from edge_runtime.demo.model import build_demo_export
from edge_runtime.settings import build_settings

ADMIN_KEY = "faults-test-key"
SHA = "ab" * 32


def admin(server: Any, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    return admin_call(server.url, ADMIN_KEY, method, path, body, timeout=30, raw=raw)


@pytest.fixture
def server(tmp_path: Path, start_server: Any) -> Any:
    settings = build_settings(
        {
            "server": {"inference_workers": 1, "admin_key": ADMIN_KEY},
            "model": {"device": "cpu", "download_dir": tmp_path / "models", "download_timeout_s": 10},
            "events": {"jsonl_path": None, "snapshot_dir": None, "outbox_path": tmp_path / "outbox.sqlite3"},
        }
    )
    return start_server(build_demo_export(tmp_path / "demo"), settings)


@pytest.mark.parametrize(
    "url",
    [
        "https://u:SECRET@127.0.0.1:99999/m.zip?sig=SIGNATURE",  # a port urlsplit and yarl refuse
        "https://u:SECRET@127.0.0.1:1/m.zip?sig=SIGNATURE",  # parses; the connection is refused
        "https://SECRET@[::1/m.zip?sig=SIGNATURE",  # a broken IPv6 bracket
        "https://u:SE CRET@127.0.0.1:1/m.zip?sig=SIGNATURE",  # a space in the password
        "http://u:SECRET@127.0.0.1:1/m.zip?sig=SIGNATURE",  # refused before any byte: not https
    ],
)
def test_model_url_credentials_never_leak(server: Any, url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    status, body = admin(server, "PUT", "/admin/model", {"url": url, "sha256": SHA})
    assert status == 422, body
    assert body["model"]["status"] == "failed" and body["model"]["error"]
    assert body["model"]["id"] == "edge-runtime-demo"  # the demo model still serves
    assert body["model"]["source"].startswith(url.split(":", 1)[0] + "://***")
    _, status_body = admin(server, "GET", "/admin/status")
    _, desired = admin(server, "GET", "/admin/desired")
    # the same URL through a desired-properties patch
    status, patched = admin(server, "PATCH", "/admin/desired", {"model": {"url": url, "sha256": SHA}})
    assert status == 200, patched
    _, after_patch = admin(server, "GET", "/admin/status")
    texts = [repr(body), repr(status_body), repr(desired), repr(patched), repr(after_patch)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(record.args) for record in caplog.records] + [caplog.text]
    for text in texts:
        for secret in ("SECRET", "CRET", "SIGNATURE", "u:"):
            assert secret not in text, text


def test_failed_put_keeps_the_serving_model_configured(server: Any, tmp_path: Path) -> None:
    other = build_demo_export(tmp_path / "other")
    missing = tmp_path / "missing"

    # from the base model (no desired model section)
    status, body = admin(server, "PUT", "/admin/model", {"path": str(missing)})
    assert status == 422 and str(missing) in body["model"]["error"], body
    status, body = admin(server, "GET", "/admin/status")
    model = body["model"]
    assert model["status"] == "failed" and model["source"] == str(missing) and model["error"]
    assert model["configured"] == str(tmp_path / "demo") and model["id"] == "edge-runtime-demo"
    _, desired = admin(server, "GET", "/admin/desired")
    assert "model" not in desired, desired
    status, body = admin(server, "POST", "/admin/model/reload")
    assert status == 200 and body["model"]["status"] == "ready", body
    assert body["model"]["source"] == str(tmp_path / "demo")

    # from a model put in through the API
    status, body = admin(server, "PUT", "/admin/model", {"path": str(other)})
    assert status == 200 and body["model"]["configured"] == str(other), body
    status, body = admin(server, "PUT", "/admin/model", {"path": str(missing)})
    assert status == 422, body
    assert body["model"]["configured"] == str(other) and body["model"]["error"]
    _, desired = admin(server, "GET", "/admin/desired")
    assert desired["model"]["path"] == str(other), desired
    status, body = admin(server, "POST", "/admin/model/reload")
    assert status == 200 and body["model"]["source"] == str(other), body
    # the same model again: answered with the outcome of the update that loaded it
    status, body = admin(server, "PUT", "/admin/model", {"path": str(other)})
    assert status == 200 and body["model"]["status"] == "ready", body


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"[" * 5000, "deep"),
        (b"{" + b'"a":{' * 900 + b"}" * 901, "deep"),  # parses, but deeper than any desired document
        (b'{"model": {"threads": ' + b"1" * 100_000 + b"}}", "digits"),
        (b'{"model": {"path": "\xff\xfe"}}', "utf-8"),
        (b"\xef\xbb\xbf{}", "bom"),
        (b"", "empty"),
        (b"[1, 2]", "array"),
        (b"{", "truncated"),
    ],
)
@pytest.mark.parametrize(("method", "path"), [("PATCH", "/admin/desired"), ("PUT", "/admin/model")])
def test_bad_admin_bodies_answer_400_with_json(
    server: Any, method: str, path: str, raw: bytes, why: str
) -> None:
    status, body = admin(server, method, path, raw=raw)
    assert status == 400, (why, body)
    assert body["code"] == "BadRequest" and isinstance(body["message"], str) and body["message"], body
    assert len(body["message"]) < 400  # not the body echoed back
    status, body = admin(server, "GET", "/admin/status")
    assert status == 200 and body["model"]["status"] == "ready"
