"""Which transport serves a configured ``[[mcp]]`` server: a local process over stdio, or a remote
server over Streamable HTTP (falling back to the legacy HTTP+SSE transport), or WebSocket."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..config import McpServer
from .auth import Credentials, StaticCredentials
from .stdio import StdioTransport
from .supervisor import Transport


def credentials_for(cfg: McpServer, oauth: Callable[[McpServer], Credentials] | None = None) -> Credentials:
    """What a remote server is sent: its configured headers and token, or its OAuth login."""
    if cfg.auth == "oauth":
        if oauth is None:
            raise ValueError(f"server {cfg.name}: OAuth needs the token store")
        return oauth(cfg)
    return StaticCredentials(cfg.headers, cfg.token)


def transport_for(
    cfg: McpServer,
    env: Mapping[str, str],
    *,
    clean_log: Callable[[str], str] = lambda text: text,
    oauth: Callable[[McpServer], Credentials] | None = None,
) -> Transport:
    """A new transport for ``cfg`` (one per process or connection the supervisor keeps)."""
    if not cfg.remote:
        return StdioTransport(cfg, env, clean_log=clean_log)
    credentials = credentials_for(cfg, oauth)
    transport: Any
    if cfg.url.lower().startswith(("ws://", "wss://")):
        from .websocket import WebSocketTransport

        transport = WebSocketTransport(cfg, credentials)
    else:
        from .http import HttpTransport

        transport = HttpTransport(cfg, credentials)
    return transport  # type: ignore[no-any-return]
