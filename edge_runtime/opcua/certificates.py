"""The OPC UA server's certificates: its own application certificate, and the client certificates it
trusts.

    pki_dir/
      own/cert.der    the server's certificate (self-signed, made at first start, kept: clients pin it)
      own/key.pem     its private key (0600)
      trusted/        client certificates (.der, .pem, .crt) or CA certificates that issued them
      rejected/       certificates of refused clients: move one to trusted/ to let that client in

The trusted directory is read at every session, so a certificate moved there works without a restart.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_runtime.errors import ConfigError

log = logging.getLogger(__name__)

CERT_DAYS = 5 * 365  # a new certificate must be trusted again by every client: not too often
MAX_REJECTED = 100  # certificates kept in rejected/ (a scanner must not fill the disk)
CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


@dataclass(frozen=True, slots=True)
class OwnCertificate:
    cert_path: Path
    key_path: Path
    certificate: x509.Certificate
    application_uri: str  # from the certificate: it must match what the endpoints announce

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.certificate)


def thumbprint(certificate: x509.Certificate) -> str:
    """The SHA-1 thumbprint, as OPC UA tools (UaExpert, Siemens TIA) show it."""
    return certificate.fingerprint(hashes.SHA1()).hex().upper()  # an identifier, not a MAC


def own_certificate(pki_dir: Path, hostname: str | None = None) -> OwnCertificate:
    """The server's certificate and key: made on first use, then reused as long as it is valid.

    The application URI is read back from the certificate, so a changed host name (a recreated
    container) does not invalidate the certificate every client has already trusted."""
    own = pki_dir / "own"
    cert_path, key_path = own / "cert.der", own / "key.pem"
    for sub in ("own", "trusted", "rejected"):
        (pki_dir / sub).mkdir(parents=True, exist_ok=True)
    if cert_path.is_file() and key_path.is_file():
        certificate = x509.load_der_x509_certificate(cert_path.read_bytes())
        uri = _application_uri(certificate)
        if certificate.not_valid_after_utc > _now() and uri is not None:
            return OwnCertificate(cert_path, key_path, certificate, uri)
        log.warning(
            "opcua: own certificate %s expired or has no application URI: making a new one (clients must"
            " trust it again)",
            cert_path,
        )
    hostname = hostname or socket.gethostname()
    uri = f"urn:{hostname}:edge-runtime"
    key = cert_gen.generate_private_key()
    certificate = cert_gen.generate_self_signed_app_certificate(
        key,
        "edge-runtime OPC UA server",
        {"organizationName": "edge-runtime"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(hostname)],
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=CERT_DAYS,
    )
    _write_private(key_path, cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    log.info("opcua: made the server certificate %s (thumbprint %s)", cert_path, thumbprint(certificate))
    return OwnCertificate(cert_path, key_path, certificate, uri)


def check_pki_dir(pki_dir: Path) -> None:
    if pki_dir.exists() and not pki_dir.is_dir():
        raise ConfigError(f"opcua.pki_dir: {pki_dir} is not a directory")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _application_uri(certificate: x509.Certificate) -> str | None:
    uris = _uris(certificate)
    return uris[0] if uris else None


def _uris(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# ---- client certificates -------------------------------------------------------------------------


class ClientCertificates:
    """asyncua's certificate validator (called at CreateSession): a client's certificate must be valid
    now, name the client's application URI, and be in trusted/ (or be issued by a CA certificate
    there), unless any certificate is trusted. Revocation lists are not read: remove a certificate
    from trusted/ to revoke it."""

    def __init__(self, pki_dir: Path, trust_any: bool) -> None:
        self._trusted_dir = pki_dir / "trusted"
        self._rejected_dir = pki_dir / "rejected"
        self._trust_any = trust_any

    async def __call__(self, certificate: x509.Certificate, client: ua.ApplicationDescription) -> None:
        name = common_name(certificate)
        now = _now()
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            log.warning("opcua: client certificate %r refused: outside its validity period", name)
            raise ServiceError(StatusCodes.BadCertificateTimeInvalid)
        if client.ApplicationUri not in _uris(certificate):
            log.warning(
                "opcua: client certificate %r refused: it does not name %r", name, client.ApplicationUri
            )
            raise ServiceError(StatusCodes.BadCertificateUriInvalid)
        if self._trust_any:
            return
        if await asyncio.to_thread(self._is_trusted, certificate):
            return
        kept = await asyncio.to_thread(self._keep_rejected, certificate)
        log.warning(
            "opcua: client certificate %r (thumbprint %s) is not trusted%s",
            name,
            thumbprint(certificate),
            f"; move {kept} to {self._trusted_dir}/ to trust it" if kept else "",
        )
        raise ServiceError(StatusCodes.BadCertificateUntrusted)

    def accepts(self, certificate: x509.Certificate) -> bool:
        """The same decision, without the URI check (for a certificate seen without its application)."""
        now = _now()
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            return False
        return self._trust_any or self._is_trusted(certificate)

    def _is_trusted(self, certificate: x509.Certificate) -> bool:
        for trusted in _load_certificates(self._trusted_dir):
            if trusted == certificate:
                return True
            if _issued_by(certificate, trusted):
                return True
        return False

    def _keep_rejected(self, certificate: x509.Certificate) -> Path | None:
        path = self._rejected_dir / f"{_safe(common_name(certificate))}_{thumbprint(certificate)}.der"
        try:
            if not path.exists():
                if sum(1 for _ in self._rejected_dir.iterdir()) >= MAX_REJECTED:
                    return None
                path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
        except OSError as exc:
            log.warning("opcua: cannot keep a rejected certificate in %s: %s", self._rejected_dir, exc)
            return None
        return path


def _load_certificates(directory: Path) -> list[x509.Certificate]:
    out = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else ():
        if path.suffix.lower() not in CERT_SUFFIXES or not path.is_file():
            continue
        data = path.read_bytes()
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                out.extend(x509.load_pem_x509_certificates(data))
            else:
                out.append(x509.load_der_x509_certificate(data))
        except ValueError as exc:
            log.warning("opcua: %s is not a certificate (%s): ignored", path, exc)
    return out


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    # asyncua (like some other stacks) marks self-signed application certificates as CAs: trusting one
    # client must not trust what it signs, so only a certificate naming no application is an issuer
    if not constraints.ca or ca == certificate or _application_uri(ca) is not None:
        return False
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return ca.not_valid_before_utc <= _now() <= ca.not_valid_after_utc


def common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64] or "client"
