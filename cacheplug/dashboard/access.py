"""Who may see the dashboard and the metrics: a token holder, or a loopback client.

The check is deliberately small: a bearer token compared in constant time, or a client
address on the loopback interface. A request that carries proxy headers
(``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) never counts as loopback, because
behind a reverse proxy on the same host every client arrives from 127.0.0.1.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cacheplug.errors import ConfigurationError

__all__ = ("TOKEN_ENV", "AccessDecision", "AccessPolicy", "is_loopback")

#: Read when no token is passed explicitly.
TOKEN_ENV: Final = "CACHEPLUG_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH: Final = 16
PROXY_HEADERS: Final = ("forwarded", "x-forwarded-for", "x-real-ip")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is a loopback IP address (127.0.0.0/8, ::1, ::ffff:127.x)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False  # a hostname or a unix socket path: never trusted as loopback
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@dataclass(frozen=True, slots=True)
class AccessDecision:
    """The outcome of :meth:`AccessPolicy.check`: allowed, or the HTTP status to send."""

    allowed: bool
    status: int = 200
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Allow a request that presents the token, or that comes from loopback.

    :param token: the shared secret, sent as ``Authorization: Bearer <token>`` or as
        ``?token=<token>``. None reads ``$CACHEPLUG_DASHBOARD_TOKEN``; when that is unset
        too, only loopback clients get in.
    :param allow_loopback: let loopback clients in without a token (default True). Turn
        it off when a proxy on the same host does not send forwarding headers.
    :raises ConfigurationError: for a token shorter than 16 characters, or a policy that
        would let nobody in (no token and ``allow_loopback=False``).

    Thread-safe: immutable.
    """

    token: str | None = field(default=None, repr=False)
    allow_loopback: bool = True

    def __post_init__(self) -> None:
        token = self.token if self.token is not None else os.environ.get(TOKEN_ENV) or None
        if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH):
            raise ConfigurationError(
                f"the dashboard token must be a str of at least {MIN_TOKEN_LENGTH} "
                "characters; generate one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if token is None and not self.allow_loopback:
            raise ConfigurationError(
                "this access policy lets nobody in: set a token (or $CACHEPLUG_DASHBOARD_TOKEN) "
                "or allow loopback clients"
            )
        object.__setattr__(self, "token", token)

    def check(
        self,
        *,
        client_host: str | None,
        headers: Mapping[str, str],
        query_token: str | None = None,
    ) -> AccessDecision:
        """Decide one request.

        :param client_host: the peer address as the server saw it (None if unknown).
        :param headers: request headers with lower-case names.
        :param query_token: the ``token`` query parameter, if any.
        :returns: allowed, or 401 (no credentials presented) / 403 (wrong credentials).
        """
        presented = _bearer(headers.get("authorization")) or query_token
        if self.token is not None and presented is not None:
            # Compare bytes: compare_digest refuses non-ASCII str.
            if hmac.compare_digest(presented.encode(), self.token.encode()):
                return AccessDecision(True)
            return AccessDecision(False, 403, "wrong token")
        proxied = any(name in headers for name in PROXY_HEADERS)
        if self.allow_loopback and not proxied and is_loopback(client_host):
            return AccessDecision(True)
        if self.token is not None:
            return AccessDecision(
                False, 401, "send Authorization: Bearer <token> or ?token=<token>"
            )
        return AccessDecision(
            False, 403, "only loopback clients may connect (no dashboard token is configured)"
        )


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
