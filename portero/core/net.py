"""Host names and addresses — pure."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["host_of", "is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` (and ``*.localhost``), 127.0.0.0/8 and ``::1``; brackets allowed."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(hostport: str) -> str | None:
    """The host of a ``Host`` header or URL authority (``"[::1]:8443"`` → ``"::1"``); None if malformed."""
    try:
        host = urlsplit("//" + hostport).hostname
    except ValueError:
        return None
    return host.lower() if host else None
