"""Fetch a model export over https into a staging file, bounded in size, verified by sha256.

The verified file is kept as `<download_dir>/<sha256>.zip` (extracted beside it), so asking for the
same model again costs nothing and a restart finds it without the network. Nothing half-downloaded
or unverified is ever renamed into place. The URL (a SAS token, a password) appears only redacted:
in errors, in logs, and in the messages of aiohttp/yarl that are passed on (edge_runtime/redact.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from edge_runtime.errors import ModelLoadError
from edge_runtime.redact import redact_url, scrub

log = logging.getLogger(__name__)
CHUNK = 1 << 16
QUERY = re.compile(r"\?[^\s'\")]*")  # a query string; superseded by redact.scrub (kept for old callers)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


@dataclass(frozen=True, slots=True)
class DownloadRequest:
    url: str  # may carry a SAS token: only ever logged redacted
    sha256: str
    directory: Path
    max_bytes: int
    timeout_s: float = 600.0
    ca_file: Path | None = None


def downloaded_path(request: DownloadRequest) -> Path:
    return request.directory / f"{request.sha256.lower()}.zip"


async def download_model(request: DownloadRequest) -> Path:
    """Return the verified file; raise ModelLoadError naming the (redacted) URL and the problem."""
    target = downloaded_path(request)
    shown = redact_url(request.url)
    if target.is_file():
        log.info("model %s already downloaded as %s", shown, target.name)
        return target
    scheme = _SCHEME.match(request.url)
    if scheme is None or scheme.group(1).lower() != "https":  # no urlsplit: it raises on odd URLs
        raise ModelLoadError(shown, "model.url must be https")
    request.directory.mkdir(parents=True, exist_ok=True)
    staging = request.directory / f".{request.sha256.lower()}.part"
    digest = hashlib.sha256()
    size = 0
    context = ssl.create_default_context()
    if request.ca_file is not None:
        context.load_verify_locations(cafile=str(request.ca_file))
    timeout = aiohttp.ClientTimeout(total=request.timeout_s, sock_connect=30)
    try:
        too_large = f"larger than model.max_download_bytes ({request.max_bytes})"
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
            # No redirects: each hop would need the https check, and blob URLs do not redirect.
            session.get(request.url, ssl=context, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise ModelLoadError(shown, f"download failed: HTTP {response.status}")
            if (response.content_length or 0) > request.max_bytes:
                raise ModelLoadError(shown, too_large)
            with staging.open("wb") as out:
                async for chunk in response.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > request.max_bytes:
                        raise ModelLoadError(shown, too_large)
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != request.sha256.lower():
            raise ModelLoadError(
                shown, f"sha256 mismatch: expected {request.sha256.lower()}, got {digest.hexdigest()}"
            )
        staging.replace(target)
    except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError, ValueError) as exc:
        # aiohttp's and yarl's messages quote the full URL (password, SAS token): scrubbed.
        detail = scrub(str(exc), request.url)
        raise ModelLoadError(shown, f"download failed: {type(exc).__name__} {detail}".rstrip()) from exc
    finally:
        staging.unlink(missing_ok=True)
    log.info("model %s downloaded (%d bytes, sha256 verified)", shown, size)
    return target
