"""How a remote transport authenticates to its server: the headers of each request, and what to do
on a 401.

A transport asks its :class:`Credentials` for the headers of every HTTP request (or the WebSocket
handshake) and, when the server answers 401, calls :meth:`Credentials.unauthorized` with the
response's ``WWW-Authenticate`` value: ``True`` means fresh credentials are ready and the request may
be sent once more; ``False`` means give up. Credentials that cannot be had without the admin (an
OAuth login that was never done, a refresh token that was revoked) raise :class:`NeedsLogin`; the
supervisor then shows the server as ``needs-login`` and waits for :meth:`Credentials.changed`.

Only these headers reach a server: the configured ``headers`` and the server's own token. The
client's bearer token is never passed upstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import trio


class NeedsLogin(Exception):
    """The server needs an interactive login (``portero login <name>``) before it can be used."""


class Credentials(Protocol):
    async def headers(self) -> dict[str, str]:
        """The headers for the next request: configured ones plus ``Authorization`` when there is one."""
        ...

    async def unauthorized(self, www_authenticate: str | None) -> bool:
        """The server answered 401. True: retry once with :meth:`headers` again. May raise NeedsLogin."""
        ...

    async def changed(self) -> None:
        """Return when credentials may have changed (a login was done); for a server in needs-login."""
        ...


class StaticCredentials:
    """``auth = "none"`` or ``"bearer"``: the configured headers, plus ``Authorization: Bearer <token>``."""

    def __init__(self, headers: Mapping[str, str], token: str = "") -> None:
        self._headers = dict(headers)
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def unauthorized(self, www_authenticate: str | None) -> bool:
        return False  # a static token that was refused will be refused again

    async def changed(self) -> None:
        await trio.sleep_forever()
