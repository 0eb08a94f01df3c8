"""Who may talk to the gateway: the Host and Origin checks and the bearer token.

- **Host** (DNS rebinding): a gateway bound to a loopback address answers only loopback ``Host``
  names, so a web page on ``evil.example`` that rebinds its name to 127.0.0.1 gets 403.
- **Origin**: a present ``Origin`` must be listed in ``allowed_origins`` (or, on loopback, be a
  loopback origin); browsers send it, other clients do not.
- **Bearer token**: names the client. The SHA-256 of the presented token is compared, in constant
  time, with the hash of every client's token (``[[client]]`` entries, and ``server.bearer_token`` as
  the client "default"): every entry is compared, whichever matches, so the time taken says nothing
  about which client (or how much of a token) matched; a missing header costs the same as a wrong one.
  One hash per request; the table of hashes is built once, and again on reload (:meth:`Guard.set_clients`).

Applies to every path, ``/health`` included (its public view needs no token, but a rebinding page
must not read it either).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from ..config import DEFAULT_CLIENT, ClientSection, ServerSection
from ..core.net import host_of, is_loopback_host

__all__ = ["Guard"]


class Guard:
    def __init__(self, server: ServerSection, clients: Iterable[ClientSection] = ()) -> None:
        self.auth_none = server.auth == "none"
        self.token = server.bearer_token.encode()
        self.metrics_token = server.metrics_token.encode()
        self._clients: tuple[tuple[bytes, str], ...] = ()
        self.set_clients(clients)
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

    def set_clients(self, clients: Iterable[ClientSection]) -> None:
        """Install the clients' token hashes (at start, and on reload: a revoked client's token stops
        working at once). ``server.bearer_token`` stays the client "default"."""
        table = [(bytes.fromhex(c.token_sha256), c.name) for c in clients]
        if self.token:
            table.append((hashlib.sha256(self.token).digest(), DEFAULT_CLIENT))
        self._clients = tuple(table)  # one assignment: a request sees the old table or the new one

    def identify(self, authorization: str | None) -> str | None:
        """The name of the client whose token ``authorization`` carries (``Bearer <token>``), or None.

        Constant time in the token: one SHA-256 of what was presented (nothing for a missing header is
        hashed too), then ``hmac.compare_digest`` against every entry with no early exit."""
        if self.auth_none:
            return DEFAULT_CLIENT
        given = _bearer(authorization)
        digest = hashlib.sha256(given).digest()
        found: str | None = None
        for stored, name in self._clients:
            if hmac.compare_digest(digest, stored) and found is None:
                found = name
        # An empty token never names a client (the hash of b"" is a known value).
        return found if given else None

    def is_token(self, secret: str) -> bool:
        """Whether ``secret`` is one of the MCP tokens (a client's or the bearer token), even with
        ``auth = "none"``: the console refuses them as its password. Constant time like :meth:`identify`."""
        digest = hashlib.sha256(secret.encode()).digest()
        found = False
        for stored, _ in self._clients:
            found = hmac.compare_digest(digest, stored) or found
        return found and bool(secret)

    def token_ok(self, authorization: str | None) -> bool:
        return self.identify(authorization) is not None

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
