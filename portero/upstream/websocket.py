"""Remote MCP servers over WebSocket (``ws://``, ``wss://``): one JSON-RPC message per text frame.

The connection is made in three bounded steps, all within the server's ``connect_timeout``: TCP, the
TLS handshake (``wss://``; verification always on, ``ca_file`` trusted besides the system's CAs), and
the HTTP upgrade with the ``mcp`` subprotocol and the credentials' headers (the configured ones and
the server's own token; never the gateway client's). Doing TCP and TLS ourselves, before handing the
stream to trio-websocket, is what makes a refused port or a bad certificate fail at once with its
own reason, instead of as an opaque handshake timeout.

Once connected, a :class:`~portero.upstream.peer.Peer` runs over two in-memory
:class:`~portero.upstream.pipe.Pipe` objects, so the request table, ordering, bounded queue and write
timeout are the same as for a local process:

- each line the peer writes becomes one text frame;
- each text frame received is parsed and re-encoded as one line for the peer (a pretty-printed
  message with raw newlines stays one message). A binary frame or a text frame that is not JSON is
  logged (its size, never its content) and ignored — a server that sends
  :data:`MAX_JUNK_FRAMES` of them in a row, with no valid message between, is treated as broken
  and disconnected, so a flood costs log lines only up to a bound;
- a frame larger than ``max_message_bytes`` (counted in characters by trio-websocket, then in
  bytes by the peer) closes the connection with 1009;
- a ping every :data:`PING_INTERVAL`; no pong within :data:`PING_TIMEOUT` means the server is gone.

The peer ends with a reason that names the close code (``closed the connection (code 1001
GOING_AWAY)``); the supervisor then reconnects with back-off. A handshake refused with 401 asks the
credentials once whether fresh ones are ready (an OAuth refresh), then gives up; every failure to
connect is an ``OSError`` whose text names the step and the status, never a header value.

Known limit: a server that accepts TCP (and TLS) but drops the connection in the middle of the HTTP
upgrade is reported when ``connect_timeout`` runs out, not at once (trio-websocket waits for the
upgrade's answer without noticing the end of the stream).
"""

from __future__ import annotations

import logging
import math
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from ..config import McpServer
from ..core import jsonrpc
from .auth import Credentials
from .peer import MessageHandler, Peer
from .pipe import Pipe

log = logging.getLogger("portero.upstream")

SUBPROTOCOL = "mcp"
PING_INTERVAL = 20.0
PING_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0  # our close frame, the server's answer, the TCP close
DRAIN_TIMEOUT = 0.5  # after the server closed: for the peer to take what was received before
MAX_JUNK_FRAMES = 100  # binary or non-JSON frames in a row before the server counts as broken
OUTGOING_FACTOR = 4  # what we send is bounded by the front's own limits; this only caps memory
CLOSE_REASON_CHARS = 120  # of the server's close reason, in the peer's reason (shown by /health)

# Set by the WebSocket handshake itself; a configured header of these names would corrupt it.
_HANDSHAKE_HEADERS = frozenset({"host", "upgrade", "connection", "content-length", "transfer-encoding"})


def _seconds(value: float) -> str:
    return f"{value:g}s"


@attrs.frozen
class Target:
    """Where a ``ws://`` or ``wss://`` URL points: what TCP, TLS and the upgrade request need."""

    host: str
    port: int
    resource: str  # path and query, as sent in the request line
    tls: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Target:
        """Raises ``OSError`` for a URL that cannot be connected to (config validation should
        have caught it: the supervisor shows the reason as the server's last error)."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss"):
            raise OSError(f"not a WebSocket URL (scheme {scheme or 'missing'})")
        try:
            port = parts.port
        except ValueError:
            raise OSError("the URL's port is not a number from 0 to 65535") from None
        if not parts.hostname:
            raise OSError("the URL has no host")
        resource = parts.path or "/"
        if parts.query:
            resource += "?" + parts.query
        tls = scheme == "wss"
        return cls(parts.hostname, port or (443 if tls else 80), resource, tls)


def close_text(name: str, reason: CloseReason | None) -> str:
    """The peer's end reason for a closed connection: who closed it and the close code, so
    ``/health`` tells a server restart (1001) from a protocol complaint (1002, 1008) or a lost
    connection (1006, no close frame at all)."""
    if reason is None:
        return f"connection to server {name} lost"
    said = f": {reason.reason[:CLOSE_REASON_CHARS]}" if reason.reason else ""
    what = f"code {reason.code} {reason.name}{said}"
    if reason.code == 1006:
        return f"connection to server {name} lost ({what})"
    return f"server {name} closed the connection ({what})"


def handshake_headers(headers: dict[str, str], name: str) -> list[tuple[bytes, bytes]]:
    """The credentials' headers as the upgrade request sends them, minus those the handshake sets
    itself. Raises ``OSError`` naming the header (never its value) when one cannot be sent."""
    out: list[tuple[bytes, bytes]] = []
    for key, value in headers.items():
        lower = key.lower()
        if lower in _HANDSHAKE_HEADERS or lower.startswith("sec-websocket-"):
            log.warning("server %s: header %s is set by the WebSocket handshake; not sending it", name, key)
            continue
        if any(c in value for c in "\r\n\0") or not key.isascii() or not key.strip() or ":" in key:
            raise OSError(f"header {key!r} cannot be sent")
        out.append((key.encode("ascii"), value.encode("utf-8")))
    return out


def _www_authenticate(rejected: ConnectionRejected) -> str | None:
    for key, value in rejected.headers:
        if key.lower() == b"www-authenticate":
            return value.decode("latin-1")
    return None


def _first_rejection(group: BaseExceptionGroup[ConnectionRejected]) -> ConnectionRejected:
    for exc in group.exceptions:
        return exc if isinstance(exc, ConnectionRejected) else _first_rejection(exc)
    raise AssertionError("an empty exception group")  # pragma: no cover - groups are never empty


class WebSocketTransport:
    """Connects to one configured ``[[mcp]]`` server at a ``ws://`` or ``wss://`` URL (see the
    module docstring). One instance serves one supervised server; each :meth:`open` is a new
    connection."""

    def __init__(
        self,
        cfg: McpServer,
        credentials: Credentials,
        *,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
    ) -> None:
        self.cfg = cfg
        self.credentials = credentials
        self.returncode: int | None = None  # a remote server has no exit status
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout

    @asynccontextmanager
    async def open(self, name: str, handler: MessageHandler, max_message_bytes: int) -> AsyncIterator[Peer]:
        """Connect; yield a running :class:`Peer`; on exit close the connection (bounded).

        Raises ``OSError`` when the server cannot be reached, the TLS or WebSocket handshake fails
        or is refused, and :class:`~portero.upstream.auth.NeedsLogin` from the credentials.
        """
        target = Target.parse(self.cfg.url)
        ssl_context = self._ssl_context() if target.tls else None
        retried = False
        while True:
            headers = handshake_headers(await self.credentials.headers(), name)
            # One deadline for TCP, TLS and the upgrade (an OAuth refresh above is not counted).
            deadline = trio.current_time() + self.cfg.connect_timeout
            stream = await self._open_stream(target, ssl_context, deadline)
            rejected: ConnectionRejected | None = None
            try:
                async with trio.open_nursery() as nursery:  # trio-websocket's reader task lives here
                    ws: WebSocketConnection | None = None
                    with trio.move_on_at(deadline):
                        ws = await wrap_client_stream(
                            nursery,
                            stream,
                            target.host_header,
                            target.resource,
                            subprotocols=[SUBPROTOCOL],
                            extra_headers=headers,
                            max_message_size=max_message_bytes,
                        )
                    if ws is not None:
                        async with self._session(nursery, ws, name, handler, max_message_bytes) as peer:
                            yield peer
                        return
                    nursery.cancel_scope.cancel()
            except* ConnectionRejected as group:
                rejected = _first_rejection(group)
            finally:
                await trio.aclose_forcefully(stream)
            if rejected is None:
                raise OSError(
                    f"no answer to the WebSocket handshake within {_seconds(self.cfg.connect_timeout)}"
                )
            if rejected.status_code == 401:
                if not retried and await self.credentials.unauthorized(_www_authenticate(rejected)):
                    retried = True
                    continue
                raise OSError(
                    "WebSocket handshake refused: HTTP 401 unauthorized (check the server's credentials)"
                )
            raise OSError(f"WebSocket handshake refused: HTTP {rejected.status_code}")

    async def login_changed(self) -> None:
        await self.credentials.changed()

    # -- connecting ----------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        """The system's CAs, plus ``ca_file``; verification and host name checks always on."""
        context = ssl.create_default_context()
        if self.cfg.ca_file:
            try:
                context.load_verify_locations(cafile=self.cfg.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise OSError(f"cannot load ca_file {self.cfg.ca_file}: {exc.__class__.__name__}") from None
        return context

    async def _open_stream(
        self, target: Target, ssl_context: ssl.SSLContext | None, deadline: float
    ) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
        """TCP, then TLS when asked, by ``deadline``; each failure an ``OSError`` naming the step."""
        where = f"{target.host}:{target.port}"
        tcp: trio.SocketStream | None = None
        with trio.move_on_at(deadline):
            try:
                tcp = await trio.open_tcp_stream(target.host, target.port)
            except OSError as exc:
                raise OSError(f"cannot connect to {where}: {exc.strerror or exc}") from None
        if tcp is None:
            raise OSError(f"cannot connect to {where}: no answer within {_seconds(self.cfg.connect_timeout)}")
        if ssl_context is None:
            return tcp
        tls = trio.SSLStream(tcp, ssl_context, server_hostname=target.host, https_compatible=True)
        try:
            with trio.move_on_at(deadline) as waited:
                await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(tcp)
            cause = exc.__cause__
            detail = (
                getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or "connection lost"
            )
            raise OSError(f"TLS handshake with {where} failed: {detail}") from None
        if waited.cancelled_caught:
            await trio.aclose_forcefully(tcp)
            raise OSError(
                f"TLS handshake with {where}: no answer within {_seconds(self.cfg.connect_timeout)}"
            )
        return tls

    # -- connected -----------------------------------------------------------------------
    @asynccontextmanager
    async def _session(
        self,
        nursery: trio.Nursery,
        ws: WebSocketConnection,
        name: str,
        handler: MessageHandler,
        max_message_bytes: int,
    ) -> AsyncIterator[Peer]:
        if ws.subprotocol != SUBPROTOCOL:
            log.debug("server %s did not confirm the %s subprotocol; going on", name, SUBPROTOCOL)
        to_server = Pipe()
        # Unbuffered: a frame is handed over only when the peer reads it, so the server is slowed
        # down by the peer's bounded queue, and "written" means "read" when the connection ends.
        from_server = Pipe(capacity=0)
        peer = Peer(name, to_server, from_server, max_message_bytes=max_message_bytes, handler=handler)
        nursery.start_soon(peer.run)
        nursery.start_soon(self._send_frames, ws, to_server, peer, OUTGOING_FACTOR * max_message_bytes)
        nursery.start_soon(self._receive_frames, ws, from_server, peer)
        nursery.start_soon(self._keep_alive, ws, peer)
        log.info("server %s connected (%s)", name, self.cfg.url.split("?", 1)[0])
        try:
            yield peer
        finally:
            peer.fail(peer.close_reason or f"server {name} disconnected")
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(1000)
            nursery.cancel_scope.cancel()

    async def _send_frames(self, ws: WebSocketConnection, pipe: Pipe, peer: Peer, limit: int) -> None:
        """Each line the peer writes, as one text frame (the lines are valid UTF-8 JSON)."""
        try:
            async for line in pipe.messages(limit):
                await ws.send_message(line.decode("utf-8"))
        except ConnectionClosed as exc:
            peer.fail(close_text(peer.name, exc.reason))
        except jsonrpc.MessageTooLarge as exc:
            peer.fail(f"a message to server {peer.name} was too large ({exc})")

    async def _receive_frames(self, ws: WebSocketConnection, pipe: Pipe, peer: Peer) -> None:
        """Each text frame, validated and re-encoded as one line for the peer; junk is skipped."""
        junk = 0
        while True:
            try:
                frame = await ws.get_message()
            except ConnectionClosed as exc:
                reason = close_text(peer.name, exc.reason)
                break
            if isinstance(frame, str):
                try:
                    line = jsonrpc.encode(jsonrpc.decode(frame))
                except (jsonrpc.ParseError, ValueError):
                    what = f"a text frame that is not JSON-RPC ({len(frame)} characters)"
                else:
                    junk = 0
                    try:
                        await pipe.send_all(line)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return  # the peer is gone; the block is being left
                    continue
            else:
                what = f"a binary frame ({len(frame)} bytes)"
            junk += 1
            # The first of a run at warning level, the rest at debug: a flood cannot flood the log.
            log.log(
                logging.WARNING if junk == 1 else logging.DEBUG,
                "server %s: ignoring %s",
                peer.name,
                what,
            )
            if junk >= MAX_JUNK_FRAMES:
                reason = f"server {peer.name} sent {junk} frames in a row that are not JSON-RPC messages"
                log.error("%s; disconnecting", reason)
                break
        # Let the peer take what arrived before the end (an answer sent just before a close):
        # the pipe is unbuffered, so this blank line is taken only after everything before it.
        with trio.move_on_after(DRAIN_TIMEOUT):
            try:
                await pipe.send_all(b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        peer.fail(reason)

    async def _keep_alive(self, ws: WebSocketConnection, peer: Peer) -> None:
        """A ping every ``ping_interval``; a server that does not answer in ``ping_timeout`` is
        gone (a half-open TCP connection would otherwise look alive until the next call)."""
        if not math.isfinite(self._ping_interval):
            return
        while True:
            await trio.sleep(self._ping_interval)
            with trio.move_on_after(self._ping_timeout) as waited:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return  # the receiving side reports the close
            if waited.cancelled_caught:
                peer.fail(f"server {peer.name} did not answer a ping within {_seconds(self._ping_timeout)}")
                return
