"""Who may open a session on the OPC UA server (users, anonymous, unsecured channels), and what its
endpoints offer (security policies, identity tokens). Certificates: certificates.py."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from pydantic import SecretStr

from edge_runtime.opcua.certificates import ClientCertificates, common_name

log = logging.getLogger(__name__)


# ---- users ------------------------------------------------------------------------------------------


class Users(UserManager):
    """Lets a session in (ActivateSession): its channel must be secured unless unencrypted channels are
    allowed, its client certificate trusted, its user known (or anonymous allowed).

    asyncua opens an unsecured channel for discovery whatever the endpoints say, and would create and
    activate a session on it; and it checks the client certificate at CreateSession only when the
    request repeats it. `certificate` here is the channel's own peer certificate, so both gaps close."""

    def __init__(
        self,
        users: Mapping[str, SecretStr],
        allow_anonymous: bool,
        allow_unencrypted: bool,
        certificates: ClientCertificates,
    ) -> None:
        self._users = {name: secret.get_secret_value().encode() for name, secret in users.items()}
        self._allow_anonymous = allow_anonymous
        self._allow_unencrypted = allow_unencrypted
        self._certificates = certificates

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if not self._channel_allowed(certificate):
            return None
        if username is None:
            if self._allow_anonymous:
                # UserRole.Anonymous may do nothing at all in asyncua's ruleset; reads/calls need User
                return User(role=UserRole.User, name="anonymous")
            log.warning("opcua: anonymous session refused")
            return None
        expected = self._users.get(username)
        given = (password or "").encode()
        # compare even for an unknown user, so that the answer's timing does not tell names apart
        matches = hmac.compare_digest(given, expected if expected is not None else b"\0" * 32)
        if expected is None or not matches:
            log.warning("opcua: login refused for user %r", username[:64])
            return None
        return User(role=UserRole.User, name=username)

    def _channel_allowed(self, certificate: Any) -> bool:
        if not isinstance(certificate, bytes) or not certificate:
            if not self._allow_unencrypted:
                log.warning("opcua: session on an unsecured channel refused (opcua.allow_unencrypted is off)")
            return self._allow_unencrypted
        try:
            peer = x509.load_der_x509_certificate(certificate)
        except ValueError:
            return False
        if self._certificates.accepts(peer):
            return True
        log.warning("opcua: session refused: client certificate %r is not trusted", common_name(peer))
        return False


# ---- what the endpoints offer ---------------------------------------------------------------------

ENCRYPTED_POLICIES = (
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
)


def security_policies(allow_unencrypted: bool) -> list[ua.SecurityPolicyType]:
    """The signed (and encrypted) policies of OPC UA 1.04+; the deprecated Basic128Rsa15 and Basic256
    (SHA-1) never; None only when asked for."""
    extra = [ua.SecurityPolicyType.NoSecurity] if allow_unencrypted else []
    return [*ENCRYPTED_POLICIES, *extra]


def identity_tokens(users: Mapping[str, SecretStr], allow_anonymous: bool) -> list[type]:
    """User name tokens when users are configured, anonymous when allowed (X.509 user tokens: no)."""
    tokens: list[type] = []
    if users:
        tokens.append(ua.UserNameIdentityToken)
    if allow_anonymous:
        tokens.append(ua.AnonymousIdentityToken)
    return tokens
