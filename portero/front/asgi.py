"""The ASGI app hypercorn serves: the MCP endpoint and ``/health`` as raw ASGI, Quart-Trio behind.

``/metrics`` (Prometheus text, see :mod:`portero.metrics`) takes the bearer token or
``server.metrics_token``.

The MCP endpoint and ``/health`` are plain ASGI callables rather than Quart routes: they sit on the
hot path (every tool call; monitors poll health), and Quart's disconnect watcher would hold
keep-alive connections open at shutdown. So is the deprecated HTTP+SSE transport of 2024-11-05
(``GET /sse`` and ``POST /messages``, :mod:`.legacy_sse`), behind the same checks. Everything else
(``/``, the web console at ``/console`` when enabled, 404s) is a Quart-Trio app.

Every path is behind the Host/Origin checks. ``/.well-known/oauth-*`` answers a JSON 404: MCP clients
probe it for OAuth discovery, and an HTML 404 makes them report a confusing registration error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from quart import Response
from quart_trio import QuartTrio

from .. import metrics
from ..config import ServerSection
from ..core import jsonrpc
from ..gateway.router import Router
from ..gateway.sessions import Sessions
from .console import Console
from .console.views import MAX_FORM_BYTES
from .health import health
from .legacy_sse import LEGACY_PATHS, SSE_PATH, LegacySse
from .mcp_http import (
    MCP_PATHS,
    McpEndpoint,
    Receive,
    Scope,
    Send,
    request_headers,
    send_error,
    send_json,
    send_raw,
    unauthorized,
)
from .security import Guard

AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def build_app(
    router: Router,
    sessions: Sessions,
    server: ServerSection,
    guard: Guard | None = None,
    console: Console | None = None,
) -> AsgiApp:
    """The ASGI callable for hypercorn. ``guard`` (built from the server section when not given) is
    the caller's to keep, so a reload can install new client tokens in it. ``console``: the web console's
    pages at ``/console`` (``[console] enabled``); without it, ``/console`` is a 404."""
    quart = QuartTrio("portero")
    quart.config["MAX_CONTENT_LENGTH"] = MAX_FORM_BYTES  # the console's forms; nothing else posts to Quart
    if console is not None:
        quart.register_blueprint(console.blueprint())

    @quart.route("/")
    async def index() -> Response:
        body = jsonrpc.dumps({"name": "portero", "mcp": "/mcp", "health": "/health"})
        return Response(body, mimetype="application/json")

    guard = guard if guard is not None else Guard(server)
    mcp = McpEndpoint(router, sessions, guard, server)
    legacy = LegacySse(
        router,
        sessions,
        keepalive=server.sse_keepalive,
        read_messages=mcp.read_messages,
    )
    registry = metrics.scrape_registry(
        metrics.StateCollector(
            upstreams=router.upstream_status,
            sessions=lambda: len(sessions),
            approvals_pending=lambda: len(router.broker.pending()) if router.broker is not None else 0,
        )
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path in MCP_PATHS:
                try:
                    await mcp(scope, receive, send)
                except trio.BrokenResourceError:
                    pass  # the client went away mid-request
                return
            headers = request_headers(scope)
            if path in LEGACY_PATHS:
                client = await mcp.admit(headers, send)
                if client is not None:
                    try:
                        if path == SSE_PATH and scope["method"] == "GET":
                            await legacy.stream(scope, receive, send, headers, client)
                        elif path != SSE_PATH and scope["method"] == "POST":
                            await legacy.message(scope, receive, send, headers, client)
                        else:
                            allow = b"GET" if path == SSE_PATH else b"POST"
                            await send_error(send, 405, "Method not allowed", extra=[(b"allow", allow)])
                    except trio.BrokenResourceError:
                        pass  # the client went away mid-request
                return
            if not guard.host_ok(headers.get("host")) or not guard.origin_ok(headers.get("origin")):
                return await send_error(send, 403, "Forbidden: Host or Origin not allowed")
            if path == "/health" and scope["method"] in ("GET", "HEAD"):
                status, body = health(router, full=guard.token_ok(headers.get("authorization")))
                return await send_json(send, status, body)
            if path == "/metrics" and scope["method"] in ("GET", "HEAD"):
                if not guard.metrics_ok(headers.get("authorization")):
                    return await unauthorized(send)
                text = metrics.render(registry)
                return await send_raw(send, 200, text, [(b"content-type", metrics.CONTENT_TYPE.encode())])
            if path.startswith("/.well-known/oauth"):
                return await send_error(send, 404, "Not Found: this gateway uses a static bearer token")
        await quart(scope, receive, send)  # type: ignore[arg-type]  # ASGI dicts, typed loosely here

    return app
