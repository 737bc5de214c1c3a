"""Who is calling, and what their role lets them do.

Tokens are configured by their SHA-256 only (``api.tokens``), so neither the configuration
nor a log line can leak one. A presented token is hashed and compared with every configured
hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from ..errors import InputError
from ..settings import ApiSettings, Role


class Permission(StrEnum):
    READ = "read"
    """See portfolios, plans and commands."""
    OPERATE = "operate"
    """Change trading states, trigger a rebalance, preview."""
    APPROVE = "approve"
    """Approve or reject proposed plans."""


GRANTS: dict[Role, frozenset[Permission]] = {
    "viewer": frozenset({Permission.READ}),
    "operator": frozenset({Permission.READ, Permission.OPERATE}),
    "approver": frozenset({Permission.READ, Permission.APPROVE}),
    "admin": frozenset(Permission),
}


@dataclass(frozen=True)
class Principal:
    """The caller: the configured token's name and role."""

    name: str
    role: Role

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]


LOCAL_ADMIN = Principal("local", "admin")
"""Every caller of an API with no tokens configured, which serves loopback only."""


class UnauthenticatedError(Exception):
    """No token, or one that is not configured (HTTP 401)."""


class ForbiddenError(Exception):
    """A known token whose role does not allow the request (HTTP 403)."""


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Maps an ``Authorization`` header to a ``Principal``."""

    def __init__(self, settings: ApiSettings) -> None:
        self._tokens = [(t.sha256.encode(), Principal(t.name, t.role)) for t in settings.tokens]

    @property
    def open(self) -> bool:
        """No tokens configured: every request is ``LOCAL_ADMIN`` (loopback only)."""
        return not self._tokens

    def principal(self, authorization: str | None) -> Principal:
        """The caller of a request with this ``Authorization`` header; raises
        ``UnauthenticatedError``."""
        if self.open:
            return LOCAL_ADMIN
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("a bearer token is required (Authorization: Bearer TOKEN)")
        presented = sha256_hex(token.strip()).encode()
        found: Principal | None = None
        for digest, principal in self._tokens:  # every hash compared: no early exit
            if hmac.compare_digest(digest, presented):
                found = principal
        if found is None:
            raise UnauthenticatedError("the bearer token is not one this service accepts")
        return found

    def authorize(self, authorization: str | None, permission: Permission) -> Principal:
        """The caller, if their role allows ``permission``; raises ``UnauthenticatedError`` or
        ``ForbiddenError``."""
        principal = self.principal(authorization)
        if not principal.may(permission):
            raise ForbiddenError(
                f"token {principal.name!r} has role {principal.role}, which may not "
                f"{permission.value}"
            )
        return principal


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to listen on) is reachable from this machine
    only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ApiExposedError(InputError):
    """The API would listen beyond loopback with no tokens to check."""


def check_exposure(host: str, settings: ApiSettings) -> None:
    """Refuse an open API (no tokens) on an address other machines can reach."""
    if not settings.tokens and not is_loopback(host):
        raise ApiExposedError(
            f"http_host {host!r} is not a loopback address and api.tokens is empty: the API "
            "would let anyone who reaches it act as admin. Configure api.tokens "
            '(REBALANCER_API__TOKENS=\'[{"name": ..., "role": ..., "sha256": ...}]\') or '
            "listen on 127.0.0.1"
        )
