"""The legacy HTTP+SSE transport (MCP 2024-11-05), for clients that know nothing newer. Deprecated.

``GET /sse`` opens a session and its event stream; the first event, ``endpoint``, names where the
client posts its messages (``/messages?session_id=<id>``). Every ``POST`` there is answered ``202
Accepted`` at once; the answer to each request, and everything else the gateway sends the client
(progress, logs, sampling and elicitation requests, list changes), travels as a ``message`` event on
the stream. The session ends when the stream does.

The same checks as on ``/mcp`` come first (Host/Origin, bearer token:
:meth:`~portero.front.mcp_http.McpEndpoint.admit`, which the app runs before calling in here), and
the calls take the same way through the router: policies, approvals, anonymization and audit apply
unchanged. The session id in the endpoint URL is the session's random id; a POST needs the bearer
token as well.

A message for the client waits in the session's bounded replay buffer
(:data:`~portero.gateway.sessions.REPLAY_EVENTS`) until the stream sends it: a client that stops
reading its stream for that many messages loses the oldest.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from ..core import jsonrpc
from ..gateway.router import Router
from ..gateway.sessions import ClientSession, RequestContext, Sessions
from .mcp_http import Receive, Scope, Send, send_error, send_raw, stream_session

log = logging.getLogger("portero.http")

SSE_PATH = "/sse"
MESSAGES_PATH = "/messages"
LEGACY_PATHS = (SSE_PATH, MESSAGES_PATH)
LEGACY_PROTOCOL = "2024-11-05"

# McpEndpoint.read_messages: the POST's JSON-RPC messages, or None once it answered the refusal.
ReadMessages = Callable[[Receive, Send, dict[str, str]], Awaitable[tuple[Any, list[dict[str, Any]]] | None]]


def session_id_of(query_string: bytes) -> str | None:
    """The ``session_id`` of a POST's query (``sessionId`` too, as the SDKs' servers name it)."""
    try:
        query = urllib.parse.parse_qs(query_string.decode("ascii"), strict_parsing=False)
    except UnicodeDecodeError:
        return None
    for key in ("session_id", "sessionId"):
        values = query.get(key)
        if values and len(values) == 1:
            return values[0]
    return None


class LegacySse:
    """``GET /sse`` and ``POST /messages`` (see the module docstring)."""

    def __init__(
        self,
        router: Router,
        sessions: Sessions,
        *,
        keepalive: float,
        read_messages: ReadMessages,
    ) -> None:
        self.router = router
        self.sessions = sessions
        self.keepalive = keepalive
        self._read_messages = read_messages

    async def stream(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], client: str
    ) -> None:
        """``GET /sse``: a new session of ``client``, its ``endpoint`` event, then its messages until
        either side leaves."""
        if "text/event-stream" not in headers.get("accept", "text/event-stream").lower():
            return await send_error(send, 406, "Not Acceptable: GET /sse needs Accept: text/event-stream")
        session = self.sessions.new(client)
        if session is None:
            return await send_error(send, 503, "Service Unavailable: too many active sessions")
        session.protocol_version = LEGACY_PROTOCOL  # until initialize says otherwise
        session.legacy = True
        mine = session.open_stream()
        root = scope.get("root_path", "")
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            endpoint = f"{root}{MESSAGES_PATH}?session_id={session.id}"
            await _chunk(send, f"event: endpoint\ndata: {endpoint}\n\n".encode())
            await stream_session(
                send, receive, self.sessions, session, mine, 0, self.keepalive, with_ids=False
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            session.close_stream()
            self.sessions.end(session.id)  # the stream is the session: its calls stop with it

    async def message(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], client: str
    ) -> None:
        """``POST /messages?session_id=…``: 202 at once; answers go out on the session's stream. Only
        the client whose token opened the session may post to it (another's: 404)."""
        sid = session_id_of(scope.get("query_string", b""))
        if sid is None:
            return await send_error(send, 400, "Bad Request: session_id query parameter required")
        session = self.sessions.get(sid)
        if session is None or not session.legacy or session.client != client:
            return await send_error(send, 404, "Session not found")
        read = await self._read_messages(receive, send, headers)
        if read is None:
            return
        _, messages = read
        self.sessions.touch(session)
        for msg in messages:
            if jsonrpc.kind(msg) in ("request", "invalid"):
                self.sessions.start_call(functools.partial(self._call, msg, session))
            else:
                await self._call(msg, session)
        await send_raw(send, 202, b"Accepted", [(b"content-type", b"text/plain")])

    async def _call(self, msg: dict[str, Any], session: ClientSession) -> None:
        """One message through the router; a request's answer is queued for the stream."""
        try:
            resp = await self.router.handle(msg, RequestContext(session=session))
        except Exception as exc:  # a bug costs one answer, never the session
            log.exception("request %s failed", msg.get("method"))
            resp = {"jsonrpc": "2.0", "id": msg.get("id"), "error": jsonrpc.error_from_exception(exc)}
        if resp is not None and not session.closed:
            session.push(resp)


async def _chunk(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})
