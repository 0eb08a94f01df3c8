"""Test doubles at the stream boundary: a scripted MCP server on the far end of a real Peer.

Nothing of Portero is replaced: the gateway side is a real :class:`~portero.upstream.peer.Peer` over
``trio.testing`` memory streams, handed to a real :class:`~portero.upstream.supervisor.Upstream` as if
its transport had started it; the other end is :class:`FakeServer`, which speaks newline-delimited
JSON-RPC like an MCP server over stdio, records every message it reads, and answers with handlers
the test writes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from portero.core import jsonrpc
from portero.gateway.sessions import RequestContext
from portero.upstream.peer import MessageHandler, Peer
from portero.upstream.supervisor import Listing, Upstream

Message = dict[str, Any]
# A handler gets the server and the request's params and returns the response body:
# {"result": ...} or {"error": {...}}.
Handler = Callable[["FakeServer", Message], Awaitable[Message]]

WAIT = 5.0  # no single wait in a unit test should come anywhere near this


async def echo_call(server: FakeServer, params: Message) -> Message:
    """tools/call: answer with the arguments the server received, as JSON text."""
    args = params.get("arguments")
    return {"result": {"content": [{"type": "text", "text": json.dumps(args, sort_keys=True)}]}}


class FakeServer:
    """A scripted MCP server on one end of a memory stream pair. Run :meth:`run` in a nursery."""

    def __init__(self, stream: trio.abc.Stream, handlers: dict[str, Handler] | None = None) -> None:
        self.stream = stream
        self.handlers: dict[str, Handler] = {"tools/call": echo_call}
        self.handlers.update(handlers or {})
        self.received: list[Message] = []
        self._changed = trio.Event()
        self._buffer = jsonrpc.LineBuffer(1 << 20)
        self._send_lock = trio.Lock()
        self._scopes: dict[Any, trio.CancelScope] = {}
        self._answers: dict[Any, Message] = {}
        self._answered: dict[Any, trio.Event] = {}
        self._ids = itertools.count(1000)

    # -- what the gateway sent ------------------------------------------------------------------
    def requests(self, method: str) -> list[Message]:
        return [m for m in self.received if m.get("method") == method and "id" in m]

    def notifications(self, method: str) -> list[Message]:
        return [m for m in self.received if m.get("method") == method and "id" not in m]

    async def wait_for(self, predicate: Callable[[Message], bool]) -> Message:
        """The first message read (so far or later) that ``predicate`` accepts."""
        with trio.fail_after(WAIT):
            while True:
                for m in self.received:
                    if predicate(m):
                        return m
                await self._changed.wait()

    async def wait_for_method(self, method: str) -> Message:
        return await self.wait_for(lambda m: m.get("method") == method)

    # -- talking ------------------------------------------------------------------------------
    async def send(self, msg: Message) -> None:
        async with self._send_lock:
            await self.stream.send_all(jsonrpc.encode(msg))

    async def request(self, method: str, params: Any = None) -> Message:
        """A request of the server's own to the gateway (sampling, roots...); returns the response."""
        rid = next(self._ids)
        done = self._answered[rid] = trio.Event()
        await self.send(jsonrpc.request(rid, method, params))
        with trio.fail_after(WAIT):
            await done.wait()
        return self._answers.pop(rid)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    nursery.cancel_scope.cancel()
                    return
                for line in self._buffer.feed(data):
                    self._dispatch(jsonrpc.decode(line), nursery)

    def _dispatch(self, msg: Message, nursery: trio.Nursery) -> None:
        self.received.append(msg)
        self._changed.set()
        self._changed = trio.Event()
        kind = jsonrpc.kind(msg)
        if kind == "response":
            rid = msg["id"]
            if rid in self._answered:
                self._answers[rid] = msg
                self._answered.pop(rid).set()
        elif kind == "notification":
            if msg["method"] == "notifications/cancelled":
                scope = self._scopes.get(msg.get("params", {}).get("requestId"))
                if scope is not None:
                    scope.cancel()  # like a real server: stop working, send nothing
        elif kind == "request":
            nursery.start_soon(self._answer, msg)

    async def _answer(self, msg: Message) -> None:
        rid = msg["id"]
        handler = self.handlers.get(msg["method"])
        if handler is None:
            body: Message = {"error": {"code": jsonrpc.METHOD_NOT_FOUND, "message": "no such method"}}
        else:
            scope = self._scopes[rid] = trio.CancelScope()
            try:
                with scope:
                    body = await handler(self, msg.get("params") or {})
            finally:
                self._scopes.pop(rid, None)
            if scope.cancelled_caught:
                return
        await self.send({"jsonrpc": "2.0", "id": rid, **body})


async def attach_fake_server(
    nursery: trio.Nursery,
    upstream: Upstream,
    handler: MessageHandler,
    *,
    tools: list[Message],
    handlers: dict[str, Handler] | None = None,
    capabilities: Message | None = None,
    max_message_bytes: int = 1 << 20,
) -> FakeServer:
    """Connect ``upstream`` to a new :class:`FakeServer`, as its supervisor would after initialize;
    ``handler`` gets the server's own messages (the router's ``on_upstream_message``)."""
    gateway_end, server_end = trio.testing.memory_stream_pair()
    peer = Peer(
        upstream.name,
        gateway_end,
        gateway_end,
        max_message_bytes=max_message_bytes,
        handler=handler,
    )
    server = FakeServer(server_end, handlers)
    nursery.start_soon(peer.run)
    nursery.start_soon(server.run)
    upstream.peer = peer
    upstream.state = "ready"
    upstream.capabilities = capabilities if capabilities is not None else {"tools": {"listChanged": True}}
    upstream.listing = Listing(tools=list(tools))
    upstream.ready.set()
    return server


class Collector:
    """What the gateway sends on one request's response stream (the ``emit`` of a RequestContext)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = trio.Event()

    async def emit(self, msg: Message) -> None:
        self.messages.append(msg)
        self._changed.set()
        self._changed = trio.Event()

    def context(self, session: Any) -> RequestContext:
        return RequestContext(session=session, emit=self.emit)

    async def wait_for(self, predicate: Callable[[Message], bool]) -> Message:
        with trio.fail_after(WAIT):
            while True:
                for m in self.messages:
                    if predicate(m):
                        return m
                await self._changed.wait()
