"""``GET /health``: one line of truth for monitors and for ``systemctl status``.

Without the bearer token it says only whether the gateway is ok and counts servers by state: a
server's name, error text and the session count are for the admin (with the token), and an error
text there is redacted and anonymized by the router before it gets here.
"""

from __future__ import annotations

import collections
from typing import Any

from .. import __version__
from ..gateway.router import Router


def health(router: Router, *, full: bool) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 200 when every enabled server is ready, else 503."""
    servers = router.upstream_status()
    ok = all(s["state"] == "ready" for s in servers)
    body: dict[str, Any] = {"status": "ok" if ok else "degraded", "version": __version__}
    if full:
        body["uptime_s"] = router.uptime()
        body["children"] = servers
        body["sessions"] = len(router.sessions)
    else:
        body["servers"] = dict(collections.Counter(s["state"] for s in servers))
    return (200 if ok else 503), body
