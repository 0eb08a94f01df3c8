"""Supervision of one configured upstream server, whatever its transport.

:class:`Upstream` keeps one server running for the life of the gateway: open the transport,
``initialize``, list the server's catalog, wait until the connection ends, then open it again with
capped exponential back-off (reset after a healthy period). A server that cannot start never takes
the others or the gateway down; its state and last error are what ``/health`` and ``/status`` show.

A transport is anything with ``open(name, handler, max_message_bytes)``: an async context manager
yielding a running :class:`~portero.upstream.peer.Peer` (see :class:`Transport`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import attrs
import trio

from ..config import McpServer
from ..core import jsonrpc, modern
from ..core.jsonrpc import RpcError
from .auth import NeedsLogin
from .peer import MessageHandler, Peer, UpstreamGone

log = logging.getLogger("portero.upstream")

PROTOCOL_VERSION = "2025-06-18"
MODERN_PROTOCOL = modern.MODERN_PROTOCOLS[0]
INIT_TIMEOUT = 120.0  # npx may download the package on first start
DISCOVER_TIMEOUT = 10.0  # a server that does not answer server/discover by then gets initialize
LIST_TIMEOUT = 30.0
BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
HEALTHY_RESET = 60.0
PAGE_LIMIT = 50  # pages followed for a paginated list


class Transport(Protocol):
    returncode: int | None  # a local process's exit status; always None for a remote server

    def open(
        self, name: str, handler: MessageHandler, max_message_bytes: int
    ) -> AbstractAsyncContextManager[Peer]:
        """Connect (start the process, open the session); yield a running peer. May raise
        ``OSError`` (cannot start or connect) or :class:`~portero.upstream.auth.NeedsLogin`."""
        ...

    async def login_changed(self) -> None:
        """Return when a login may have made :class:`NeedsLogin` go away (never, for most)."""
        ...


@attrs.define
class Listing:
    tools: list[dict[str, Any]] = attrs.Factory(list)
    prompts: list[dict[str, Any]] = attrs.Factory(list)
    resources: list[dict[str, Any]] = attrs.Factory(list)
    templates: list[dict[str, Any]] = attrs.Factory(list)


class Upstream:
    """One configured server, supervised. ``state`` is one of: starting (a local process) or
    connecting (a remote server), ready, restarting, needs-login (a remote server's OAuth login is
    missing or was revoked), skipped (a ``required_env`` is unset), disabled (``enabled = false``)."""

    def __init__(
        self,
        cfg: McpServer,
        transport: Transport,
        *,
        max_message_bytes: int,
        handler: MessageHandler,
        on_catalog_change: Callable[[], None],
        client_info: dict[str, Any],
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.transport = transport
        self.name: str = name or cfg.name
        self.prefix: bool = cfg.prefix
        self.call_timeout: float = cfg.call_timeout
        self._max_message_bytes = max_message_bytes
        self._handler = handler
        self._on_catalog_change = on_catalog_change
        self._client_info = client_info
        self._clock = clock
        self.state = "skipped" if cfg.skip_reason else self._starting
        if not cfg.enabled:
            self.state = "disabled"
        self.restarts = 0
        self.last_error: str = cfg.skip_reason or ""
        self.peer: Peer | None = None
        self.listing = Listing()
        self.capabilities: dict[str, Any] = {}
        self.server_info: dict[str, Any] = {}
        self.ready = trio.Event()  # set the first time the server is ready or gives up for now
        # True when the server speaks the stateless era with us: every request then carries the
        # envelope (with_envelope), and its list changes come on a subscriptions/listen stream.
        self.modern = False
        self._refresh_lock = trio.Lock()

    def clone(self, name: str, transport: Transport) -> Upstream:
        """Another process of the same server (``per_session``); the original serves the listings."""
        return Upstream(
            self.cfg,
            transport,
            max_message_bytes=self._max_message_bytes,
            handler=self._handler,
            on_catalog_change=lambda: None,
            client_info=self._client_info,
            name=name,
            clock=self._clock,
        )

    @property
    def _starting(self) -> str:
        return "connecting" if self.cfg.remote else "starting"

    @property
    def enabled(self) -> bool:
        return self.state not in ("skipped", "disabled")

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "tools": len(self.listing.tools) if self.state == "ready" else 0,
            "restarts": self.restarts,
        }
        if self.last_error and self.state != "ready":
            st["error"] = self.last_error
        if self.cfg.remote:  # shown as "failed: <error>" rather than "restarting" (render.server_state)
            st["remote"] = True
        return st

    async def run(self) -> None:
        """Keep the server running until cancelled."""
        if not self.enabled:
            self.ready.set()
            return
        backoff = BACKOFF_START
        while True:
            started = self._clock()
            try:
                await self._run_once()
            except NeedsLogin as exc:
                self.state = "needs-login"
                self.last_error = str(exc) or f"needs a login: portero login {self.cfg.name}"
                log.warning("server %s %s", self.name, self.last_error)
                self.ready.set()
                self._on_catalog_change()
                await self.transport.login_changed()
                backoff = BACKOFF_START
                continue
            except OSError as exc:
                # A remote transport's OSError already says what failed ("cannot reach …").
                self.last_error = str(exc) if self.cfg.remote else f"cannot start: {exc}"
                log.error("server %s %s", self.name, self.last_error)
            except Exception as exc:  # a bug or a hostile server must not take the gateway down
                self.last_error = f"internal error: {exc.__class__.__name__}"
                log.exception("server %s: unexpected failure; restarting it", self.name)
            if self._clock() - started >= HEALTHY_RESET:
                backoff = BACKOFF_START
            self.state = "restarting"
            self.ready.set()
            self._on_catalog_change()
            log.warning("server %s stopped (%s); restarting in %.1fs", self.name, self.last_error, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_CAP)
            self.restarts += 1

    async def _run_once(self) -> None:
        self.state = self._starting
        try:
            async with self.transport.open(self.name, self._handler, self._max_message_bytes) as peer:
                try:
                    await self._initialize(peer)
                except RpcError as exc:
                    self.last_error = f"initialize failed: {exc.message}"
                    log.error("server %s %s", self.name, self.last_error)
                    return
                self.peer = peer
                self.state = "ready"
                self.last_error = ""
                self.ready.set()
                self._on_catalog_change()
                era = f"MCP {MODERN_PROTOCOL}" if self.modern else "initialize handshake"
                log.info("server %s ready (%d tools, %s)", self.name, len(self.listing.tools), era)
                async with trio.open_nursery() as nursery:
                    if self.modern:
                        nursery.start_soon(self._listen, peer)
                    await peer.dead.wait()
                    nursery.cancel_scope.cancel()
                # Not ready from this moment on, while the process is being stopped.
                self.peer = None
                self.state = "restarting"
                self.last_error = peer.close_reason
        finally:
            self.peer = None
            # In `finally` (the transport has stopped the process by now): after the block, the
            # `return` of a failed initialize skipped it, when the exit status helps the most.
            code = self.transport.returncode
            if code is not None and code != 0 and "exit" not in self.last_error:
                self.last_error = (self.last_error + f" (exit status {code})").strip()

    def with_envelope(
        self,
        params: dict[str, Any] | None,
        capabilities: dict[str, Any] | None = None,
        log_level: str | None = None,
    ) -> dict[str, Any] | None:
        """``params`` for a request to this server: with the stateless era's envelope in ``_meta`` when
        the server speaks it (``capabilities``: what the client on whose behalf we ask can answer)."""
        if not self.modern:
            return params
        envelope: dict[str, Any] = {
            modern.PROTOCOL_META: MODERN_PROTOCOL,
            modern.CAPABILITIES_META: capabilities if capabilities is not None else {},
            modern.CLIENT_INFO_META: self._client_info,
        }
        if log_level is not None:
            envelope[modern.LOG_LEVEL_META] = log_level
        out = dict(params or {})
        meta = out.get("_meta")
        out["_meta"] = {**(meta if isinstance(meta, dict) else {}), **envelope}
        return out

    async def _discover(self, peer: Peer) -> bool:
        """Whether the server speaks the stateless era (then it is set up for it, without initialize)."""
        self.modern = False
        if self.cfg.protocol != "auto" or self.cfg.remote:
            return False
        envelope = {
            modern.PROTOCOL_META: MODERN_PROTOCOL,
            modern.CAPABILITIES_META: {},
            modern.CLIENT_INFO_META: self._client_info,
        }
        try:
            resp = await peer.request("server/discover", {"_meta": envelope}, timeout=DISCOVER_TIMEOUT)
        except RpcError as exc:
            if isinstance(exc, UpstreamGone):
                raise
            return False  # no answer in time: a handshake-era server that ignores unknown methods
        result = resp.get("result")
        versions = result.get("supportedVersions") if isinstance(result, dict) else None
        if not isinstance(result, dict) or not isinstance(versions, list) or MODERN_PROTOCOL not in versions:
            return False
        caps, meta = result.get("capabilities"), result.get("_meta")
        info = meta.get(modern.SERVER_INFO_META) if isinstance(meta, dict) else None
        self.capabilities = caps if isinstance(caps, dict) else {}
        self.server_info = info if isinstance(info, dict) else {}
        self.modern = True
        return True

    async def _listen(self, peer: Peer) -> None:
        """The stateless era's list changes: one subscriptions/listen stream for as long as the peer
        lives (its notifications reach the handler like any other); reopened if the server ends it."""
        wanted = {
            key: True
            for key, cap in (("toolsListChanged", "tools"), ("promptsListChanged", "prompts"),
                             ("resourcesListChanged", "resources"))
            if isinstance(self.capabilities.get(cap), dict) and self.capabilities[cap].get("listChanged")
        }  # fmt: skip
        if not wanted:
            return
        while not peer.closed:
            try:
                await peer.request("subscriptions/listen", self.with_envelope({"notifications": wanted}))
            except RpcError as exc:
                log.debug("server %s: subscriptions/listen ended: %s", self.name, exc.message)
            await trio.sleep(BACKOFF_CAP)  # the server ended the stream (or refused it): not in a hurry

    async def _initialize(self, peer: Peer) -> None:
        if await self._discover(peer):
            await self.refresh(peer)
            return
        resp = await peer.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}},
                "clientInfo": self._client_info,
            },
            timeout=INIT_TIMEOUT,
        )
        if "error" in resp:
            err = resp["error"] if isinstance(resp["error"], dict) else {}
            raise RpcError(jsonrpc.INTERNAL_ERROR, str(err.get("message", "error")))
        result = resp.get("result")
        result = result if isinstance(result, dict) else {}
        caps = result.get("capabilities")
        info = result.get("serverInfo")
        self.capabilities = caps if isinstance(caps, dict) else {}
        self.server_info = info if isinstance(info, dict) else {}
        await peer.notify("notifications/initialized")
        await self.refresh(peer)

    async def refresh(self, peer: Peer | None = None, what: str | None = None) -> None:
        """(Re)load the server's lists. ``what`` limits it to 'tools', 'prompts' or 'resources'."""
        peer = peer or self.peer
        if peer is None:
            return
        caps = self.capabilities
        async with self._refresh_lock:
            if "tools" in caps and what in (None, "tools"):
                self.listing.tools = await self._list_all(peer, "tools/list", "tools")
            if "prompts" in caps and what in (None, "prompts"):
                self.listing.prompts = await self._list_all(peer, "prompts/list", "prompts")
            if "resources" in caps and what in (None, "resources"):
                self.listing.resources = await self._list_all(peer, "resources/list", "resources")
                self.listing.templates = await self._list_all(
                    peer, "resources/templates/list", "resourceTemplates", optional=True
                )

    async def _list_all(self, peer: Peer, method: str, key: str, optional: bool = False) -> list[Any]:
        items: list[Any] = []
        cursor = None
        for _ in range(PAGE_LIMIT):
            params = self.with_envelope({"cursor": cursor} if cursor else None)
            resp = await peer.request(method, params, timeout=LIST_TIMEOUT)
            if "error" in resp:
                if optional:
                    return items
                err = resp["error"] if isinstance(resp["error"], dict) else {}
                raise RpcError(jsonrpc.INTERNAL_ERROR, f"{method}: {err.get('message')}")
            result = resp.get("result")
            result = result if isinstance(result, dict) else {}
            page = result.get(key) or []
            if isinstance(page, list):
                items.extend(x for x in page if isinstance(x, dict))
            cursor = result.get("nextCursor")
            if not cursor or not isinstance(cursor, str):
                break
        return items
