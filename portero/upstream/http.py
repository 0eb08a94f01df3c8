"""Remote MCP servers over HTTP: the Streamable HTTP transport (protocol 2025-03-26 and later) and
the legacy HTTP+SSE transport (2024-11-05) that ``transport = "auto"`` falls back to.

The :class:`~portero.upstream.peer.Peer` does what every transport needs (request table, ordering,
the server's own requests answered through the handler); this module only carries its messages.
The peer writes each outgoing message into a :class:`~portero.upstream.pipe.Pipe`; one task reads
them in order and sends each:

- **Streamable HTTP.** Every message is a POST to the server's URL (``Accept: application/json,
  text/event-stream``). A request's POST runs in its own task, at most :data:`MAX_POSTS` at once,
  so a 30 s tool call never holds up another; its answer (JSON, one message or an array, or an SSE
  stream carrying progress, logs and the server's own requests before the response) is written
  into the peer's input pipe. Notifications and responses are POSTed in order, inline (the server
  answers them ``202`` at once), so ``notifications/initialized`` reaches the server before the
  first list request. ``initialize``'s answer gives the ``Mcp-Session-Id`` and the negotiated
  ``MCP-Protocol-Version``, sent on every later request. Then a GET stream carries what the server
  says on its own (``405``: it offers none), reconnected with ``Last-Event-ID``; a POST's stream
  that ends before its response is resumed the same way, a bounded number of times.
- **Legacy HTTP+SSE.** A GET opens the event stream; its ``endpoint`` event names the URL
  (same origin only) every message is POSTed to; every answer arrives on the stream.

Failures, and what the supervisor sees:

- cannot connect, a 5xx, an answer that is not MCP: the request concerned gets a JSON-RPC error
  (``initialize``'s makes the supervisor show ``initialize failed: …`` and retry with back-off);
  in ``sse`` mode, where the connection is the event stream, :class:`RemoteError` (an ``OSError``)
  is raised from :meth:`HttpTransport.open` before it yields;
- the session is gone (``404`` to a request that carried it), the event stream is lost: the peer
  is failed with the reason, so the supervisor re-initializes (clients' sessions survive);
- the credentials need a login (:class:`~portero.upstream.auth.NeedsLogin`, from
  ``Credentials.headers()`` or a 401 that ``Credentials.unauthorized()`` cannot fix): the peer is
  failed, and ``open()`` raises ``NeedsLogin`` when the block exits.

No message and no log line holds a header value or more of the URL than its origin (a path or
query may hold a key). Only the credentials' headers and the transport's own (``Accept``,
``Content-Type``, ``Mcp-Session-Id``, ``MCP-Protocol-Version``, ``Last-Event-ID`` and a
``User-Agent`` naming Portero) are sent; on a redirect to another origin only the transport's own
remain.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import trio

from .. import __version__
from ..config import McpServer
from ..core import jsonrpc
from ..core.jsonrpc import RpcError
from ..core.sse import BadEndpoint, Event, SseError, SseParser, resolve_endpoint, same_origin
from .auth import Credentials, NeedsLogin
from .peer import MessageHandler, Peer
from .pipe import Pipe

log = logging.getLogger("portero.upstream")

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
ACCEPT_BOTH = f"{JSON}, {EVENT_STREAM}"
MAX_POSTS = 32  # requests in flight to one server at once; more wait for a slot
SEND_TIMEOUT = 10.0  # a notification, a response, or a legacy POST: the server answers 202 at once
DELETE_TIMEOUT = 2.0  # ending the session when the block exits: best effort
WRITE_TIMEOUT = 30.0  # sending one request body
RECONNECT_DELAY = 1.0  # before reconnecting a stream, unless the server said otherwise (`retry`)
MAX_RECONNECT_DELAY = 30.0  # a server's `retry` beyond this is not waited for
MIN_RECONNECT_DELAY = 0.25  # `retry: 0` from a server that ends each GET at once is not a busy loop
STREAM_ATTEMPTS = 3  # failed reconnections of a stream in a row before giving up on it
REQUEST_GRACE = 60.0  # a request's POST lives at most max(call_timeout, INIT) + this
INIT_BOUND = 120.0
MAX_REDIRECTS = 5
ERROR_BODY_BYTES = 65536  # of a 4xx/5xx body, read to find a JSON-RPC error in it
FALLBACK_STATUSES = (400, 404, 405)  # the spec's backwards compatibility: no Streamable HTTP here
# What may follow a redirect to another origin: nothing that could be a credential.
_SAFE_HEADERS = frozenset(
    {"accept", "content-type", "content-length", "transfer-encoding", "host", "user-agent",
     "mcp-protocol-version", "last-event-id"}
)  # fmt: skip
_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class RemoteError(OSError):
    """The server cannot be reached or did not answer as an MCP server. The text is meant for
    ``/health``: readable, with no header value and no URL beyond its origin."""


class _Fatal(Exception):
    """This connection cannot go on (session gone, event stream lost): the peer is failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what error texts show of it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _describe(exc: httpx.RequestError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects"
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text[:200]}" if text else exc.__class__.__name__


def _content_type(resp: httpx.Response) -> str:
    value: str = resp.headers.get("content-type", "")
    return value.partition(";")[0].strip().lower()


def _messages(data: bytes | str) -> list[dict[str, Any]]:
    """The JSON-RPC messages of one body or one SSE ``data``: an object, or an array of them
    (2025-03-26 batches). ``ValueError`` when it is not JSON or holds something else."""
    value = jsonrpc.loads(data)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return value
    raise ValueError("not a JSON-RPC message")


def _answers(msg: dict[str, Any], rid: Any) -> bool:
    return jsonrpc.kind(msg) == "response" and msg.get("id") == rid


def _valid_header_value(value: str) -> bool:
    return bool(value) and value.isascii() and value.isprintable() and len(value) <= 1024


class _Stream:
    """An SSE response being read: its events one at a time, however the bytes were cut."""

    def __init__(self, resp: httpx.Response, parser: SseParser) -> None:
        self.resp = resp
        self.parser = parser
        self._chunks = cast(AsyncGenerator[bytes, None], resp.aiter_bytes())
        self._pending: list[Event] = []

    async def next(self) -> Event | None:
        """The next event, ``None`` at the end. Raises :class:`RemoteError` when the connection
        breaks, :class:`SseError` when the stream is unusable."""
        while not self._pending:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                return None
            except httpx.RequestError as exc:
                raise RemoteError(f"lost the connection ({_describe(exc)})") from None
            self._pending.extend(self.parser.feed(chunk))
        return self._pending.pop(0)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self._chunks.aclose()
            await self.resp.aclose()


def _retry_delay(parser: SseParser) -> float:
    """How long to wait before reconnecting a stream: the server's ``retry``, bounded both ways."""
    if parser.retry is None:
        return RECONNECT_DELAY
    return min(max(parser.retry / 1000, MIN_RECONNECT_DELAY), MAX_RECONNECT_DELAY)


def _resumed_parser(old: SseParser) -> SseParser:
    parser = SseParser(old.max_size)
    parser.last_event_id, parser.retry = old.last_event_id, old.retry
    return parser


class HttpTransport:
    """A remote server over Streamable HTTP, or the legacy HTTP+SSE transport (``transport``:
    ``auto`` tries the first and falls back, ``streamable-http`` never falls back, ``sse`` uses the
    legacy one only). ``http_transport`` replaces the network (tests: ``httpx.MockTransport``)."""

    def __init__(
        self,
        cfg: McpServer,
        credentials: Credentials,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.cfg = cfg
        self.credentials = credentials
        self.returncode: int | None = None  # there is no local process
        self._http_transport = http_transport

    def _ssl_context(self) -> ssl.SSLContext:
        """The system's CAs, plus ``ca_file``; verification always on. Raises ``OSError`` when the
        file cannot be read (the supervisor shows it and retries)."""
        ctx = ssl.create_default_context()
        if self.cfg.ca_file:
            try:
                ctx.load_verify_locations(cafile=self.cfg.ca_file)
            except ssl.SSLError as exc:
                raise RemoteError(f"ca_file {self.cfg.ca_file}: not a CA bundle ({exc.reason})") from None
        return ctx

    async def _client(self) -> httpx.AsyncClient:
        verify: ssl.SSLContext | bool = True
        if self._http_transport is None:
            verify = await trio.to_thread.run_sync(self._ssl_context)
        server_url = self.cfg.url

        async def strip_on_other_origin(request: httpx.Request) -> None:
            # httpx drops Authorization on a redirect to another host, but a configured header
            # (X-Api-Key…) would follow it; keep only what cannot be a credential.
            if not same_origin(str(request.url), server_url):
                for name in list(request.headers):
                    if name.lower() not in _SAFE_HEADERS:
                        del request.headers[name]

        client = httpx.AsyncClient(
            verify=verify,
            transport=self._http_transport,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            timeout=httpx.Timeout(
                connect=self.cfg.connect_timeout, read=None, write=WRITE_TIMEOUT, pool=None
            ),
            limits=httpx.Limits(max_connections=MAX_POSTS + 4, max_keepalive_connections=8),
            event_hooks={"request": [strip_on_other_origin]},
        )
        # httpx's defaults (Accept: */*, Accept-Encoding, Connection, its User-Agent) go: we send
        # only what the module docstring lists.
        for name in list(client.headers):
            del client.headers[name]
        client.headers["User-Agent"] = f"portero/{__version__}"
        return client

    @asynccontextmanager
    async def open(self, name: str, handler: MessageHandler, max_message_bytes: int) -> AsyncIterator[Peer]:
        """Connect; yield a running :class:`Peer`; on exit end the session (``DELETE``, bounded).

        Raises :class:`RemoteError` (``OSError``) when the legacy event stream cannot be opened,
        ``OSError`` when ``ca_file`` cannot be read, and :class:`NeedsLogin` (before yielding, or
        when the block exits after the peer was failed for it)."""
        client = await self._client()
        conn: _Connection | None = None
        try:
            conn = _Connection(self, name, client, handler, max_message_bytes)
            if self.cfg.transport == "sse":
                await conn.connect_legacy()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.peer.run)
                    nursery.start_soon(conn.pump, nursery)
                    if conn.legacy is not None:
                        nursery.start_soon(conn.guarded, conn.read_legacy)
                    try:
                        yield conn.peer
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                conn.peer.fail(conn.peer.close_reason or f"server {name} disconnected")
                await conn.close()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await client.aclose()
        if conn.needs_login is not None:
            raise conn.needs_login

    async def login_changed(self) -> None:
        await self.credentials.changed()
        await trio.lowlevel.checkpoint()


class _Connection:
    """One connection's state: the session, the pipes to the peer, the requests in flight."""

    def __init__(
        self,
        transport: HttpTransport,
        name: str,
        client: httpx.AsyncClient,
        handler: MessageHandler,
        max_message_bytes: int,
    ) -> None:
        self.cfg = transport.cfg
        self.credentials = transport.credentials
        self.name = name
        self.client = client
        self.url = transport.cfg.url
        self.origin = origin_of(self.url)
        self.max_bytes = max_message_bytes
        self.to_server = Pipe()  # the peer writes here; pump() sends
        self.from_server = Pipe()  # every message received is written here; the peer reads it
        self.peer = Peer(
            name, self.to_server, self.from_server, max_message_bytes=max_message_bytes, handler=handler
        )
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.legacy: _Stream | None = None  # the legacy transport's event stream
        self.endpoint = ""  # the legacy transport's POST URL
        self.needs_login: NeedsLogin | None = None
        self._init_id: Any = None
        self._listening = False
        self._posts = trio.CapacityLimiter(MAX_POSTS)
        self._in_flight: dict[Any, trio.CancelScope] = {}
        self._cancelled: set[Any] = set()  # requests the peer cancelled while their POST ran
        self._request_bound = max(self.cfg.call_timeout, INIT_BOUND) + REQUEST_GRACE

    # -- the outgoing side -------------------------------------------------------------------
    async def pump(self, nursery: trio.Nursery) -> None:
        """Send each message the peer writes, in order (requests each in a task of their own)."""

        async def send_all() -> None:
            async for line in self.to_server.messages(self.max_bytes):
                try:
                    msg = jsonrpc.decode(line)
                except jsonrpc.ParseError:
                    continue  # the peer writes only what it encoded itself
                await self._send(msg, nursery)

        try:
            await self.guarded(send_all)
        except jsonrpc.MessageTooLarge as exc:
            self._fail(f"server {self.name}: an outgoing {exc}")

    async def _send(self, msg: dict[str, Any], nursery: trio.Nursery) -> None:
        kind = jsonrpc.kind(msg)
        if self.legacy is not None:
            await self._legacy_post(msg)
        elif kind == "request" and msg.get("method") == "initialize" and self.session_id is None:
            await self._initialize(msg, nursery)
        elif kind == "request":
            nursery.start_soon(self.guarded, self._request, msg)
        else:
            await self._post_quietly(msg)
            method = msg.get("method")
            if method == "notifications/initialized" and not self._listening and self.legacy is None:
                self._listening = True
                nursery.start_soon(self.guarded, self._listen)
            elif method == "notifications/cancelled":
                params = msg.get("params")
                rid = params.get("requestId") if isinstance(params, dict) else None
                scope = self._in_flight.get(rid) if jsonrpc.hashable_id(rid) else None
                if scope is not None:
                    self._cancelled.add(rid)
                    scope.cancel()  # told the server first: a dropped connection is no cancellation

    async def guarded(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn``; what ends this connection fails the peer with a readable reason."""
        try:
            await fn(*args)
        except _Fatal as exc:
            self._fail(exc.reason)
        except NeedsLogin as exc:
            self.needs_login = exc
            self._fail(f"server {self.name} needs a login")

    def _fail(self, reason: str) -> None:
        if not self.peer.closed:
            log.warning("%s", reason)
        self.peer.fail(reason)

    # -- HTTP ------------------------------------------------------------------------------------
    @contextmanager
    def _credentials_errors(self) -> Iterator[None]:
        """Credentials that fail for a network reason (a token refresh that could not connect) are a
        readable :class:`RemoteError`, not a crash; NeedsLogin passes through."""
        try:
            yield
        except (OSError, httpx.HTTPError) as exc:
            raise RemoteError(
                f"credentials for {self.origin} unavailable ({exc.__class__.__name__})"
            ) from None

    async def _headers(
        self, accept: str, *, body: bool, session: bool, last_event_id: str | None
    ) -> dict[str, str]:
        own = {"Accept": accept}
        if body:
            own["Content-Type"] = JSON
        if session and self.session_id:
            own["Mcp-Session-Id"] = self.session_id
        if session and self.protocol_version:
            own["MCP-Protocol-Version"] = self.protocol_version
        if last_event_id:
            own["Last-Event-ID"] = last_event_id
        taken = {k.lower() for k in own} | _FRAMING
        with self._credentials_errors():
            configured = await self.credentials.headers()
        headers = {k: v for k, v in configured.items() if k.lower() not in taken}
        headers.update(own)
        return headers

    async def _open(
        self,
        method: str,
        url: str,
        *,
        accept: str,
        content: bytes | None = None,
        session: bool = True,
        last_event_id: str | None = None,
    ) -> httpx.Response:
        """Send one request and return the response with its body unread (the caller closes it).
        A 401 goes to the credentials, and the request is sent once more if they have new ones.
        Raises :class:`RemoteError`, or :class:`NeedsLogin` from the credentials."""
        for attempt in range(2):
            headers = await self._headers(
                accept, body=content is not None, session=session, last_event_id=last_event_id
            )
            try:
                resp = await self.client.send(
                    self.client.build_request(method, url, headers=headers, content=content), stream=True
                )
            except httpx.RequestError as exc:
                raise RemoteError(f"cannot reach {self.origin} ({_describe(exc)})") from None
            except httpx.InvalidURL:
                raise RemoteError(f"invalid URL for {self.origin}") from None
            if resp.status_code != 401:
                return resp
            challenge = resp.headers.get("www-authenticate")
            await resp.aclose()
            with self._credentials_errors():
                fresh = attempt == 0 and await self.credentials.unauthorized(challenge)
            if fresh:
                continue
            break
        raise RemoteError(f"{self.origin} refused the credentials (HTTP 401)")

    @asynccontextmanager
    async def _http(
        self,
        method: str,
        url: str,
        *,
        accept: str,
        content: bytes | None = None,
        session: bool = True,
        last_event_id: str | None = None,
    ) -> AsyncIterator[httpx.Response]:
        resp = await self._open(
            method, url, accept=accept, content=content, session=session, last_event_id=last_event_id
        )
        try:
            yield resp
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await resp.aclose()

    async def _read_body(self, resp: httpx.Response, limit: int) -> bytes:
        body = bytearray()
        chunks = cast(AsyncGenerator[bytes, None], resp.aiter_bytes())
        try:
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    raise RpcError(
                        jsonrpc.INTERNAL_ERROR,
                        f"server {self.name} answered with more than {limit} bytes",
                    )
        except httpx.RequestError as exc:
            raise RpcError(
                jsonrpc.SERVER_UNAVAILABLE, f"server {self.name}: lost the connection ({_describe(exc)})"
            ) from None
        finally:
            await chunks.aclose()
        return bytes(body)

    async def _http_error(self, resp: httpx.Response) -> RpcError:
        """A non-2xx answer as an error for the caller: the server's JSON-RPC error when the body
        holds one (a spec-abiding server puts it there), else the status."""
        status = resp.status_code
        if _content_type(resp) == JSON:
            try:
                msgs = _messages(await self._read_body(resp, ERROR_BODY_BYTES))
            except (RpcError, ValueError):
                msgs = []
            for msg in msgs:
                if isinstance(msg.get("error"), dict):
                    return jsonrpc.error_from_message(msg["error"])
        code = jsonrpc.SERVER_UNAVAILABLE if status >= 500 else jsonrpc.INTERNAL_ERROR
        return RpcError(code, f"server {self.name} answered HTTP {status} {resp.reason_phrase}".rstrip())

    # -- the incoming side --------------------------------------------------------------------
    async def _deliver(self, msg: dict[str, Any]) -> None:
        """Hand one received message to the peer (its input is bounded: a flood waits here)."""
        if self._init_id is not None and _answers(msg, self._init_id):
            self._init_id = None
            result = msg.get("result")
            version = result.get("protocolVersion") if isinstance(result, dict) else None
            if isinstance(version, str) and _valid_header_value(version):
                self.protocol_version = version
        try:
            await self.from_server.send_all(jsonrpc.encode(msg))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _Fatal(f"server {self.name} disconnected") from None

    async def _reply_error(self, rid: Any, error: RpcError) -> None:
        await self._deliver(jsonrpc.error_response(rid, error.code, error.message, error.data))

    async def _relay(self, stream: _Stream, want: Any) -> bool:
        """Deliver each message of an SSE stream until it ends; True once the response to request
        ``want`` was delivered (then the stream is left: the answer is complete)."""
        while (event := await stream.next()) is not None:
            if event.event != "message" or not event.data.strip():
                continue  # a priming event (an id, no data), or a type MCP does not use
            try:
                msgs = _messages(event.data)
            except ValueError:
                log.warning("server %s: ignoring an event that is not JSON-RPC", self.name)
                continue
            for msg in msgs:
                await self._deliver(msg)
                if want is not None and _answers(msg, want):
                    return True
        return False

    # -- Streamable HTTP ------------------------------------------------------------------------
    async def _initialize(self, msg: dict[str, Any], nursery: trio.Nursery) -> None:
        """POST ``initialize`` (inline: nothing else may go before the session exists); take the
        session id; fall back to the legacy transport when ``auto`` and the server says so."""
        rid = msg.get("id")
        self._init_id = rid
        error: RpcError | None = None
        fallback = 0
        try:
            async with self._http("POST", self.url, accept=ACCEPT_BOTH, content=jsonrpc.dumps(msg)) as resp:
                if resp.status_code in FALLBACK_STATUSES and self.cfg.transport == "auto":
                    fallback = resp.status_code
                else:
                    session_id = resp.headers.get("mcp-session-id")
                    if resp.is_success and session_id is not None:
                        if not _valid_header_value(session_id):
                            raise _Fatal(f"server {self.name} sent an invalid session id")
                        self.session_id = session_id
                    error = await self._take_answer(resp, rid)
        except RemoteError as exc:
            error = RpcError(jsonrpc.SERVER_UNAVAILABLE, f"server {self.name}: {exc}")
        if fallback:
            await self._fall_back(msg, fallback)
            if self.legacy is not None:
                nursery.start_soon(self.guarded, self.read_legacy)
            return
        if error is not None:
            await self._reply_error(rid, error)

    async def _request(self, msg: dict[str, Any]) -> None:
        """One request's POST, in its own task, bounded in time and in number. The peer's own
        timeout comes first and cancels it (``notifications/cancelled``); the bound is a backstop."""
        rid = msg.get("id")
        key = rid if jsonrpc.hashable_id(rid) else None
        error: RpcError | None = None
        with trio.CancelScope(deadline=trio.current_time() + self._request_bound) as scope:
            if key is not None:
                self._in_flight[key] = scope
            try:
                async with self._posts:
                    async with self._http(
                        "POST", self.url, accept=ACCEPT_BOTH, content=jsonrpc.dumps(msg)
                    ) as resp:
                        error = await self._take_answer(resp, rid)
            except RemoteError as exc:
                error = RpcError(jsonrpc.SERVER_UNAVAILABLE, f"server {self.name}: {exc}")
            finally:
                if key is not None:
                    self._in_flight.pop(key, None)
        if scope.cancelled_caught:
            if key in self._cancelled:
                self._cancelled.discard(key)
                return  # the caller gave up and told the server; nobody waits for an answer
            error = RpcError(jsonrpc.REQUEST_TIMEOUT, f"server {self.name}: no answer in time")
        if error is not None:
            await self._reply_error(rid, error)

    def _session_expired(self, resp: httpx.Response) -> bool:
        return resp.status_code == 404 and self.session_id is not None

    def _expire(self) -> _Fatal:
        self.session_id = None  # nothing to DELETE any more
        return _Fatal(f"server {self.name}: session expired; re-initializing")

    async def _take_answer(self, resp: httpx.Response, rid: Any) -> RpcError | None:
        """Deliver what answers request ``rid``; an error for the caller when there is no answer."""
        status = resp.status_code
        if self._session_expired(resp):
            raise self._expire()
        if status == 202:
            return RpcError(
                jsonrpc.INTERNAL_ERROR, f"server {self.name} accepted a request but sent no answer"
            )
        if not resp.is_success:
            return await self._http_error(resp)
        ctype = _content_type(resp)
        if ctype == EVENT_STREAM:
            return await self._relay_answer(_Stream(resp, SseParser(self.max_bytes)), rid)
        if ctype != JSON:
            return RpcError(
                jsonrpc.INTERNAL_ERROR,
                f"server {self.name} answered with {ctype or 'no content type'}, not MCP",
            )
        try:
            msgs = _messages(await self._read_body(resp, self.max_bytes))
        except RpcError as exc:
            return exc
        except ValueError:
            return RpcError(jsonrpc.INTERNAL_ERROR, f"server {self.name} answered with invalid JSON-RPC")
        answered = False
        for msg in msgs:
            await self._deliver(msg)
            answered = answered or _answers(msg, rid)
        if answered:
            return None
        return RpcError(jsonrpc.INTERNAL_ERROR, f"server {self.name} answered without a response")

    async def _relay_answer(self, stream: _Stream, rid: Any) -> RpcError | None:
        """A POST's SSE answer, resumed with GET + ``Last-Event-ID`` if it ends early."""
        failures = 0
        while True:
            try:
                try:
                    if await self._relay(stream, rid):
                        return None
                finally:
                    await stream.aclose()
            except SseError as exc:
                return RpcError(jsonrpc.INTERNAL_ERROR, f"server {self.name} sent an {exc}")
            except RemoteError:
                pass  # resumable like a stream that ended
            if not stream.parser.last_event_id:
                return RpcError(
                    jsonrpc.SERVER_UNAVAILABLE, f"server {self.name} ended the stream before answering"
                )
            while True:
                await trio.sleep(_retry_delay(stream.parser))
                resumed = await self._reopen(stream)
                if resumed is not None:
                    stream, failures = resumed, 0
                    break
                failures += 1
                if failures >= STREAM_ATTEMPTS:
                    return RpcError(
                        jsonrpc.SERVER_UNAVAILABLE,
                        f"server {self.name}: the answer's stream was lost and could not be resumed",
                    )

    async def _reopen(self, old: _Stream) -> _Stream | None:
        """GET the stream again from ``old``'s last event id; ``None`` when that fails."""
        try:
            resp = await self._open(
                "GET", self.url, accept=EVENT_STREAM, last_event_id=old.parser.last_event_id
            )
        except RemoteError as exc:
            log.info("server %s: resuming a stream failed: %s", self.name, exc)
            return None
        if self._session_expired(resp):
            await resp.aclose()
            raise self._expire()
        if resp.status_code != 200 or _content_type(resp) != EVENT_STREAM:
            log.info("server %s: resuming a stream answered HTTP %d", self.name, resp.status_code)
            await resp.aclose()
            return None
        return _Stream(resp, _resumed_parser(old.parser))

    async def _post_quietly(self, msg: dict[str, Any]) -> None:
        """A notification or a response: POSTed inline, bounded; a refusal is logged, not fatal."""
        what = msg.get("method") or "response"
        with trio.move_on_after(SEND_TIMEOUT) as waited:
            try:
                async with self._http(
                    "POST", self.url, accept=ACCEPT_BOTH, content=jsonrpc.dumps(msg)
                ) as resp:
                    if self._session_expired(resp):
                        raise self._expire()
                    if not resp.is_success:
                        log.warning("server %s refused a %s (HTTP %d)", self.name, what, resp.status_code)
            except RemoteError as exc:
                log.warning("server %s: sending a %s failed: %s", self.name, what, exc)
        if waited.cancelled_caught:
            log.warning("server %s did not take a %s within %.0fs", self.name, what, SEND_TIMEOUT)

    async def _listen(self) -> None:
        """The GET stream of what the server sends on its own, reconnected with ``Last-Event-ID``.
        A server that offers none (405, or any refusal of the first GET) is fine; losing one that
        worked (it stays unreachable, or forgets the session) ends the connection."""
        parser = SseParser(self.max_bytes)
        opened = False
        failures = 0
        while True:
            stream: _Stream | None = None
            try:
                resp = await self._open(
                    "GET", self.url, accept=EVENT_STREAM, last_event_id=parser.last_event_id
                )
            except RemoteError as exc:
                failures += 1
                if failures >= STREAM_ATTEMPTS:
                    raise _Fatal(f"server {self.name}: lost its event stream ({exc})") from None
            else:
                if self._session_expired(resp):
                    await resp.aclose()
                    raise self._expire()
                if resp.status_code != 200 or _content_type(resp) != EVENT_STREAM:
                    status = resp.status_code
                    await resp.aclose()
                    if opened:
                        raise _Fatal(
                            f"server {self.name}: its event stream answered HTTP {status}; re-initializing"
                        )
                    log.info("server %s offers no event stream (HTTP %d)", self.name, status)
                    return
                opened, failures = True, 0
                stream = _Stream(resp, parser)
                try:
                    await self._relay(stream, None)
                except RemoteError:
                    pass  # reconnect
                except SseError as exc:
                    raise _Fatal(f"server {self.name} sent an {exc}; re-initializing") from None
                finally:
                    await stream.aclose()
                parser = _resumed_parser(parser)
            await trio.sleep(_retry_delay(parser))

    # -- legacy HTTP+SSE ------------------------------------------------------------------------
    async def connect_legacy(self) -> None:
        """GET the event stream and wait (``connect_timeout``) for its ``endpoint`` event.
        Raises :class:`RemoteError` or :class:`NeedsLogin`."""
        resp = await self._open("GET", self.url, accept=EVENT_STREAM, session=False)
        stream = _Stream(resp, SseParser(self.max_bytes))
        try:
            if resp.status_code != 200 or _content_type(resp) != EVENT_STREAM:
                what = _content_type(resp) or "no content type"
                raise RemoteError(
                    f"{self.origin} answered HTTP {resp.status_code} ({what}), not an event stream"
                )
            with trio.move_on_after(self.cfg.connect_timeout):
                while not self.endpoint:
                    try:
                        event = await stream.next()
                    except SseError as exc:
                        raise RemoteError(f"{self.origin} sent an {exc}") from None
                    if event is None:
                        raise RemoteError(f"{self.origin} ended the event stream before naming its endpoint")
                    if event.event == "endpoint":
                        try:
                            endpoint = resolve_endpoint(str(resp.url), event.data)
                        except BadEndpoint as exc:
                            raise RemoteError(f"{self.origin}: {exc}") from None
                        if not same_origin(endpoint, self.url):
                            raise RemoteError(f"{self.origin}: the endpoint event points to another origin")
                        self.endpoint = endpoint
            if not self.endpoint:
                raise RemoteError(f"{self.origin} named no endpoint within {self.cfg.connect_timeout:g}s")
        except BaseException:
            await stream.aclose()
            raise
        self.legacy = stream

    async def _fall_back(self, msg: dict[str, Any], status: int) -> None:
        log.info(
            "server %s: no Streamable HTTP at %s (HTTP %d); trying the legacy HTTP+SSE transport",
            self.name,
            self.origin,
            status,
        )
        try:
            await self.connect_legacy()
        except RemoteError as exc:
            await self._reply_error(
                msg.get("id"),
                RpcError(
                    jsonrpc.SERVER_UNAVAILABLE,
                    f"server {self.name}: initialize answered HTTP {status}, "
                    f"and the legacy SSE transport failed: {exc}",
                ),
            )
            return
        await self._legacy_post(msg)

    async def read_legacy(self) -> None:
        """Every message of the legacy transport arrives on its event stream; its end is the
        connection's end (the supervisor connects again)."""
        assert self.legacy is not None
        try:
            await self._relay(self.legacy, None)
        except RemoteError as exc:
            raise _Fatal(f"server {self.name}: {exc}") from None
        except SseError as exc:
            raise _Fatal(f"server {self.name} sent an {exc}; reconnecting") from None
        raise _Fatal(f"server {self.name} closed its event stream; reconnecting")

    async def _legacy_post(self, msg: dict[str, Any]) -> None:
        """One message to the endpoint, inline (the answer comes on the stream; 202 at once)."""
        rid = msg.get("id") if jsonrpc.kind(msg) == "request" else None
        error: RpcError | None = None
        with trio.move_on_after(SEND_TIMEOUT) as waited:
            try:
                async with self._http(
                    "POST", self.endpoint, accept=ACCEPT_BOTH, content=jsonrpc.dumps(msg), session=False
                ) as resp:
                    if resp.status_code == 404:
                        raise _Fatal(f"server {self.name}: session expired; reconnecting")
                    if not resp.is_success:
                        error = await self._http_error(resp)
            except RemoteError as exc:
                error = RpcError(jsonrpc.SERVER_UNAVAILABLE, f"server {self.name}: {exc}")
        if waited.cancelled_caught:
            error = RpcError(jsonrpc.SERVER_UNAVAILABLE, f"server {self.name} did not take a message in time")
        if error is None:
            return
        if rid is not None:
            await self._reply_error(rid, error)
        else:
            log.warning("server %s: sending a %s failed: %s", self.name, msg.get("method"), error.message)

    # -- the end -----------------------------------------------------------------------------
    async def close(self) -> None:
        """End the session (best effort, bounded) and release the streams, whatever happened."""
        with trio.CancelScope(shield=True):
            if self.session_id is not None and self.legacy is None:
                with trio.move_on_after(DELETE_TIMEOUT):
                    try:
                        async with self._http("DELETE", self.url, accept=ACCEPT_BOTH):
                            pass
                    except (RemoteError, NeedsLogin):
                        pass
            if self.legacy is not None:
                await self.legacy.aclose()
            await self.to_server.aclose()
            await self.from_server.aclose()
