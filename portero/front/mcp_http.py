"""The HTTP front: MCP Streamable HTTP on ``/mcp`` (and ``/mcp/message``), ``GET /health``.

The MCP endpoint is a plain ASGI callable rather than a Quart route: it sits on the hot path of
every tool call, and owning the ASGI conversation lets one request start as a JSON answer and
switch to an SSE stream the moment a child sends a notification or a request before the answer
(or the answer is slow), and notice a client that disconnects. Everything
else (``/health``, 404s) is a Quart-Trio app behind it.

Order of checks on ``/mcp``: Host/Origin (403) → bearer token (401, constant time; it names the
client) → body size (413) → JSON (400 + JSON-RPC parse error) → session (400 without, 404 unknown or
another client's) → protocol version.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..config import ServerSection
from ..core import jsonrpc, modern
from ..gateway.router import Router
from ..gateway.sessions import (
    MAX_LISTENERS,
    SUPPORTED_PROTOCOLS,
    ClientSession,
    Listener,
    PostStream,
    RequestContext,
    Sessions,
)
from ..logs import Throttled
from .security import Guard

log = logging.getLogger("portero.http")
refused = Throttled(log)  # refused requests are logged, at most one line per kind every 10 s

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MCP_PATHS = ("/mcp", "/mcp/", "/mcp/message")
STREAM_BUFFER = 64
EMIT_WAIT = 5.0
_NAT_RE = re.compile(r"[0-9]{1,18}")


def request_headers(scope: Scope) -> dict[str, str]:
    """An ASGI request's headers by lower-case name (the last one wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _nat(text: str) -> int | None:
    """A non-negative decimal number of ASCII digits, else None (``Last-Event-ID`` is client input)."""
    return int(text) if _NAT_RE.fullmatch(text) else None


class McpEndpoint:
    """ASGI handler for the MCP endpoint."""

    def __init__(self, router: Router, sessions: Sessions, guard: Guard, server: ServerSection) -> None:
        self.router = router
        self.sessions = sessions
        self.guard = guard
        self.max_body = server.max_body_bytes
        self.keepalive: float = server.sse_keepalive

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        client = await self.admit(headers, send)
        if client is None:
            return
        method = scope["method"]
        if method == "POST":
            return await self.post(scope, receive, send, headers, client)
        if method == "GET":
            return await self.get(receive, send, headers, client)
        if method == "DELETE":
            return await self.delete(send, headers, client)
        if method == "OPTIONS":
            return await send_raw(send, 204, b"", [(b"allow", b"GET, POST, DELETE, OPTIONS")])
        return await send_error(send, 405, "Method not allowed", extra=[(b"allow", b"GET, POST, DELETE")])

    async def admit(self, headers: dict[str, str], send: Send) -> str | None:
        """The checks every MCP request passes first (Host, Origin, bearer token): the name of the
        client the token belongs to, or None when refused (the refusal has been sent)."""
        if not self.guard.host_ok(headers.get("host")):
            refused(
                logging.WARNING,
                "host",
                "refused a request with Host %r (not a loopback name)",
                headers.get("host"),
            )
            await send_error(send, 403, "Forbidden: Host not allowed")
            return None
        if not self.guard.origin_ok(headers.get("origin")):
            refused(logging.WARNING, "origin", "refused a request from Origin %r", headers.get("origin"))
            await send_error(send, 403, "Forbidden: Origin not allowed")
            return None
        client = self.guard.identify(headers.get("authorization"))
        if client is None:
            refused(logging.WARNING, "token", "refused a request: bearer token missing or invalid")
            await unauthorized(send)
        return client

    async def read_messages(
        self, receive: Receive, send: Send, headers: dict[str, str]
    ) -> tuple[Any, list[dict[str, Any]]] | None:
        """A POST's JSON-RPC payload and its messages (one, or a batch's); None when it was refused
        (415, 413, or 400 with a JSON-RPC error), the answer already sent."""
        if "json" not in headers.get("content-type", "application/json").lower():
            await send_error(send, 415, "Unsupported Media Type: expected application/json")
            return None
        body = await self.read_body(receive, headers)
        if body is None:
            await send_error(send, 413, f"Payload Too Large: limit is {self.max_body} bytes")
            return None
        try:
            payload = jsonrpc.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            await send_json(send, 400, jsonrpc.error_response(None, jsonrpc.PARSE_ERROR, "Parse error"))
            return None
        messages = payload if isinstance(payload, list) else [payload]
        if not messages or not all(isinstance(m, dict) for m in messages):
            error = jsonrpc.error_response(None, jsonrpc.INVALID_REQUEST, "Invalid Request")
            await send_json(send, 400, error)
            return None
        return payload, messages

    async def read_body(self, receive: Receive, headers: dict[str, str]) -> bytes | None:
        """The request body; None when it is over ``max_body_bytes``."""
        declared = headers.get("content-length")
        size_declared = _nat(declared) if declared is not None else None
        if size_declared is not None and size_declared > self.max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise trio.BrokenResourceError("client went away")
            body = event.get("body", b"")
            size += len(body)
            if size > self.max_body:
                return None
            chunks.append(body)
            if not event.get("more_body"):
                return b"".join(chunks)

    def _session_for(self, headers: dict[str, str], client: str) -> tuple[ClientSession | None, int, str]:
        sid = headers.get("mcp-session-id")
        if not sid:
            return None, 400, "Bad Request: Mcp-Session-Id header required"
        session = self.sessions.get(sid)
        # A legacy session lives on its /sse stream only; another client's session is not found
        # (never served with a token other than the one that opened it).
        if session is None or session.legacy or session.client != client:
            return None, 404, "Session not found"
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in SUPPORTED_PROTOCOLS:
            return None, 400, f"Bad Request: unsupported MCP-Protocol-Version {version}"
        self.sessions.touch(session)
        return session, 200, ""

    async def post(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], client: str
    ) -> None:
        accept = headers.get("accept", "*/*").lower()
        wants_sse = "text/event-stream" in accept or "*/*" in accept
        if not ("application/json" in accept or wants_sse or "application/*" in accept):
            return await send_error(send, 406, "Not Acceptable: accept application/json or text/event-stream")
        read = await self.read_messages(receive, send, headers)
        if read is None:
            return
        payload, messages = read
        batch = isinstance(payload, list)

        if "mcp-session-id" not in headers and (
            modern.is_modern(payload.get("method"), payload.get("params"), headers, SUPPORTED_PROTOCOLS)
            if not batch
            else headers.get("mcp-protocol-version") in modern.MODERN_PROTOCOLS
        ):
            return await self._modern(scope, receive, send, headers, payload, wants_sse, client)
        is_init = any(m.get("method") == "initialize" for m in messages)
        extra: list[tuple[bytes, bytes]] = []
        session: ClientSession | None
        if is_init:
            if len(messages) != 1 or "id" not in messages[0]:
                return await send_json(
                    send,
                    400,
                    jsonrpc.error_response(None, jsonrpc.INVALID_REQUEST, "initialize must be sent alone"),
                )
            session = self.sessions.new(client)
            if session is None:
                return await send_error(send, 503, "Service Unavailable: too many active sessions")
            extra.append((b"mcp-session-id", session.id.encode()))
        else:
            session, status, why = self._session_for(headers, client)
            if session is None:
                return await send_json(
                    send, status, jsonrpc.error_response(None, jsonrpc.INVALID_REQUEST, why)
                )

        if not batch and jsonrpc.kind(messages[0]) == "invalid":
            rid = messages[0].get("id") if jsonrpc.valid_id(messages[0].get("id")) else None
            return await send_json(
                send, 400, jsonrpc.error_response(rid, jsonrpc.INVALID_REQUEST, "Invalid Request")
            )
        requests = [m for m in messages if jsonrpc.kind(m) in ("request", "invalid")]
        if not requests:
            for m in messages:
                await self._handle_one(m, session)
            return await send_raw(send, 202, b"", extra)
        if batch:
            out = []
            for m in messages:
                resp = await self._handle_one(m, session)
                if resp is not None:
                    out.append(resp)
            return await send_json(send, 200, out, extra)
        await self._answer(receive, send, messages[0], session, wants_sse, extra)

    async def _handle_one(self, msg: dict[str, Any], session: ClientSession) -> dict[str, Any] | None:
        """One message of a batch, or a notification: a bug costs that one answer, never the others."""
        try:
            return await self.router.handle(msg, RequestContext(session=session))
        except Exception as exc:
            log.exception("request %s failed", msg.get("method"))
            return {"jsonrpc": "2.0", "id": msg.get("id"), "error": jsonrpc.error_from_exception(exc)}

    async def _answer(
        self,
        receive: Receive,
        send: Send,
        msg: dict[str, Any],
        session: ClientSession,
        wants_sse: bool,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        """Answer one request: JSON, unless something must be sent before the answer (then SSE).

        The call runs in the gateway's nursery; this request reads its messages from a bounded
        channel. A request still unanswered after `sse_keepalive` also becomes a stream, with
        keepalive comments, so a proxy's idle timeout doesn't cut it.

        A disconnect cancels the call, except on a 2025-11-25 session once the answer is an SSE
        stream: its events have ids `<stream>/<n>` (after a priming event), the call goes on, its
        events are kept (bounded), and the client can resume with `GET` + `Last-Event-ID`.
        """
        resumable = wants_sse and not session.modern and session.protocol_version >= "2025-11-25"
        send_ch, recv_ch = trio.open_memory_channel[tuple[str, Any]](STREAM_BUFFER)
        # Cancelled to wake this request's task when the call has something for it (see below).
        wake = trio.CancelScope()

        async def emit(m: dict[str, Any]) -> None:
            # Never let a slow reader stall the child's notification handling (which holds that
            # child's answers to everyone): notifications are dropped when the stream is full,
            # a server→client request waits briefly, then fails.
            try:
                send_ch.send_nowait(("msg", m))
            except trio.WouldBlock:
                if "id" not in m:
                    log.debug("client stream full: dropped %s", m.get("method"))
                    return
                with trio.move_on_after(EMIT_WAIT):
                    await send_ch.send(("msg", m))
                    return
                raise trio.BrokenResourceError("client stream is not being read") from None
            wake.cancel()

        ctx = RequestContext(session=session, emit=emit if wants_sse else None)
        call_scope = trio.CancelScope()

        async def run() -> None:
            # Closing send_ch when the call is over makes a late emit() fail at once instead of
            # blocking a child's notification handler on a stream nobody reads any more.
            async with send_ch:
                resp: dict[str, Any] | None = None
                with call_scope:
                    try:
                        resp = await self.router.handle(msg, ctx)
                    except Exception as exc:  # a bug must cost one answer, not the server
                        log.exception("request %s failed", msg.get("method"))
                        err = jsonrpc.error_from_exception(exc)
                        resp = {"jsonrpc": "2.0", "id": msg.get("id"), "error": err}
                try:
                    await send_ch.send(("done", resp))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                wake.cancel()

        self.sessions.start_call(run)
        streaming = False
        try:
            # The common case costs no task and no nursery here: this task waits for the client's
            # disconnect itself (hypercorn's receive() returns only that, the body being read), and
            # the call wakes it by cancelling `wake` when it has an answer or a message for it.
            kind: str = "keepalive"
            value: Any = None
            with wake, trio.move_on_after(self.keepalive if wants_sse else math.inf):
                while (await receive())["type"] != "http.disconnect":
                    pass
                call_scope.cancel()  # the client left before anything was sent: the call stops
                return
            try:
                kind, value = recv_ch.receive_nowait()
            except trio.WouldBlock:
                pass  # the keepalive timer: the answer becomes a stream now
            if kind == "done":
                if value is None:
                    await send_raw(send, 202, b"", extra)
                else:
                    await send_json(send, _status_of(session, value), value, extra)
                return
            streaming = True
            await self._stream_answer(
                receive, send, session, recv_ch, call_scope, kind, value, resumable, extra
            )
        finally:
            if not streaming:
                recv_ch.close()

    async def _modern(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        payload: Any,
        wants_sse: bool,
        client: str,
    ) -> None:
        """A request of the stateless era (2026-07-28): no session, everything in ``_meta`` and the
        routing headers (see :mod:`portero.core.modern`); answered like any other once it passes."""
        if not isinstance(payload, dict):
            error = jsonrpc.error_response(
                None, jsonrpc.INVALID_REQUEST, "Invalid Request: batches were removed"
            )
            return await send_json(send, 400, error)
        kind = jsonrpc.kind(payload)
        if kind == "notification":
            return await send_raw(send, 202, b"")
        rid = payload.get("id")
        if kind != "request" or not isinstance(payload.get("params", {}), dict):
            return await send_json(
                send, 400, modern.Rejection(jsonrpc.INVALID_REQUEST, "Invalid Request").response(rid)
            )
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        duplicated = modern.duplicated_routing_header(raw)
        verdict = (
            modern.Rejection(modern.HEADER_MISMATCH, f"the {duplicated} header appears more than once")
            if duplicated
            else modern.classify(payload, headers)
        )
        if isinstance(verdict, modern.Rejection):
            return await send_json(send, verdict.status, verdict.response(rid))
        method = payload["method"]
        if method in modern.REMOVED_METHODS:
            error = jsonrpc.error_response(
                rid,
                jsonrpc.METHOD_NOT_FOUND,
                f"Method not found: {method} (removed in {verdict.protocol_version})",
            )
            return await send_json(send, 404, error)
        session = self.sessions.transient(
            verdict.protocol_version, verdict.capabilities, verdict.client_info, verdict.log_level, client
        )
        msg = {**payload, "params": modern.strip_envelope(payload.get("params") or {})}
        if method == "subscriptions/listen":
            return await self._listen(receive, send, rid, msg["params"], wants_sse)
        await self._answer(receive, send, msg, session, wants_sse, [])

    async def _listen(
        self, receive: Receive, send: Send, rid: Any, params: dict[str, Any], wants_sse: bool
    ) -> None:
        """``subscriptions/listen``: an SSE stream of the list changes and resource updates asked for,
        acknowledged first, each tagged with the request's id; ended with a result at shutdown."""
        if not wants_sse:
            return await send_error(send, 406, "Not Acceptable: subscriptions/listen needs text/event-stream")
        if len(self.sessions.listeners) >= MAX_LISTENERS:
            error = jsonrpc.error_response(
                rid, jsonrpc.INTERNAL_ERROR, "too many subscriptions/listen streams"
            )
            return await send_json(send, 200, error)
        listener = Listener.from_filter(params.get("notifications"))
        tag = {modern.SUBSCRIPTION_ID_META: rid}
        self.sessions.listeners.add(listener)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": list(_SSE_HEADERS)})
            ack = jsonrpc.notification(
                "notifications/subscriptions/acknowledged",
                {"notifications": listener.honoured(), "_meta": tag},
            )
            await _sse(send, jsonrpc.dumps(ack))
            graceful = False
            async with trio.open_nursery() as nursery:

                async def shutdown() -> None:
                    nonlocal graceful
                    await self.sessions.closing.wait()
                    graceful = True
                    nursery.cancel_scope.cancel()

                nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope.cancel)
                nursery.start_soon(shutdown)
                while not listener.overflowed:
                    while listener.queue:
                        event = listener.queue.popleft()
                        params_out = event.get("params")
                        params_out = {**(params_out if isinstance(params_out, dict) else {}), "_meta": tag}
                        await _sse(send, jsonrpc.dumps({**event, "params": params_out}))
                    with trio.move_on_after(self.keepalive) as idle:
                        await listener.new_event.wait()
                    if idle.cancelled_caught:
                        await _chunk(send, b": keepalive\n\n")
                nursery.cancel_scope.cancel()
            if graceful or listener.overflowed:
                done = jsonrpc.result_response(rid, {"_meta": tag, "resultType": "complete"})
                with trio.move_on_after(1):
                    await _sse(send, jsonrpc.dumps(done))
            with trio.move_on_after(1):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.sessions.listeners.discard(listener)

    async def _stream_answer(
        self,
        receive: Receive,
        send: Send,
        session: ClientSession,
        recv_ch: trio.MemoryReceiveChannel[tuple[str, Any]],
        call_scope: trio.CancelScope,
        kind: str,
        value: Any,
        resumable: bool,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        """The answer as an SSE stream: what the call sends, then its answer (see :meth:`_answer`)."""
        # Set once the answer's end goes out: from then on an http.disconnect is hypercorn closing
        # the finished stream, and cancelling our task while it is inside hypercorn's send() would
        # leave the keep-alive connection in a bad state.
        answering = False
        async with trio.open_nursery() as nursery:

            def on_disconnect() -> None:
                if not answering:
                    if not resumable:
                        call_scope.cancel()
                    nursery.cancel_scope.cancel()

            nursery.start_soon(_watch_disconnect, receive, on_disconnect)
            # Only resumable streams are kept in the session for a later GET.
            stream = session.new_post_stream(keep=resumable)
            if kind == "msg" and value is not None:
                stream.push(value)
            self.sessions.start_call(lambda: _pump(recv_ch, stream, self.sessions))  # owns recv_ch now
            await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *extra]})
            if resumable:
                await _chunk(send, f"id: {stream.id}/0\ndata: \n\n".encode())  # primes resumption
            if kind == "keepalive":
                await _chunk(send, b": keepalive\n\n")
            await self._tail(send, stream, 0, with_ids=resumable)
            answering = True
            session.drop_post_stream(stream)  # delivered in full
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()

    async def _tail(self, send: Send, stream: PostStream, after: int, *, with_ids: bool = True) -> None:
        """Send a POST stream's events after `after`, with keepalives, until its answer is sent."""
        sent = after
        while True:
            pending = stream.events_after(sent)
            for n, m in pending:
                await _sse(send, m, f"{stream.id}/{n}" if with_ids else None)
                sent = n
            if stream.done and not stream.events_after(sent):
                return
            if not pending:
                with trio.move_on_after(self.keepalive) as idle:
                    await stream.new_event.wait()
                if idle.cancelled_caught:
                    await _chunk(send, b": keepalive\n\n")

    async def get(self, receive: Receive, send: Send, headers: dict[str, str], client: str) -> None:
        if "text/event-stream" not in headers.get("accept", "").lower():
            return await send_error(send, 406, "Not Acceptable: GET needs Accept: text/event-stream")
        session, status, why = self._session_for(headers, client)
        if session is None:
            return await send_error(send, status, why)
        last = headers.get("last-event-id", "")
        if "/" in last:
            # `<stream>/<n>`: resume the SSE answer of a POST whose connection was lost.
            stream_s, _, n_s = last.partition("/")
            stream_no, after = _nat(stream_s), _nat(n_s)
            stream = session.post_streams.get(stream_no) if stream_no is not None else None
            if stream is not None and after is not None:
                return await self._resume(receive, send, session, stream, after)
            last = ""  # gone (delivered, or expired): a plain GET stream
        resume_from = _nat(last)
        mine = session.open_stream()  # an older stream of this session notices and ends
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                }
            )
            sent = session.event_seq if resume_from is None else resume_from
            if session.protocol_version >= "2025-11-25":
                # Prime reconnection: an event id with empty data (older clients choke on it).
                await _chunk(send, f"id: {sent}\ndata: \n\n".encode())
            else:
                await _chunk(send, b": stream open\n\n")
            await stream_session(send, receive, self.sessions, session, mine, sent, self.keepalive)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            session.close_stream()

    async def _resume(
        self, receive: Receive, send: Send, session: ClientSession, stream: PostStream, after: int
    ) -> None:
        answering = False
        async with trio.open_nursery() as nursery:

            def on_disconnect() -> None:
                if not answering:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(_watch_disconnect, receive, on_disconnect)
            await send({"type": "http.response.start", "status": 200, "headers": list(_SSE_HEADERS)})
            await _chunk(send, b": resumed\n\n")  # the head leaves now, not with the next event
            await self._tail(send, stream, after)
            answering = True
            session.drop_post_stream(stream)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()

    async def delete(self, send: Send, headers: dict[str, str], client: str) -> None:
        sid = headers.get("mcp-session-id")
        if not sid:
            return await send_error(send, 400, "Bad Request: Mcp-Session-Id header required")
        session = self.sessions.get(sid)
        if session is None or session.client != client or not self.sessions.end(sid):
            return await send_error(send, 404, "Session not found")
        await send_raw(send, 204, b"")


async def send_raw(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    # With a Content-Length the answer leaves in one write instead of three chunked ones.
    hdrs = [(b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(
    send: Send, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = jsonrpc.dumps(obj)
    await send_raw(send, status, body, [(b"content-type", b"application/json"), *(headers or [])])


async def send_error(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_json(send, status, jsonrpc.error_response(None, jsonrpc.INVALID_REQUEST, message), extra)


async def _chunk(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def stream_session(
    send: Send,
    receive: Receive,
    sessions: Sessions,
    session: ClientSession,
    mine: int,
    sent: int,
    keepalive: float,
    *,
    with_ids: bool = True,
) -> None:
    """Send a session's messages after event ``sent`` as SSE events (with keepalive comments) until
    the session ends, a newer stream replaces this one (``mine``), the client leaves or the gateway
    shuts down: the GET stream of ``/mcp``, and the legacy transport's ``/sse`` (``with_ids=False``)."""
    async with trio.open_nursery() as nursery:

        async def watch_shutdown() -> None:
            await sessions.closing.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope.cancel)
        nursery.start_soon(watch_shutdown)
        while not session.closed and session.stream_gen == mine:
            pending = session.events_after(sent)
            if not pending:
                with trio.move_on_after(keepalive) as idle:
                    await session.new_event.wait()
                if idle.cancelled_caught:
                    await _chunk(send, b": keepalive\n\n")
                continue
            for event_id, m in pending:
                await _sse(send, jsonrpc.dumps(m), event_id if with_ids else None)
                sent = event_id
            sessions.touch(session)
        nursery.cancel_scope.cancel()


async def _watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Wait for the client's `http.disconnect` (hypercorn also sends one after a finished
    answer), then call `on_disconnect` once."""
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            on_disconnect()
            return


async def _pump(
    recv_ch: trio.MemoryReceiveChannel[tuple[str, Any]], stream: PostStream, sessions: Sessions
) -> None:
    """Move one call's messages into its resumable stream, the answer last; then keep what
    abandoned streams hold within bounds."""
    async with recv_ch:
        async for kind, value in recv_ch:
            if value is not None:
                stream.push(value)
            if kind == "done":
                break
    stream.finish(sessions.clock())
    sessions.trim_kept()


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def _sse(send: Send, data: bytes, event_id: int | str | None = None) -> None:
    """One SSE event carrying ``data``, a JSON-RPC message already encoded."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    await _chunk(send, head.encode() + b"event: message\ndata: " + data + b"\n\n")


def _status_of(session: ClientSession, resp: dict[str, Any]) -> int:
    """The HTTP status of a JSON answer: 200, except for the stateless era's errors (400, 404)."""
    if not session.modern:
        return 200
    error = resp.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return modern.HTTP_STATUS.get(code, 200) if isinstance(code, int) else 200


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


async def unauthorized(send: Send) -> None:
    await send_error(
        send,
        401,
        "Unauthorized: bearer token missing or invalid",
        extra=[(b"www-authenticate", b'Bearer realm="portero"')],
    )
