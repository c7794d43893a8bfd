"""Throw-away TLS material for tests (openssl CLI): a CA, a localhost/127.0.0.1 server cert, a client cert.

Files are world-readable on purpose: mosquitto started as root drops to its own user unless the
config says `user root` (tests do both, to be safe).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=edge-runtime-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    for name, usage, san in (
        ("server", "serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"),
        ("client", "clientAuth", ""),
    ):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={'localhost' if name == 'server' else 'edge-runtime-test-client'}",
            cwd=d,
        )  # fmt: skip
        (d / f"{name}.ext").write_text(f"{san}basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=d,
        )  # fmt: skip
    for path in d.iterdir():
        path.chmod(0o644)
    return TlsFiles(
        ca=d / "ca.pem",
        ca_key=d / "ca.key",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
    )
