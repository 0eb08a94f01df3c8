"""Who may talk to the gateway: the Host and Origin checks and the bearer token.

- **Host** (DNS rebinding): a gateway bound to a loopback address answers only loopback ``Host``
  names, so a web page on ``evil.example`` that rebinds its name to 127.0.0.1 gets 403.
- **Origin**: a present ``Origin`` must be listed in ``allowed_origins`` (or, on loopback, be a
  loopback origin); browsers send it, other clients do not.
- **Bearer token**: compared in constant time; a missing header costs the same as a wrong one.

Applies to every path, ``/health`` included (its public view needs no token, but a rebinding page
must not read it either).
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from ..config import ServerSection
from ..core.net import host_of, is_loopback_host

__all__ = ["Guard"]


class Guard:
    def __init__(self, server: ServerSection) -> None:
        self.auth_none = server.auth == "none"
        self.token = server.bearer_token.encode()
        self.metrics_token = server.metrics_token.encode()
        self.loopback = is_loopback_host(server.host)
        self.allowed_origins = {o.rstrip("/").lower() for o in server.allowed_origins}

    def host_ok(self, host: str | None) -> bool:
        if not self.loopback or host is None:
            return True
        name = host_of(host)
        return name is not None and is_loopback_host(name)

    def origin_ok(self, origin: str | None) -> bool:
        if origin is None:
            return True
        if origin.rstrip("/").lower() in self.allowed_origins:
            return True
        if self.loopback:
            try:
                name = urlsplit(origin).hostname
            except ValueError:
                return False
            return name is not None and is_loopback_host(name)
        return False

    def token_ok(self, authorization: str | None) -> bool:
        if self.auth_none:
            return True
        if not authorization or authorization[:7].lower() != "bearer ":
            hmac.compare_digest(b"\0" * len(self.token), self.token)
            return False
        try:
            given = authorization[7:].strip().encode()
        except UnicodeEncodeError:
            given = b""
        return hmac.compare_digest(given, self.token)

    def metrics_ok(self, authorization: str | None) -> bool:
        """``GET /metrics``: the bearer token (or ``auth = "none"``), or ``server.metrics_token`` if set."""
        by_bearer = self.token_ok(authorization)
        if not self.metrics_token:
            return by_bearer
        return hmac.compare_digest(_bearer(authorization), self.metrics_token) or by_bearer


def _bearer(authorization: str | None) -> bytes:
    """The token of an ``Authorization: Bearer`` header; ``b""`` for a missing or other header."""
    if not authorization or authorization[:7].lower() != "bearer ":
        return b""
    try:
        return authorization[7:].strip().encode()
    except UnicodeEncodeError:
        return b""
