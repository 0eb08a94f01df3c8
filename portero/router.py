"""MCP method dispatch, and the tools/call pipeline.

The data path of a tool call reads top to bottom in :meth:`Gateway.call_tool`:
anonymize the request → decide (policy, grant) → wait for approval if needed → call the child
→ anonymize the response → record.

Attribution of a child's own messages (stdio carries no session): progress notifications follow
their progress token, which the gateway rewrites per call so two sessions using the same token
never see each other's; a child's server→client request or log message goes to the session
with the most recent request in flight on that child, and with none in flight to the sessions
listening on their GET stream.
"""

from __future__ import annotations

import collections
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from . import __version__, jsonrpc
from .anonymize import Anonymizer
from .catalog import Catalog, ChildListing, Entry
from .children import INIT_TIMEOUT, Child, ChildGone, Connection
from .jsonrpc import RpcError
from .policy import Decision, PolicyEngine

log = logging.getLogger("portero.router")

LATEST_PROTOCOL = "2025-11-25"
SUPPORTED_PROTOCOLS = ("2025-11-25", "2025-06-18", "2025-03-26")
REPLAY_EVENTS = 256  # per session, for `Last-Event-ID` on the GET stream
CLIENT_REQUEST_TIMEOUT = 300.0  # how long a child's sampling/elicitation request may wait for the client
MAX_SESSIONS = 1000  # bounded state: one client can't grow the gateway without limit
STARTUP_WAIT = 15.0  # how long a list or call waits for children still starting after launch

Emit = Callable[[dict[str, Any]], Awaitable[None]]


@attrs.define(eq=False)
class ClientSession:
    """One MCP client session (HTTP ``Mcp-Session-Id``)."""

    id: str
    protocol_version: str = LATEST_PROTOCOL
    client_info: dict[str, Any] = attrs.Factory(dict)
    capabilities: dict[str, Any] = attrs.Factory(dict)
    created: float = attrs.Factory(time.monotonic)
    last_seen: float = attrs.Factory(time.monotonic)
    log_level: str | None = None
    subscriptions: set[str] = attrs.Factory(set)
    # The standalone GET stream: messages for this session outside any request. Every message
    # gets an SSE event id and stays in a bounded replay buffer, so a client that reconnects with
    # `Last-Event-ID` gets what it missed (as long as it is still in the buffer).
    streams_open: int = 0
    stream_gen: int = 0  # a new GET stream replaces the old one (each message goes on one stream)
    event_seq: int = 0
    replay: collections.deque[tuple[int, dict[str, Any]]] = attrs.Factory(
        lambda: collections.deque(maxlen=REPLAY_EVENTS)
    )
    new_event: trio.Event = attrs.Factory(trio.Event)
    # POST answers streamed as SSE on 2025-11-25 sessions, kept so a client that lost the
    # connection can resume one with `GET` + `Last-Event-ID: <stream>/<n>`.
    post_streams: dict[int, PostStream] = attrs.Factory(dict)
    stream_counter: int = 0
    # Client request id -> cancel scope of the call, for notifications/cancelled.
    inflight: dict[Any, trio.CancelScope] = attrs.Factory(dict)
    # Server→client requests awaiting the client's answer: our id -> slot.
    waiting: dict[str, _Answer] = attrs.Factory(dict)
    closed: bool = False

    @property
    def listening(self) -> bool:
        return self.streams_open > 0

    def push(self, msg: dict[str, Any]) -> int:
        """Queue a message for the GET stream (never blocks; the buffer is bounded)."""
        self.event_seq += 1
        self.replay.append((self.event_seq, msg))
        self.new_event.set()
        self.new_event = trio.Event()
        return self.event_seq

    def events_after(self, last_id: int) -> list[tuple[int, dict[str, Any]]]:
        return [(i, m) for i, m in self.replay if i > last_id]

    def new_post_stream(self) -> PostStream:
        self.stream_counter += 1
        stream = PostStream(id=self.stream_counter)
        self.post_streams[stream.id] = stream
        return stream


@attrs.define(eq=False)
class PostStream:
    """The events of one POST answer sent as SSE; ids are `<stream>/<n>`, the answer is last."""

    id: int
    events: collections.deque[tuple[int, dict[str, Any]]] = attrs.Factory(
        lambda: collections.deque(maxlen=REPLAY_EVENTS)
    )
    seq: int = 0
    done: bool = False
    finished_at: float | None = None
    new_event: trio.Event = attrs.Factory(trio.Event)

    def push(self, msg: dict[str, Any]) -> None:
        self.seq += 1
        self.events.append((self.seq, msg))
        self._wake()

    def finish(self) -> None:
        self.done = True
        self.finished_at = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        self.new_event.set()
        self.new_event = trio.Event()

    def events_after(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        return [(i, m) for i, m in self.events if i > n]


@attrs.define(eq=False)
class _Answer:
    event: trio.Event = attrs.Factory(trio.Event)
    message: dict[str, Any] | None = None


@attrs.define(eq=False)
class RequestContext:
    """One client request being served: where its own notifications and requests go."""

    session: ClientSession | None
    request_id: Any = None
    emit: Emit | None = None  # sends a message on this request's response stream (SSE), if any

    async def send(self, msg: dict[str, Any]) -> bool:
        if self.emit is not None:
            try:
                await self.emit(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            return True
        if self.session is not None and self.session.listening:
            self.session.push(msg)
            return True
        return False


def tool_error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


class Gateway:
    """Everything a client request needs: children, catalog, policy, anonymization, control."""

    def __init__(
        self,
        config: Any,
        env: dict[str, str],
        *,
        store: Any = None,
        broker: Any = None,
    ) -> None:
        self.config = config
        self.separator: str = config.server.tool_separator
        self.store = store
        self.broker = broker
        self.policy = PolicyEngine(config.policies.default, dict(config.policies.rules))
        self.anonymizer = Anonymizer.from_config(config.replacements)
        self.started = time.monotonic()
        client_info = {"name": "portero", "version": __version__}
        self.children: dict[str, Child] = {}
        for cfg in config.mcp:
            self.children[cfg.name] = Child(
                cfg,
                env=env,
                max_message_bytes=config.server.max_message_bytes,
                handler=self.on_child_message,
                on_catalog_change=self.rebuild_catalog,
                client_info=client_info,
            )
        self.catalog = Catalog()
        self._tool_list_cache: list[dict[str, Any]] | None = None
        self._warned: set[str] = set()
        self.sessions: dict[str, ClientSession] = {}
        # Gateway progress token -> (session, client's progress token)
        self._progress: dict[str, tuple[RequestContext, Any]] = {}
        self._progress_ids = itertools.count(1)
        # Per child: contexts with a request in flight on it, in start order.
        self._active: dict[str, list[RequestContext]] = {name: [] for name in self.children}
        self._answer_ids = itertools.count(1)
        # `per_session = true` servers: (session id, server) -> (its own child, the scope running it)
        self._session_children: dict[tuple[str, str], tuple[Child, trio.CancelScope]] = {}
        self._session_of_child: dict[str, ClientSession] = {}
        # (child, child's request id) -> where we asked: for the child's notifications/cancelled
        self._child_asks: dict[tuple[str, Any], tuple[RequestContext, str, _Answer]] = {}
        self.nursery: trio.Nursery | None = None
        self._settled = False
        self.closing = trio.Event()  # set at shutdown: GET streams end so HTTP can drain

    # -- life ----------------------------------------------------------------------------
    async def run_children(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for child in self.children.values():
                if not child.enabled:
                    log.warning("server %s skipped: %s", child.name, child.last_error or child.state)
                nursery.start_soon(child.run)
            task_status.started()

    async def settled(self) -> None:
        """Right after start, wait (at most STARTUP_WAIT) for children that have not come up once yet.

        A client that connects the moment the gateway listens would otherwise see a partial
        tools/list, or get "unknown tool" for a tool whose server is still starting.
        """
        if self._settled:
            return
        with trio.move_on_after(STARTUP_WAIT):
            for child in self.children.values():
                await child.ready.wait()
        self._settled = all(c.ready.is_set() for c in self.children.values())

    def health(self) -> tuple[bool, dict[str, Any]]:
        children = [c.status() for c in self.children.values() if c.enabled]
        ok = all(c["state"] == "ready" for c in children)
        return ok, {
            "status": "ok" if ok else "degraded",
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "children": children,
            "sessions": len(self.sessions),
        }

    def rebuild_catalog(self) -> None:
        listings = [
            ChildListing(
                server=c.name,
                prefix=c.prefix,
                tools=c.listing.tools,
                prompts=c.listing.prompts,
                resources=c.listing.resources,
                templates=c.listing.templates,
            )
            for c in self.children.values()
            if c.state == "ready"
        ]
        self.catalog = Catalog.build(listings, self.separator)
        self._tool_list_cache = None
        for w in self.catalog.warnings:
            if w not in self._warned:
                self._warned.add(w)
                log.warning("%s", w)
        self._broadcast(jsonrpc.notification("notifications/tools/list_changed"))

    def _broadcast(self, msg: dict[str, Any]) -> None:
        for s in list(self.sessions.values()):
            if s.listening:
                s.push(msg)

    # -- sessions --------------------------------------------------------------------------
    def reload(self, policy: PolicyEngine, anonymizer: Anonymizer) -> None:
        """Swap the rules in one step (no await in between): a call sees the old or the new set."""
        self.policy = policy
        self.anonymizer = anonymizer
        self._tool_list_cache = None

    def new_session(self) -> ClientSession | None:
        """A new session; at MAX_SESSIONS the longest-idle one without work is ended to make room,
        and None is returned if every session is busy (the caller answers 503)."""
        if len(self.sessions) >= MAX_SESSIONS:
            idle = [s for s in self.sessions.values() if not s.inflight and not s.listening]
            if not idle:
                return None
            oldest = min(idle, key=lambda s: s.last_seen)
            log.warning("session limit (%d) reached: ending the longest-idle session", MAX_SESSIONS)
            self.end_session(oldest.id)
        s = ClientSession(id=secrets.token_urlsafe(24))
        self.sessions[s.id] = s
        return s

    def end_session(self, session_id: str) -> bool:
        s = self.sessions.pop(session_id, None)
        if s is None:
            return False
        s.closed = True
        for (sid, server), (child, scope) in list(self._session_children.items()):
            if sid == session_id:
                scope.cancel()  # the child's process is stopped (stdin, SIGTERM, SIGKILL)
                del self._session_children[(sid, server)]
                self._session_of_child.pop(child.name, None)
        for scope in list(s.inflight.values()):
            scope.cancel()
        for ans in s.waiting.values():
            ans.event.set()
        s.new_event.set()  # wakes its GET stream, which then ends
        return True

    # -- client → gateway ------------------------------------------------------------------
    async def handle(self, msg: dict[str, Any], ctx: RequestContext) -> dict[str, Any] | None:
        """One message from a client; returns the response (None for notifications/responses)."""
        kind = jsonrpc.kind(msg)
        if kind == "response":
            self._client_answer(msg, ctx.session)
            return None
        if kind == "notification":
            await self._client_notification(msg, ctx)
            return None
        if kind != "request" or msg.get("jsonrpc") != "2.0" or not jsonrpc.valid_id(msg.get("id")):
            rid = msg.get("id") if jsonrpc.valid_id(msg.get("id")) else None
            return jsonrpc.error_response(rid, jsonrpc.INVALID_REQUEST, "Invalid Request")
        rid = msg["id"]
        method: str = msg["method"]
        params = msg.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return jsonrpc.error_response(rid, jsonrpc.INVALID_PARAMS, "params must be an object")
        handler = self._methods.get(method)
        if handler is None:
            return jsonrpc.error_response(rid, jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}")
        ctx.request_id = rid
        scope = trio.CancelScope()
        if ctx.session is not None:
            ctx.session.inflight[rid] = scope
        try:
            with scope:
                result = await handler(self, params, ctx)
            if scope.cancelled_caught:
                return None  # cancelled by the client: no response is sent
            return jsonrpc.result_response(rid, result)
        except RpcError as exc:
            err = exc.to_object()
            err["message"] = self.anonymizer.to_fake_text(err["message"])
            return {"jsonrpc": "2.0", "id": rid, "error": err}
        except (KeyError, TypeError, ValueError) as exc:
            detail = self.anonymizer.to_fake_text(str(exc))
            return jsonrpc.error_response(rid, jsonrpc.INVALID_PARAMS, f"Invalid params: {detail}")
        finally:
            if ctx.session is not None:
                ctx.session.inflight.pop(rid, None)

    async def _client_notification(self, msg: dict[str, Any], ctx: RequestContext) -> None:
        method = msg.get("method")
        params = msg.get("params") or {}
        if method == "notifications/cancelled" and ctx.session is not None:
            scope = ctx.session.inflight.get(params.get("requestId"))
            if scope is not None:
                scope.cancel()
        elif method == "notifications/roots/list_changed":
            for child in self.children.values():
                if child.conn is not None:
                    try:
                        await child.conn.notify("notifications/roots/list_changed")
                    except RpcError:
                        pass
        # notifications/initialized and unknown notifications need nothing.

    def _client_answer(self, msg: dict[str, Any], session: ClientSession | None) -> None:
        if session is None:
            return
        ans = session.waiting.get(msg.get("id"))  # type: ignore[arg-type]
        if ans is not None and not ans.event.is_set():
            ans.message = msg
            ans.event.set()

    # -- methods ---------------------------------------------------------------------------
    async def m_initialize(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        requested = params.get("protocolVersion")
        version = requested if requested in SUPPORTED_PROTOCOLS else LATEST_PROTOCOL
        if ctx.session is not None:
            ctx.session.protocol_version = version
            ctx.session.client_info = params.get("clientInfo") or {}
            ctx.session.capabilities = params.get("capabilities") or {}
        return {
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": True},
                "prompts": {"listChanged": True},
                "resources": {"subscribe": True, "listChanged": True},
                "logging": {},
                "completions": {},
            },
            "serverInfo": {"name": "portero", "title": "Portero MCP gateway", "version": __version__},
            "instructions": "Portero aggregates several MCP servers; tool names are <server>"
            f"{self.separator}<tool>.",
        }

    async def m_ping(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {}

    async def m_tools_list(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await self.settled()
        if self._tool_list_cache is None:
            tools = [e.item for e in self.catalog.tools.values() if self.policy.visible(e.canonical)]
            self._tool_list_cache = self.anonymizer.to_fake(tools)
        return {"tools": self._tool_list_cache}

    async def m_tools_call(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return await self.call_tool(params, ctx)

    async def call_tool(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """The tools/call pipeline, top to bottom."""
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(jsonrpc.INVALID_PARAMS, "tools/call needs a tool name")
        entry = self.catalog.tools.get(name)
        if entry is None and not self._settled:
            await self.settled()
            entry = self.catalog.tools.get(name)
        if entry is None:
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown tool: {name}")
        args_fake = params.get("arguments") or {}
        if not isinstance(args_fake, dict):
            raise RpcError(jsonrpc.INVALID_PARAMS, "tools/call arguments must be an object")
        started = time.monotonic()
        record = _AuditDraft(
            session=ctx.session.id if ctx.session else None, tool=entry.canonical, args=args_fake
        )
        try:
            return await self._call_tool(entry, args_fake, record, started, ctx, params)
        finally:
            if not record.recorded:
                # Cancelled (client went away, DELETE, notifications/cancelled) or a bug: the call
                # still leaves its one audit record.
                with trio.CancelScope(shield=True):
                    if record.decision == "require-approval":
                        record.decision, record.source = "expired", "cancelled"
                    record.outcome = "error"
                    await self._record(record, started, "cancelled before it finished")

    async def _call_tool(
        self,
        entry: Entry,
        args_fake: dict[str, Any],
        record: _AuditDraft,
        started: float,
        ctx: RequestContext,
        params: dict[str, Any],
    ) -> dict[str, Any]:

        # 1. anonymize the request (fake → real)
        args_real = self.anonymizer.to_real(args_fake)

        # 2. decide
        decision: Decision = self.policy.decide(entry.canonical)
        if decision.action == "require-approval" and self.broker is not None:
            grant = self.broker.grants.match(entry.canonical)
            if grant is not None:
                decision = Decision("allow", f"grant:{grant.pattern}")
        record.decision, record.source = decision.action, decision.source
        if decision.action == "deny":
            where = (
                f"rule {decision.source[5:]!r}"
                if decision.source.startswith("rule:")
                else "the default policy"
            )
            return await self._refuse(
                record, started, f"Call to {entry.canonical} denied by {where}.", "deny"
            )

        # 3. wait for approval
        if decision.action == "require-approval":
            log.info("%s needs approval (%s)", entry.canonical, decision.source)
            outcome = await self._approve(entry, decision, args_real, args_fake, ctx, params)
            record.decision, record.source = outcome.decision, outcome.source
            if outcome.decision == "approved":
                log.info("%s approved (%s)", entry.canonical, outcome.source)
            else:
                return await self._refuse(
                    record, started, f"Call to {entry.canonical} refused: {outcome.reason}."
                )
        else:
            record.decision = "allow"

        # 4. call the child
        child = self.children[entry.server]
        result: dict[str, Any]
        try:
            resp = await self._child_request(
                child, "tools/call", {"name": entry.original, "arguments": args_real}, ctx, params
            )
        except ChildGone as exc:
            result = tool_error(f"Server {entry.server} failed during the call: {exc.message}")
            record.outcome = "error"
        except RpcError as exc:
            result = tool_error(exc.message)
            record.outcome = "error"
        else:
            if "error" in resp:
                # A protocol error from the child: pass it on, anonymized.
                err = resp.get("error") or {}
                record.outcome = "error"
                await self._record(record, started, str(err.get("message", ""))[:500])
                raise RpcError(
                    int(err.get("code", jsonrpc.INTERNAL_ERROR)),
                    str(err.get("message", "error")),
                    err.get("data"),
                )
            raw = resp.get("result")
            if not isinstance(raw, dict):
                result = tool_error(f"Server {entry.server} sent an invalid result")
                record.outcome = "error"
            else:
                result = raw
                record.outcome = "error" if result.get("isError") else "ok"

        # 5. anonymize the response (real → fake)
        answer: dict[str, Any] = self.anonymizer.to_fake(result)

        # 6. record (committed before the answer is sent)
        await self._record(record, started)
        return answer

    async def _refuse(
        self, record: _AuditDraft, started: float, reason: str, decision: str | None = None
    ) -> dict[str, Any]:
        if decision:
            record.decision = decision
        record.outcome = "refused"
        log.info("refused %s (%s, %s)", record.tool, record.decision, record.source)
        await self._record(record, started, reason)
        return tool_error(reason)

    async def _record(self, record: _AuditDraft, started: float, error: str | None = None) -> None:
        record.recorded = True
        if self.store is None:
            return
        try:
            await self.store.record_audit(
                {
                    "ts": time.time(),
                    "session": record.session,
                    "tool": record.tool,
                    "arguments": record.args,
                    "decision": record.decision,
                    "source": record.source,
                    "outcome": record.outcome,
                    "duration_ms": round((time.monotonic() - started) * 1000, 3),
                    "error": error,
                }
            )
        except Exception:
            log.exception("could not write the audit record for %s", record.tool)

    async def _approve(
        self,
        entry: Entry,
        decision: Decision,
        args_real: dict[str, Any],
        args_fake: dict[str, Any],
        ctx: RequestContext,
        params: dict[str, Any],
    ) -> Any:
        from .approvals import Outcome  # local: approvals pulls in the store

        if self.broker is None:
            return Outcome(
                "rejected",
                "no-approver",
                "approval required but no approver is configured (no [telegram] section)",
            )
        token = (params.get("_meta") or {}).get("progressToken")
        tick = None
        if token is not None:
            count = itertools.count(1)

            async def tick(elapsed: float, total: float) -> None:
                await ctx.send(
                    jsonrpc.notification(
                        "notifications/progress",
                        {
                            "progressToken": token,
                            "progress": next(count),
                            "message": f"waiting for the admin's approval ({elapsed:.0f}s of {total:.0f}s)",
                        },
                    )
                )

        return await self.broker.request(
            tool=entry.canonical,
            server=entry.server,
            rule=decision.source,
            arguments_real=args_real,
            arguments_fake=args_fake,
            session=ctx.session.id if ctx.session else None,
            on_wait_tick=tick,
        )

    async def _child_request(
        self,
        child: Child,
        method: str,
        child_params: dict[str, Any],
        ctx: RequestContext,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """Send one request to a child on behalf of a client request, with progress remapping."""
        if child.cfg.per_session and ctx.session is not None:
            child = await self._session_child(ctx.session, child)
        conn = child.conn
        if conn is None:
            raise RpcError(jsonrpc.SERVER_UNAVAILABLE, f"Server {child.name} is not running ({child.state}).")
        token = (params.get("_meta") or {}).get("progressToken")
        gw_token = None
        meta = {k: v for k, v in (params.get("_meta") or {}).items() if k != "progressToken"}
        if token is not None:
            gw_token = f"pt{next(self._progress_ids)}"
            self._progress[gw_token] = (ctx, token)
            meta["progressToken"] = gw_token
        if meta:
            child_params = {**child_params, "_meta": meta}
        active = self._active[child.name]
        active.append(ctx)
        try:
            # The connection delivers the response only after the child's notifications read
            # before it were routed, so progress and log messages precede the answer.
            return await conn.request(method, child_params, timeout=child.call_timeout)
        finally:
            active.remove(ctx)
            if gw_token is not None:
                self._progress.pop(gw_token, None)

    async def _forward(
        self,
        server: str,
        method: str,
        child_params: dict[str, Any],
        ctx: RequestContext,
        params: dict[str, Any],
    ) -> Any:
        child = self.children.get(server)
        if child is None:
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown server {server}")
        resp = await self._child_request(child, method, self.anonymizer.to_real(child_params), ctx, params)
        if "error" in resp:
            err = resp.get("error") or {}
            raise RpcError(
                int(err.get("code", jsonrpc.INTERNAL_ERROR)),
                self.anonymizer.to_fake_text(str(err.get("message", "error"))),
                self.anonymizer.to_fake(err.get("data")),
            )
        return self.anonymizer.to_fake(resp.get("result") or {})

    async def m_prompts_list(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await self.settled()
        return {"prompts": self.anonymizer.to_fake([e.item for e in self.catalog.prompts.values()])}

    async def m_prompts_get(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        entry = self.catalog.prompts.get(params.get("name"))  # type: ignore[arg-type]
        if entry is None:
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {params.get('name')}")
        return await self._forward(
            entry.server, "prompts/get", {**params, "name": entry.original}, ctx, params
        )

    async def m_resources_list(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await self.settled()
        return {"resources": self.anonymizer.to_fake(self.catalog.resource_items)}

    async def m_resources_templates_list(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await self.settled()
        return {"resourceTemplates": self.anonymizer.to_fake(self.catalog.template_items())}

    def _resource_server(self, params: dict[str, Any]) -> tuple[str, str]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise RpcError(jsonrpc.INVALID_PARAMS, "uri must be a string")
        real_uri = self.anonymizer.to_real_text(uri)
        server = self.catalog.route_resource(real_uri) or self.catalog.route_resource(uri)
        if server is None:
            raise RpcError(jsonrpc.RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
        return server, uri

    async def m_resources_read(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        server, _ = self._resource_server(params)
        return await self._forward(server, "resources/read", params, ctx, params)

    async def m_resources_subscribe(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        server, uri = self._resource_server(params)
        if ctx.session is not None:
            ctx.session.subscriptions.add(uri)
        return await self._forward(server, "resources/subscribe", params, ctx, params)

    async def m_resources_unsubscribe(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        server, uri = self._resource_server(params)
        if ctx.session is not None:
            ctx.session.subscriptions.discard(uri)
        return await self._forward(server, "resources/unsubscribe", params, ctx, params)

    async def m_completion_complete(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        ref = params.get("ref") or {}
        if ref.get("type") == "ref/prompt":
            entry = self.catalog.prompts.get(str(ref.get("name")))
            if entry is None:
                raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {ref.get('name')}")
            return await self._forward(
                entry.server,
                "completion/complete",
                {**params, "ref": {**ref, "name": entry.original}},
                ctx,
                params,
            )
        if ref.get("type") == "ref/resource":
            server, _ = self._resource_server({"uri": ref.get("uri")})
            return await self._forward(server, "completion/complete", params, ctx, params)
        raise RpcError(jsonrpc.INVALID_PARAMS, "completion/complete needs a ref/prompt or ref/resource")

    async def m_logging_set_level(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        level = params.get("level")
        if level not in LOG_LEVELS:
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Invalid log level: {level}")
        if ctx.session is not None:
            ctx.session.log_level = level
        # Children are shared: ask them for the most verbose level any session wants, and filter
        # per session on the way out (_wants_log).
        levels = [s.log_level for s in self.sessions.values() if s.log_level in LOG_LEVELS] or [level]
        child_level = min(levels, key=LOG_LEVELS.index)
        for child in self.children.values():
            if child.conn is not None and "logging" in child.capabilities:
                try:
                    await child.conn.request("logging/setLevel", {"level": child_level}, timeout=5)
                except RpcError:
                    pass
        return {}

    _methods: dict[str, Callable[[Gateway, dict[str, Any], RequestContext], Awaitable[Any]]] = {
        "initialize": m_initialize,
        "ping": m_ping,
        "tools/list": m_tools_list,
        "tools/call": m_tools_call,
        "prompts/list": m_prompts_list,
        "prompts/get": m_prompts_get,
        "resources/list": m_resources_list,
        "resources/templates/list": m_resources_templates_list,
        "resources/read": m_resources_read,
        "resources/subscribe": m_resources_subscribe,
        "resources/unsubscribe": m_resources_unsubscribe,
        "completion/complete": m_completion_complete,
        "logging/setLevel": m_logging_set_level,
    }

    # -- child → gateway -------------------------------------------------------------------
    async def on_child_message(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any] | None:
        method = msg.get("method", "")
        params = msg.get("params") or {}
        child = self.children.get(conn.name)
        if method.endswith("/list_changed") and child is not None:
            what = method.split("/")[1]
            if what in ("tools", "prompts", "resources") and self.nursery is not None:
                # In the background: the refresh asks the child, and the child's answers are held
                # until its notifications are handled (children.Connection keeps their order).
                self.nursery.start_soon(self._refresh_child, child, conn, what)
            return None
        if method == "notifications/progress":
            target = self._progress.get(str(params.get("progressToken")))
            if target is not None:
                ctx, token = target
                await ctx.send(
                    jsonrpc.notification(method, self.anonymizer.to_fake({**params, "progressToken": token}))
                )
            return None
        if method == "notifications/resources/updated":
            uri = self.anonymizer.to_fake_text(str(params.get("uri", "")))
            for s in list(self.sessions.values()):
                if uri in s.subscriptions:
                    s.push(jsonrpc.notification(method, self.anonymizer.to_fake(params)))
            return None
        if method == "ping" and "id" in msg:
            return jsonrpc.result_response(msg["id"], {})
        if method == "notifications/cancelled":
            # The child withdrew one of its own requests to a client: tell that client, stop waiting.
            asked = self._child_asks.get((conn.name, params.get("requestId")))
            if asked is not None:
                ctx, our_id, ans = asked
                await ctx.send(
                    jsonrpc.notification(
                        method, {"requestId": our_id, "reason": params.get("reason", "cancelled")}
                    )
                )
                ans.event.set()
            return None
        out = self.anonymizer.to_fake(msg)
        attributed = self._attributed(conn.name)
        if "id" not in msg or msg.get("id") is None:
            # Logging and other notifications: to the attributed session, else to every listener;
            # log messages below a session's `logging/setLevel` are not sent to it.
            if attributed is not None:
                if _wants_log(attributed.session, out):
                    await attributed.send(out)
            else:
                for s in list(self.sessions.values()):
                    if s.listening and _wants_log(s, out):
                        s.push(out)
            return None
        # A server→client request (sampling, elicitation, roots): ask the attributed session.
        if attributed is None or attributed.session is None:
            return jsonrpc.error_response(
                msg["id"], jsonrpc.METHOD_NOT_FOUND, f"{method}: no client session can answer this now"
            )
        key = (conn.name, msg["id"])
        try:
            return await self._ask_client(attributed, msg, out, key)
        finally:
            self._child_asks.pop(key, None)

    async def _refresh_child(self, child: Child, conn: Connection, what: str) -> None:
        try:
            await child.refresh(conn, what)
        except RpcError as exc:
            log.warning("server %s: refreshing %s failed: %s", conn.name, what, exc.message)
            return
        if child.conn is conn:
            self.rebuild_catalog()

    def _attributed(self, child_name: str) -> RequestContext | None:
        active = self._active.get(child_name) or []
        if active:
            return active[-1]
        session = self._session_of_child.get(child_name)
        if session is not None and not session.closed:
            return RequestContext(session=session)  # a per-session child: always its own session
        return None

    async def _session_child(self, session: ClientSession, shared: Child) -> Child:
        """The session's own process of a `per_session` server, started on first use."""
        key = (session.id, shared.name)
        found = self._session_children.get(key)
        if found is None:
            assert self.nursery is not None
            child = shared.clone(f"{shared.name}@{session.id[:8]}")
            scope = trio.CancelScope()
            self._session_children[key] = (child, scope)
            self._session_of_child[child.name] = session
            self._active[child.name] = []

            async def run() -> None:
                with scope:
                    await child.run()
                self._active.pop(child.name, None)

            self.nursery.start_soon(run)
            found = (child, scope)
        child = found[0]
        # First use: wait for it to come up (or fail: then the call reports it as not running).
        with trio.move_on_after(INIT_TIMEOUT):
            await child.ready.wait()
        return child

    async def _ask_client(
        self, ctx: RequestContext, msg: dict[str, Any], out: dict[str, Any], key: tuple[str, Any]
    ) -> dict[str, Any]:
        session = ctx.session
        assert session is not None
        our_id = f"g{next(self._answer_ids)}"
        ans = _Answer()
        session.waiting[our_id] = ans
        self._child_asks[key] = (ctx, our_id, ans)
        try:
            sent = await ctx.send({**out, "id": our_id})
            if not sent:
                return jsonrpc.error_response(
                    msg["id"], jsonrpc.METHOD_NOT_FOUND, f"{msg['method']}: the client has no open stream"
                )
            with trio.move_on_after(CLIENT_REQUEST_TIMEOUT):
                await ans.event.wait()
            reply = ans.message
            if reply is None:
                return jsonrpc.error_response(msg["id"], jsonrpc.INTERNAL_ERROR, "the client did not answer")
            reply = self.anonymizer.to_real(reply)
            return {**reply, "id": msg["id"]}
        finally:
            session.waiting.pop(our_id, None)


LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def _wants_log(session: ClientSession | None, msg: dict[str, Any]) -> bool:
    """False for a log message below the level the session asked for with logging/setLevel."""
    if session is None or session.log_level is None or msg.get("method") != "notifications/message":
        return True
    level = (msg.get("params") or {}).get("level")
    if level not in LOG_LEVELS:
        return True
    return LOG_LEVELS.index(level) >= LOG_LEVELS.index(session.log_level)


@attrs.define
class _AuditDraft:
    session: str | None
    tool: str
    args: dict[str, Any]
    decision: str = "allow"
    source: str = "default"
    outcome: str = "ok"
    recorded: bool = False
