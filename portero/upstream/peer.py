"""A JSON-RPC peer over any pair of Trio byte streams: newline-delimited messages.

One reader task, one table of pending requests (our own integer ids, so two clients' ``id: 1``
never collide), one writer lock with a bounded write. Every pending slot is popped in ``finally``;
when the peer goes away — EOF, a protocol failure, a write that cannot complete — every waiter is
woken at once with :class:`UpstreamGone`.

What the other side sends on its own is handled in the order it was read, by one worker task fed
through a bounded channel (no task per message, so a flooding server costs bounded memory: once
the channel is full the reader stops reading and the server's writes block):

- notifications are handed to the handler in order;
- a response read after a notification is delivered only after that notification was handled, so
  progress and log messages reach the client before the answer they precede;
- the server's own requests (sampling, elicitation, roots, ping) each run in a task, at most
  :data:`MAX_INCOMING_REQUESTS` at once; past that the server gets an error at once.

A server that stops reading its input cannot hang callers: each write is bounded by
``write_timeout``; a write that cannot complete marks the peer broken (callers get
:class:`UpstreamGone`, the supervisor restarts the server); a write is never cut in the middle
(a cancelled caller waits for it), so the server only ever reads whole messages.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..core import jsonrpc
from ..core.jsonrpc import RpcError
from ..durations import format_duration

log = logging.getLogger("portero.upstream")

WRITE_TIMEOUT = 10.0  # a server that has not taken a message for this long is broken
INCOMING_QUEUE = 256  # messages read but not yet handled; the reader waits beyond it
MAX_INCOMING_REQUESTS = 32  # the server's own requests being answered at once
CANCEL_NOTICE_TIMEOUT = 1.0
NOTIFY_TIMEOUT = 5.0
DRAIN_TIMEOUT = 1.0  # at the end of the stream, for what was read but not handled yet
READ_CHUNK = 65536


class UpstreamGone(RpcError):
    """The server went away (exited, broke the protocol, stopped reading) with a request in flight."""


@attrs.define(eq=False)
class _Slot:
    event: trio.Event = attrs.Factory(trio.Event)
    response: dict[str, Any] | None = None
    error: RpcError | None = None

    def resolve(self, response: dict[str, Any]) -> None:
        if not self.event.is_set():
            self.response = response
            self.event.set()

    def fail(self, error: RpcError) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()


# Handles the server's own requests and notifications: (peer, message) -> response or None.
MessageHandler = Callable[["Peer", dict[str, Any]], Awaitable[dict[str, Any] | None]]


class Peer:
    """One connection to an upstream MCP server. Run :meth:`run` in a nursery; then call away."""

    def __init__(
        self,
        name: str,
        send_stream: trio.abc.SendStream,
        receive_stream: trio.abc.ReceiveStream,
        *,
        max_message_bytes: int,
        handler: MessageHandler,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.name = name
        self._out = send_stream
        self._in = receive_stream
        self._buffer = jsonrpc.LineBuffer(max_message_bytes)
        self._handler = handler
        self._write_timeout = write_timeout
        self._pending: dict[int, _Slot] = {}
        self._next_id = 0
        self._send_lock = trio.Lock()
        self._queue_send, self._queue_recv = trio.open_memory_channel[tuple[dict[str, Any], _Slot | None]](
            INCOMING_QUEUE
        )
        self._queued = 0  # messages in the queue or being handled by the worker
        self._requests = trio.CapacityLimiter(MAX_INCOMING_REQUESTS)
        self.closed = False
        self.close_reason = ""
        self.dead = trio.Event()

    # -- sending -------------------------------------------------------------------------
    def _gone(self) -> UpstreamGone:
        return UpstreamGone(
            jsonrpc.SERVER_UNAVAILABLE, self.close_reason or f"server {self.name} is not running"
        )

    async def send(self, msg: dict[str, Any]) -> None:
        """Write one message; bounded by ``write_timeout``, after which the peer is broken.
        A message that cannot be encoded raises ``ValueError`` and writes nothing."""
        await self._write(jsonrpc.encode(msg))

    async def _write(self, data: bytes) -> None:
        if self.closed:
            raise self._gone()
        cut = False
        try:
            with trio.move_on_after(self._write_timeout) as waited:
                async with self._send_lock:
                    if self.closed:
                        raise self._gone()
                    # A send_all cut short may leave part of the message in the pipe (Trio: the
                    # stream's state is then unknown), and the next message would be glued to it.
                    # So a write, once begun, is bounded by write_timeout only — not by our
                    # caller's cancellation (its request timeout, a client gone), which takes
                    # effect right after it — and one that cannot complete breaks the peer.
                    with trio.CancelScope(deadline=waited.deadline, shield=True) as writing:
                        await self._out.send_all(data)
                    cut = writing.cancelled_caught
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.fail(f"server {self.name} closed its input")
            raise self._gone() from None
        if cut or waited.cancelled_caught:
            # A half-written message may sit in the pipe: the stream is unusable from here on.
            self.fail(f"server {self.name} stopped reading its input")
            raise self._gone()

    async def notify(self, method: str, params: Any = None) -> None:
        await self.send(jsonrpc.notification(method, params))

    async def request(self, method: str, params: Any = None, *, timeout: float = math.inf) -> dict[str, Any]:
        """Send a request and wait for its response message (``result`` or ``error`` inside).

        Raises :class:`UpstreamGone` if the peer goes away first, ``RpcError(REQUEST_TIMEOUT)``
        once ``timeout`` (which covers waiting to write too; a write once begun is bounded by
        ``write_timeout`` instead) has passed; then, and when the caller is cancelled, the server
        is told with ``notifications/cancelled``.
        """
        if self.closed:
            raise self._gone()
        self._next_id += 1
        rid = self._next_id
        data = jsonrpc.encode(jsonrpc.request(rid, method, params))  # ValueError before anything is sent
        slot = _Slot()
        self._pending[rid] = slot
        try:
            with trio.move_on_after(timeout):
                await self._write(data)
                await slot.event.wait()
            if slot.error is not None:
                raise slot.error
            if slot.response is None:
                raise RpcError(
                    jsonrpc.REQUEST_TIMEOUT,
                    f"{self.name}: {method} timed out after {format_duration(timeout)}",
                )
            return slot.response
        finally:
            self._pending.pop(rid, None)
            if not slot.event.is_set() and not self.closed:
                # Timed out, or cancelled by our caller: tell the server, without waiting long.
                slot.fail(RpcError(jsonrpc.REQUEST_TIMEOUT, "cancelled"))
                with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_NOTICE_TIMEOUT):
                    try:
                        await self.notify(
                            "notifications/cancelled",
                            {"requestId": rid, "reason": "cancelled by the gateway"},
                        )
                    except RpcError:
                        pass

    def in_flight(self) -> int:
        return len(self._pending)

    # -- receiving -----------------------------------------------------------------------
    async def run(self) -> None:
        """Read until EOF or a protocol failure, handling what arrives; then fail every waiter."""
        reason = f"server {self.name} exited"
        try:
            async with trio.open_nursery() as nursery:
                drained = trio.Event()
                nursery.start_soon(self._worker, nursery, drained)
                reason = await self._read_loop()
                # What was read before the end is still handled (a response after a notification
                # waits in the queue), bounded: then the server's own requests are cut off.
                self._queue_send.close()
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await drained.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.fail(reason)

    async def _read_loop(self) -> str:
        while True:
            try:
                data = await self._in.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return f"server {self.name} exited"
            if not data:
                return f"server {self.name} exited"
            try:
                lines = self._buffer.feed(data)
            except jsonrpc.MessageTooLarge as exc:
                reason = f"server {self.name} sent a {exc}; restarting it"
                log.error("%s", reason)
                return reason
            for line in lines:
                await self._dispatch(line)

    async def _dispatch(self, line: bytes) -> None:
        try:
            msg = jsonrpc.decode(line)
        except jsonrpc.ParseError as exc:
            log.warning("%s: ignoring a line that is not JSON-RPC: %s", self.name, exc)
            return
        kind = jsonrpc.kind(msg)
        if kind == "response":
            rid = msg.get("id")
            slot = self._pending.get(rid) if isinstance(rid, int) and not isinstance(rid, bool) else None
            if slot is None:
                log.debug("%s: response to an unknown or finished request %r", self.name, rid)
                return
            if self._queued == 0:
                slot.resolve(msg)  # the common case: nothing read before it is still being handled
            else:
                await self._enqueue(msg, slot)
        elif kind in ("request", "notification"):
            await self._enqueue(msg, None)
        elif msg.get("error") is not None and msg.get("id") is None:
            log.warning("%s reported an error: %s", self.name, str(msg.get("error"))[:300])
        else:
            log.warning("%s: ignoring an invalid message", self.name)

    async def _enqueue(self, msg: dict[str, Any], slot: _Slot | None) -> None:
        self._queued += 1
        await self._queue_send.send((msg, slot))

    async def _worker(self, nursery: trio.Nursery, drained: trio.Event) -> None:
        async for msg, slot in self._queue_recv:
            try:
                if slot is not None:
                    slot.resolve(msg)
                elif "id" in msg:
                    await self._start_request(nursery, msg)
                else:
                    # A notification handler only routes (it never waits for a client); the bound
                    # keeps a bug from stalling every answer of this server.
                    with trio.move_on_after(NOTIFY_TIMEOUT):
                        await self._handle(msg)
            finally:
                self._queued -= 1
        drained.set()

    async def _start_request(self, nursery: trio.Nursery, msg: dict[str, Any]) -> None:
        if not jsonrpc.hashable_id(msg["id"]):
            # An object or array id cannot key the limiter below (a TypeError there would kill the
            # reader); JSON-RPC answers an invalid id with a null one.
            await self._reply(jsonrpc.error_response(None, jsonrpc.INVALID_REQUEST, "invalid request id"))
            return
        try:
            self._requests.acquire_on_behalf_of_nowait(msg["id"])
        except trio.WouldBlock:
            log.warning("%s: too many requests of its own at once; refusing %s", self.name, msg.get("method"))
            await self._reply(
                jsonrpc.error_response(msg["id"], jsonrpc.INTERNAL_ERROR, "too many concurrent requests")
            )
            return
        except RuntimeError:  # the same id twice at once
            await self._reply(
                jsonrpc.error_response(msg["id"], jsonrpc.INVALID_REQUEST, "duplicate request id")
            )
            return

        async def answer() -> None:
            try:
                await self._reply(await self._handle(msg))
            finally:
                self._requests.release_on_behalf_of(msg["id"])

        nursery.start_soon(answer)

    async def _handle(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return await self._handler(self, msg)
        except RpcError as exc:
            return jsonrpc.error_response(msg.get("id"), exc.code, exc.message, exc.data)
        except Exception as exc:  # a bug in a handler must not take the connection down
            log.exception("%s: handling %s failed", self.name, msg.get("method"))
            return {"jsonrpc": "2.0", "id": msg.get("id"), "error": jsonrpc.error_from_exception(exc)}

    async def _reply(self, reply: dict[str, Any] | None) -> None:
        if reply is None or "id" not in reply or self.closed:
            return
        try:
            await self.send(reply)
        except RpcError:
            pass

    def fail(self, reason: str) -> None:
        """Mark the peer gone and wake every waiter with :class:`UpstreamGone` (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        err = UpstreamGone(jsonrpc.SERVER_UNAVAILABLE, reason)
        for slot in list(self._pending.values()):
            slot.fail(err)
        self.dead.set()
