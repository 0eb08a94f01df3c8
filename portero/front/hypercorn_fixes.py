"""The fixes Portero carries for hypercorn's trio worker, written for hypercorn 0.18.0 only.

We stay on hypercorn (the chosen stack); where its trio worker is wrong, the smallest fix lives
here, as a subclass of exactly the piece concerned, installed by :func:`install` before serving.
:func:`install` refuses any other hypercorn version: a new release must be re-checked against the
defects below (``tests/integration/test_hostile_http.py`` fails without these fixes) and
:data:`WRITTEN_FOR` updated.

Upstream defects (hypercorn 0.18.0, ``hypercorn/trio/tcp_server.py``, class ``TCPServer``):

1. **A race that ends the process.** ``_close()`` calls ``stream.send_eof()`` without taking
   ``send_lock``, while another task of the same connection may be inside ``send_all()`` (for
   example h11 answering "400 Got data when expecting EOF" to a ``Connection: close`` request
   followed by stray bytes, while the app task's ``Closed`` path runs ``_close()``). trio's
   conflict detector then raises ``BusyResourceError`` in ``send_all``, which nothing catches:
   it escapes the connection handler into ``trio.serve_listeners``' handler nursery and takes the
   whole server — and with it every session, call and pending approval — down. A 25-byte
   unauthenticated request did it within 16 tries. Fix: ``_close()`` takes the send lock (bounded
   wait; never when this task already holds it).
2. **One connection's error is everyone's.** Any exception a connection handler raises ends the
   server, for the reason above. Fix: ``run()`` contains errors of its own connection (logged);
   cancellation still passes.
3. **No bound on how long a request's headers may take, nor on connections.** A client that sends
   a request one byte every few seconds keeps its connection (and a file descriptor) forever, and
   hundreds of them exhaust the descriptors (slowloris). Fix: from a connection's start, and from
   the first byte of each later request, the request head must be complete within
   ``header_timeout``; at most ``max_connections`` connections are served at once, further ones
   are closed at once.

And two for speed, measured in ``bench/`` (each is on the path of every tool call):

4. **An idle-timeout task restarted after every response.** Every request stops the connection's
   idle watcher and every response starts a new one (``TrioSingleTask.restart``: a lock and a
   ``nursery.start`` each time). Here one watcher lives as long as the connection, and a request or
   a response only moves its cancel scope's deadline.
5. **Three writes per response.** The head, the body and the (empty) end of a response are three
   ``send_all`` calls. Here a response head is held until the next write of the connection (its
   first body chunk, or the end of the message) and leaves with it; empty writes are skipped.
"""

from __future__ import annotations

import logging
from importlib import metadata
from math import inf

import h11
import hypercorn.trio.run as hypercorn_run
import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

log = logging.getLogger("portero.http")

WRITTEN_FOR = "0.18.0"
CLOSE_LOCK_WAIT = 1.0  # how long _close waits for a send in progress before closing anyway
HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 512


class Limits:
    """Settings of the fixed server, set by :func:`install`."""

    header_timeout: float = HEADER_TIMEOUT
    connections: trio.CapacityLimiter | None = None


class PorteroTCPServer(TCPServer):
    """hypercorn's trio ``TCPServer`` with the three fixes of the module docstring."""

    async def run(self) -> None:
        limiter = Limits.connections
        if limiter is not None:
            try:
                limiter.acquire_on_behalf_of_nowait(self)
            except trio.WouldBlock:
                log.warning("connection limit (%d) reached: closing a new connection", limiter.total_tokens)
                await trio.aclose_forcefully(self.stream)
                return
        try:
            await super().run()
        except Exception as exc:  # fix 2: never trio.Cancelled (a BaseException), which must pass
            log.warning("an HTTP connection failed: %s: %s", exc.__class__.__name__, exc)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
        finally:
            if limiter is not None:
                limiter.release_on_behalf_of(self)

    _held: bytes = b""  # a response head waiting for its body (fix 5)
    _idle: bool = True  # no request in progress (fix 4)
    _idle_scope: trio.CancelScope | None = None

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            data = event.data
            if not self._held and data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1"):
                self._held = bytes(data)  # fix 5: leaves with the first body chunk
                return
            if self._held:
                data, self._held = self._held + data, b""
            if not data:
                return
            async with self.send_lock:
                try:
                    with trio.CancelScope(shield=True):
                        await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.protocol.handle(Closed())
        elif isinstance(event, Updated):
            self._set_idle(event.idle)  # fix 4: no task restart per request
        else:
            if self._held:
                await self.protocol_send(RawData(data=b""))  # flush a held head before closing
            await super().protocol_send(event)
            if isinstance(event, Closed):
                # The connection is closed: its idle watcher must not hold the handler open (upstream
                # stopped it at the request's start; ours lives on, so stop it here).
                await self.idle_task.stop()

    def _set_idle(self, idle: bool) -> None:
        self._idle = idle
        if self._idle_scope is not None:
            self._idle_scope.deadline = self._idle_deadline()

    def _idle_deadline(self) -> float:
        if not self._idle:
            return inf
        if self.context.terminated.is_set():
            return trio.current_time()  # shutting down: an idle connection closes now
        return trio.current_time() + self.config.keep_alive_timeout

    async def _idle_timeout(self) -> None:
        # One watcher for the connection's life: it closes the connection when it has been idle
        # for keep_alive_timeout, or when the server shuts down while it is idle (a request in
        # progress is let finish, as upstream's stopped watcher does).
        with trio.CancelScope(deadline=self._idle_deadline()) as scope:
            self._idle_scope = scope
            await self.context.terminated.wait()
            if not self._idle:
                scope.deadline = self._idle_deadline()
                await trio.sleep_forever()  # until the request is done: _set_idle moves the deadline
        self._idle_scope = None
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    async def _close(self) -> None:
        # Fix 1: send_eof only under the send lock, so it never races a send_all.
        if self.send_lock.statistics().owner is trio.lowlevel.current_task():
            await super()._close()
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_LOCK_WAIT):
                async with self.send_lock:
                    await super()._close()
                    return
            await self.stream.aclose()  # a send is stuck: close without the EOF

    async def _read_data(self) -> None:
        # As upstream, plus fix 3's deadline for a request head: the first one from the start.
        deadline: float | None = trio.current_time() + Limits.header_timeout
        while True:
            timeout = self.config.read_timeout or inf
            if deadline is not None:
                timeout = min(timeout, deadline - trio.current_time())
            try:
                with trio.fail_after(max(timeout, 0.0)):
                    data = await self.stream.receive_some(MAX_RECV)
            except trio.TooSlowError:
                # Upstream only stops reading here; the keep-alive watcher would then hold the
                # connection for keep_alive_timeout more. Stop it, so the connection closes now.
                await self.idle_task.stop()
                break
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            else:
                await self.protocol.handle(RawData(bytes(data)))
                if data == b"":
                    break
            if self._reading_head():
                if deadline is None:
                    deadline = trio.current_time() + Limits.header_timeout
            else:
                deadline = None
        if self._idle:
            await self.idle_task.stop()  # the client left or the stream broke: close now
        await self.protocol.handle(Closed())

    def _reading_head(self) -> bool:
        """True while part of a request head is buffered and the head is not complete yet."""
        proto = getattr(self.protocol, "protocol", None)
        if not isinstance(proto, H11Protocol) or not isinstance(proto.connection, h11.Connection):
            return False  # HTTP/2 and WebSocket connections: no request head to time
        conn = proto.connection
        return conn.their_state is h11.IDLE and bool(conn.trailing_data[0])


def installed_version() -> str:
    return metadata.version("hypercorn")


def install(*, header_timeout: float = HEADER_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
    """Serve with :class:`PorteroTCPServer`; refuses a hypercorn these fixes were not written for."""
    version = installed_version()
    if version != WRITTEN_FOR:
        raise RuntimeError(
            f"hypercorn {version} is installed, but Portero's fixes (portero/front/hypercorn_fixes.py) "
            f"were written for {WRITTEN_FOR}: install hypercorn=={WRITTEN_FOR}"
        )
    Limits.header_timeout = header_timeout
    Limits.connections = trio.CapacityLimiter(max_connections)
    hypercorn_run.TCPServer = PorteroTCPServer  # type: ignore[attr-defined]
