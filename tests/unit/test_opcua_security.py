"""The OPC UA server's security decisions without a server: its own certificate (made once, kept),
which client certificates are trusted, who may log in, and what the endpoints offer."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import SecretStr

from edge_runtime.errors import ConfigError
from edge_runtime.opcua.certificates import ClientCertificates, check_pki_dir, own_certificate, thumbprint
from edge_runtime.opcua.security import Users, identity_tokens, security_policies

URI = "urn:test:client"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return cert_gen.generate_private_key()  # one key for every certificate here: RSA is slow


def client_cert(key: rsa.RSAPrivateKey, uri: str = URI, days: int = 30) -> x509.Certificate:
    return cert_gen.generate_self_signed_app_certificate(
        key, "client", {}, [x509.UniformResourceIdentifier(uri)], [ExtendedKeyUsageOID.CLIENT_AUTH], days
    )


def app(uri: str = URI) -> ua.ApplicationDescription:
    description = ua.ApplicationDescription()
    description.ApplicationUri = uri
    return description


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def code(error: ServiceError) -> int:
    return int(error.code)


# ---- the server's own certificate -------------------------------------------------------------------


def test_own_certificate_is_made_once_with_a_private_key_and_kept(tmp_path: Path) -> None:
    first = own_certificate(tmp_path / "pki", hostname="line3-edge")
    assert first.application_uri == "urn:line3-edge:edge-runtime"
    assert (tmp_path / "pki" / "own" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert {p.name for p in (tmp_path / "pki").iterdir()} == {"own", "trusted", "rejected"}
    # a new host name (a recreated container) keeps the certificate clients already trust
    again = own_certificate(tmp_path / "pki", hostname="other-name")
    assert again.certificate == first.certificate
    assert again.application_uri == first.application_uri
    assert again.thumbprint == thumbprint(first.certificate) and len(again.thumbprint) == 40


def test_an_expired_own_certificate_is_replaced(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    own = own_certificate(tmp_path)
    expired = cert_gen.generate_self_signed_app_certificate(
        key, "old", {}, [x509.UniformResourceIdentifier("urn:old")], [ExtendedKeyUsageOID.SERVER_AUTH], days=0
    )
    own.cert_path.write_bytes(der(expired))
    renewed = own_certificate(tmp_path)
    assert renewed.certificate != expired
    assert renewed.certificate.not_valid_after_utc > datetime.datetime.now(datetime.UTC)


def test_a_pki_dir_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "pki").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        check_pki_dir(tmp_path / "pki")
    check_pki_dir(tmp_path / "absent")  # made at start


# ---- client certificates ----------------------------------------------------------------------------


async def test_untrusted_certificate_is_refused_and_kept_in_rejected(
    tmp_path: Path, key: rsa.RSAPrivateKey
) -> None:
    own_certificate(tmp_path)  # makes trusted/ and rejected/
    cert = client_cert(key)
    validator = ClientCertificates(tmp_path, trust_any=False)
    with pytest.raises(ServiceError) as refused:
        await validator(cert, app())
    assert code(refused.value) == ua.StatusCodes.BadCertificateUntrusted
    (kept,) = (tmp_path / "rejected").iterdir()
    assert kept.read_bytes() == der(cert) and thumbprint(cert) in kept.name
    assert not validator.accepts(cert)

    # trusted as PEM, without a restart
    (tmp_path / "trusted" / "client.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    await validator(cert, app())
    assert validator.accepts(cert)


async def test_certificate_issued_by_a_trusted_ca(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    own_certificate(tmp_path)
    ca = cert_gen.generate_self_signed_app_certificate(key, "plant CA", {}, [], extended=[], days=30)
    (tmp_path / "trusted" / "ca.der").write_bytes(der(ca))
    csr = cert_gen.generate_app_certificate_signing_request(
        key, "client", {}, [x509.UniformResourceIdentifier(URI)], [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    issued = cert_gen.sign_certificate_request(csr, ca, key, days=30)
    await ClientCertificates(tmp_path, trust_any=False)(issued, app())
    # a self-signed certificate is not "issued by" the CA just because the CA is trusted
    with pytest.raises(ServiceError):
        await ClientCertificates(tmp_path, trust_any=False)(client_cert(key), app())


async def test_a_trusted_application_certificate_is_no_issuer(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    # asyncua's self-signed application certificates say CA:TRUE; trusting one client must not trust
    # the certificates it signs
    own_certificate(tmp_path)
    trusted_app = client_cert(key)
    assert trusted_app.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    (tmp_path / "trusted" / "plc.der").write_bytes(der(trusted_app))
    csr = cert_gen.generate_app_certificate_signing_request(
        key, "minted", {}, [x509.UniformResourceIdentifier(URI)], [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    minted = cert_gen.sign_certificate_request(csr, trusted_app, key, days=30)
    with pytest.raises(ServiceError) as refused:
        await ClientCertificates(tmp_path, trust_any=False)(minted, app())
    assert code(refused.value) == ua.StatusCodes.BadCertificateUntrusted


async def test_expired_or_misnamed_certificates_are_refused_even_when_any_is_trusted(
    tmp_path: Path, key: rsa.RSAPrivateKey
) -> None:
    validator = ClientCertificates(tmp_path, trust_any=True)
    await validator(client_cert(key), app())
    with pytest.raises(ServiceError) as expired:
        await validator(client_cert(key, days=0), app())
    assert code(expired.value) == ua.StatusCodes.BadCertificateTimeInvalid
    with pytest.raises(ServiceError) as misnamed:
        await validator(client_cert(key), app("urn:someone:else"))
    assert code(misnamed.value) == ua.StatusCodes.BadCertificateUriInvalid


async def test_a_file_that_is_not_a_certificate_is_ignored(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "junk.der").write_bytes(b"not a certificate")
    assert not ClientCertificates(tmp_path, trust_any=False).accepts(client_cert(key))


# ---- users ----------------------------------------------------------------------------------------------


def test_users_and_anonymous(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    cert = client_cert(key)
    certificates = ClientCertificates(tmp_path, trust_any=True)
    users = Users({"plc": SecretStr("pw")}, False, False, certificates)
    user = users.get_user(None, "plc", "pw", der(cert))
    assert user is not None and user.name == "plc"
    assert users.get_user(None, "plc", "PW", der(cert)) is None
    assert users.get_user(None, "mes", "pw", der(cert)) is None
    assert users.get_user(None, None, None, der(cert)) is None  # anonymous: not allowed
    anonymous = Users({}, True, False, certificates).get_user(None, None, None, der(cert))
    assert anonymous is not None and anonymous.name == "anonymous"


def test_a_session_on_an_unsecured_channel_needs_allow_unencrypted(tmp_path: Path) -> None:
    certificates = ClientCertificates(tmp_path, trust_any=True)
    assert (
        Users({"plc": SecretStr("pw")}, True, False, certificates).get_user(None, "plc", "pw", None) is None
    )
    assert (
        Users({"plc": SecretStr("pw")}, True, True, certificates).get_user(None, "plc", "pw", None)
        is not None
    )


def test_a_session_on_a_channel_with_an_untrusted_certificate_is_refused(
    tmp_path: Path, key: rsa.RSAPrivateKey
) -> None:
    # asyncua checks the certificate at CreateSession only when the request carries it again
    (tmp_path / "trusted").mkdir()
    users = Users({"plc": SecretStr("pw")}, True, False, ClientCertificates(tmp_path, trust_any=False))
    assert users.get_user(None, "plc", "pw", der(client_cert(key))) is None


def test_passwords_are_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    users = Users({"plc": SecretStr("right-pw")}, False, True, ClientCertificates(tmp_path, trust_any=True))
    users.get_user(None, "plc", "wrong-pw", None)
    assert "login refused for user 'plc'" in caplog.text
    assert "pw" not in caplog.text.replace("plc", "")


# ---- endpoints ------------------------------------------------------------------------------------------


def test_policies_and_tokens() -> None:
    secure = security_policies(allow_unencrypted=False)
    assert ua.SecurityPolicyType.NoSecurity not in secure
    assert ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt in secure
    assert ua.SecurityPolicyType.Basic256Sha256_Sign in secure
    assert not any("Basic128" in p.name or p.name.startswith("Basic256_") for p in secure)  # deprecated
    assert security_policies(allow_unencrypted=True)[-1] == ua.SecurityPolicyType.NoSecurity
    assert identity_tokens({"a": SecretStr("b")}, False) == [ua.UserNameIdentityToken]
    assert identity_tokens({}, True) == [ua.AnonymousIdentityToken]
