"""Placeholder: the WebSocketTransport is being written (remote servers issue)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..config import McpServer
from .auth import Credentials
from .peer import MessageHandler, Peer


class WebSocketTransport:
    def __init__(self, cfg: McpServer, credentials: Credentials) -> None:
        self.cfg = cfg
        self.credentials = credentials
        self.returncode: int | None = None

    @asynccontextmanager
    async def open(self, name: str, handler: MessageHandler, max_message_bytes: int) -> AsyncIterator[Peer]:
        raise OSError("remote servers are not supported yet")
        yield  # pragma: no cover

    async def login_changed(self) -> None:
        await self.credentials.changed()
        await trio.lowlevel.checkpoint()
