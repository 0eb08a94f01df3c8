"""MCP method dispatch, and the tools/call pipeline.

The data path of a tool call reads top to bottom in :meth:`Router.call_tool`:
resolve the name → decide (policy, grant) → wait for approval if needed → write the audit record
→ anonymize the request (fake → real) → call the upstream → anonymize the answer (real → fake) →
record the outcome.

Every ``tools/call`` leaves exactly one audit record: unknown tools, tools of a server that is
down, refusals, cancellations and failures included. A call that runs is recorded before it runs
(outcome ``pending``), and that row gets its outcome after; if that first write fails, the call is
refused and nothing runs (fail closed). A refusal is one record with its outcome. Audit rows hold
the fake side only.

A server's own messages (progress, logs, sampling, elicitation, roots, list_changed) come in
through :meth:`Router.on_upstream_message`; :mod:`.attribution` says which session they are for.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .. import __version__, metrics
from ..config import Config, McpServer
from ..core import jsonrpc, modern
from ..core.anonymize import Anonymizer
from ..core.catalog import Catalog, ChildListing, Entry
from ..core.descriptions import override_descriptions
from ..core.jsonrpc import RpcError
from ..core.policy import Decision, PolicyEngine
from ..upstream.oauth import oauth_factory
from ..upstream.peer import Peer, UpstreamGone
from ..upstream.supervisor import INIT_TIMEOUT, Upstream
from ..upstream.transports import transport_for
from .attribution import Attribution
from .clients import NOBODY, ClientView, client_views
from .pins import PinGuard
from .sessions import LATEST_PROTOCOL, SUPPORTED_PROTOCOLS, ClientSession, RequestContext, Sessions
from .tasks import TASKS_EXTENSION, Task, Tasks, wants_tasks

if TYPE_CHECKING:
    from ..approvals import ApprovalBroker, Outcome
    from ..store import Store
    from ..tracing import Tracing

log = logging.getLogger("portero.router")

CLIENT_REQUEST_TIMEOUT = 300.0  # how long a server's sampling/elicitation request may wait for the client
STARTUP_WAIT = 15.0  # how long a list or call waits for servers still starting after launch
MCP_LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# A server's request to a client needs the client to have declared the matching capability.
CLIENT_CAPABILITY = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}

Handler = Callable[["Router", dict[str, Any], RequestContext], Awaitable[Any]]


AUDIT_UNAVAILABLE = "audit log unavailable: the call was not run"
SERVER_INFO = {"name": "portero", "title": "Portero MCP gateway", "version": __version__}
CANONICAL_META = "io.portero/canonical"  # tools/list items: _meta key holding "<server>/<tool>"


def tool_error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


@attrs.define
class AuditDraft:
    """The audit record of one tools/call, filled in as the pipeline goes."""

    session: str | None
    tool: str
    args: Any
    ts: float = attrs.field(factory=time.time)  # when the call arrived
    decision: str = "allow"
    source: str = "default"
    outcome: str = "ok"
    client: str | None = None  # the [[client]] whose token made the call
    row_id: int | None = None  # the row written before the call ran (outcome pending), if any
    note: str | None = None  # added to the error column (e.g. "arguments edited by the admin")
    recorded: bool = False  # nothing more to write: the final record is written, or given up on


class Router:
    """Everything a client request needs: upstreams, catalog, policy, anonymization, approvals."""

    def __init__(
        self,
        config: Config,
        env: Mapping[str, str],
        *,
        sessions: Sessions,
        store: Store | None = None,
        broker: ApprovalBroker | None = None,
        clean_log: Callable[[str], str] = lambda text: text,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.tracing = tracing  # None: no spans at all (no endpoint, or OpenTelemetry not installed)
        self.separator: str = config.server.tool_separator
        self.sessions = sessions
        self.store = store
        self.broker = broker
        self.policy = PolicyEngine(config.policies.default, dict(config.policies.rules))
        # The admin's rules from the chat (pattern -> action), in every engine: see set_chat_rules.
        self.chat_rules: dict[str, str] = {}
        # What each client (by the name its token gave its session) sees, and its own rules.
        self.clients: dict[str, ClientView] = client_views(config.clients, config.policies)
        self.anonymizer = Anonymizer.from_config(config.replacements)
        self.started = time.monotonic()
        self._env = env
        self._clean_log = clean_log
        self._client_info = {"name": "portero", "version": __version__}
        # auth = "oauth" servers: their logins are in the store, one credentials object per server.
        self._oauth = oauth_factory(store) if store is not None else None
        # Told a server's name once each time it enters needs-login (app.py: a Telegram message).
        self.on_needs_login: Callable[[str], None] | None = None
        # The Telegram activity feed: (tool, decision, source, outcome) of each finished call. Called on
        # the call's path, so it must be cheap and synchronous (it appends to a bounded buffer).
        self.on_call_finished: Callable[[str, str, str, str], None] | None = None
        self._told_needs_login: set[str] = set()
        self.upstreams: dict[str, Upstream] = {cfg.name: self._new_upstream(cfg) for cfg in config.mcp}
        self._scopes: dict[str, trio.CancelScope] = {}  # each running upstream's, for reloads
        self.catalog = Catalog()
        self._known_tools: dict[str, Entry] = {}  # also tools of servers that are down right now
        self._tool_list_cache: dict[str, list[dict[str, Any]]] = {}  # per client
        self._warned: set[str] = set()
        self.attribution = Attribution()
        self.tasks = Tasks()  # calls waiting for approval, as tasks for the clients that ask for them
        # Tasks of stateless-era servers, relayed as "<server>/<their id>" -> the client they belong to.
        self._child_tasks: dict[str, str] = {}
        # `per_session = true` servers: (session id, server) -> (its own upstream, the scope running it)
        self._session_upstreams: dict[tuple[str, str], tuple[Upstream, trio.CancelScope]] = {}
        self._nursery: trio.Nursery | None = None
        self._settled = False
        # (server, list) -> whether another list_changed came while its refresh was running
        self._refreshing: dict[tuple[str, str], bool] = {}
        # Pinned tool definitions: quarantined and blocked tools are hidden and refused (see .pins).
        self.pins = PinGuard(config.pins.mode, store)
        self.pins.around_change = self._pins_changed
        sessions.on_end.append(self._session_ended)

    def _new_upstream(self, cfg: McpServer) -> Upstream:
        return Upstream(
            cfg,
            transport_for(cfg, self._env, clean_log=self._clean_log, oauth=self._oauth),
            max_message_bytes=self.config.server.max_message_bytes,
            handler=self.on_upstream_message,
            on_catalog_change=self.rebuild_catalog,
            client_info=self._client_info,
        )

    def _clean_shown(self, text: str) -> str:
        """A server's error text as /health and /status show it: secrets out, real values faked.
        (Log lines, its stderr included, get the same from the logging filter.)"""
        return self.anonymizer.to_fake_text(self._clean_log(text))

    # -- life ----------------------------------------------------------------------------
    async def run_upstreams(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise every configured server until cancelled."""
        await self.pins.load()  # before any listing is reviewed
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.pins.run)
            for up in self.upstreams.values():
                # A skipped server is among the config's warnings, which serve logs already.
                self._start_upstream(up, announce_skip=False)
            task_status.started()

    def _start_upstream(self, up: Upstream, *, announce_skip: bool = True) -> None:
        """Run ``up`` in the upstreams' nursery, under a scope of its own (so a reload can stop it)."""
        assert self._nursery is not None
        if not up.enabled and announce_skip:
            log.warning("server %s skipped: %s", up.name, up.last_error or up.state)
        scope = trio.CancelScope()
        self._scopes[up.name] = scope

        async def run() -> None:
            with scope:
                await up.run()

        self._nursery.start_soon(run)

    def apply_servers(self, servers: Sequence[McpServer]) -> tuple[list[str], list[str], list[str]]:
        """SIGHUP: start added servers, stop removed ones, restart changed ones; unchanged ones keep
        running (and every session keeps its state). Returns (added, removed, restarted) names."""
        new = {cfg.name: cfg for cfg in servers}
        added = [n for n in new if n not in self.upstreams]
        removed = [n for n in self.upstreams if n not in new]
        changed = [n for n in new if n in self.upstreams and self.upstreams[n].cfg != new[n]]
        for name in removed + changed:
            scope = self._scopes.pop(name, None)
            if scope is not None:
                scope.cancel()  # its process is stopped: stdin, SIGTERM, SIGKILL, each bounded
            del self.upstreams[name]
        for name in added + changed:
            up = self._new_upstream(new[name])
            self.upstreams[name] = up
            self._start_upstream(up)
        # Keep the configured order (the first server wins a name clash).
        self.upstreams = {n: self.upstreams[n] for n in new}
        if removed or changed:
            self.rebuild_catalog()
        return added, removed, changed

    async def settled(self) -> None:
        """Right after start, wait (at most STARTUP_WAIT) for servers that have not come up once yet.

        A client that connects the moment the gateway listens would otherwise see a partial
        tools/list, or get "unknown tool" for a tool whose server is still starting.
        """
        if self._settled:
            return
        with trio.move_on_after(STARTUP_WAIT):
            for up in self.upstreams.values():
                await up.ready.wait()
        self._settled = all(u.ready.is_set() for u in self.upstreams.values())

    def uptime(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def upstream_status(self) -> list[dict[str, Any]]:
        """Each enabled server's state, its last error redacted and anonymized."""
        out = []
        for up in self.upstreams.values():
            if not up.enabled:
                continue
            st = up.status()
            if "error" in st:
                st["error"] = self._clean_shown(st["error"])
            out.append(st)
        return out

    def rebuild_catalog(self) -> None:
        def listing(u: Upstream) -> ChildListing:
            return ChildListing(
                server=u.name,
                prefix=u.prefix,
                tools=self._described(u),
                prompts=u.listing.prompts,
                resources=u.listing.resources,
                templates=u.listing.templates,
            )

        ups = list(self.upstreams.values())
        before = self._exposed()
        # The definitions as the servers sent them (before any description override) are what is pinned.
        self.pins.review({u.name: u.listing.tools for u in ups if u.state == "ready"})
        self.catalog = Catalog.build([listing(u) for u in ups if u.state == "ready"], self.separator)
        # Tools of a server that is restarting still resolve, to say so instead of "unknown tool".
        self._known_tools = Catalog.build([listing(u) for u in ups if u.enabled], self.separator).tools
        self._tool_list_cache = {}
        for w in self.catalog.warnings:
            if w not in self._warned:
                self._warned.add(w)
                log.warning("%s", w)
        self._announce_changes(before)
        self.tell_needs_login()

    def _described(self, u: Upstream) -> Sequence[dict[str, Any]]:
        """``u``'s tools with its ``descriptions`` overrides, what clients see (``u.listing`` keeps the
        server's own). An override for a tool the server does not list is a warning, once."""
        tools, missing = override_descriptions(u.listing.tools, u.cfg.descriptions)
        for name in missing if u.state == "ready" else ():
            w = f"server {u.name}: descriptions override for tool {name!r}, which the server does not list"
            if w not in self._warned:
                self._warned.add(w)
                log.warning("%s", w)
        return tools

    def tell_needs_login(self) -> None:
        """Call :attr:`on_needs_login` for each server that entered needs-login since it was last
        ready (once, however many times it retries)."""
        for up in self.upstreams.values():
            if up.state == "ready":
                self._told_needs_login.discard(up.name)
            elif up.state == "needs-login" and up.name not in self._told_needs_login:
                if self.on_needs_login is None:
                    continue  # told once someone listens
                self._told_needs_login.add(up.name)
                self.on_needs_login(up.name)

    def _exposed(self) -> dict[str, list[Any]]:
        """What clients see of each list now (after policy): to tell whether a change is visible."""
        visible = self.policy.visible
        owner = self.catalog.resources
        return {
            "tools": [e.item for e in self._shown_tools() if visible(e.canonical)],
            "prompts": [e.item for e in self.catalog.prompts.values() if visible(e.canonical)],
            "resources": [
                *(r for r in self.catalog.resource_items if visible(f"{owner[r['uri']]}/{r['uri']}")),
                *(t for _, srv, t in self.catalog.templates if visible(f"{srv}/{t['uriTemplate']}")),
            ],
        }

    def _announce_changes(self, before: dict[str, list[Any]]) -> None:
        """``notifications/<list>/list_changed`` to every session for each list that changed."""
        after = self._exposed()
        for what in ("tools", "prompts", "resources"):
            if before[what] != after[what]:
                self.sessions.broadcast(jsonrpc.notification(f"notifications/{what}/list_changed"))

    def tool_counts(self) -> tuple[int, int]:
        """``(shown, held)``: the tools a client with the global rules sees (not denied, definition not
        held), and how many more wait for the admin's approval of their definitions (quarantined)."""
        shown = sum(1 for e in self._shown_tools() if self.policy.visible(e.canonical))
        held = 0
        if self.pins.mode != "off":
            for e in self.catalog.tools.values():
                pin = self.pins.pin(e.server, e.original)
                held += pin is not None and pin.state == "quarantined"
        return shown, held

    def _shown_tools(self) -> list[Entry]:
        """The catalog's tools less those whose definition is quarantined or blocked (see .pins)."""
        return [e for e in self.catalog.tools.values() if self.pins.refusal(e.server, e.original) is None]

    def _pins_changed(self, change: Callable[[], None]) -> None:
        """A pin was approved or blocked (Telegram, ``portero pins``): sessions are told if they see it."""
        before = self._exposed()
        change()
        self.rebuild_catalog()  # drops the cached lists (and announces nothing: it compares after the change)
        self._announce_changes(before)

    def reload(self, policy: PolicyEngine, anonymizer: Anonymizer) -> None:
        """Swap the rules in one step (no await in between): a call sees the old or the new set.
        Sessions are told when what they see changes (a tool now denied disappears, say)."""
        before = self._exposed()
        self.policy = policy.with_chat(self.chat_rules)  # the chat's rules outlive a reload
        self.anonymizer = anonymizer
        self._tool_list_cache = {}
        self._announce_changes(before)

    def set_clients(self, views: dict[str, ClientView]) -> None:
        """SIGHUP: the clients' tools and rules (:func:`.clients.client_views` of the new config), in one
        step; each client's next request sees them (with the rules from the chat)."""
        self.clients = {name: self._with_chat(view) for name, view in views.items()}
        self._tool_list_cache = {}

    # --- rules from the chat (Telegram /allow /deny /ask /unrule, Always allow / Always deny) ----------
    # Kept in the store (chat_rules) and in every engine: the global one and each client's own. They are
    # loaded at start (app.py) and survive reloads (reload and set_clients add them to the new engines).

    def _with_chat(self, view: ClientView) -> ClientView:
        if view.policy is None or view.policy.chat == self.chat_rules:
            return view
        return ClientView(name=view.name, tools=view.tools, policy=view.policy.with_chat(self.chat_rules))

    def set_chat_rules(self, rules: Mapping[str, str]) -> None:
        """Install ``rules`` as the rules from the chat, in one step (no await): every engine is rebuilt
        with them, and sessions are told when what they see changes."""
        self.chat_rules = dict(rules)
        self.reload(self.policy, self.anonymizer)
        self.set_clients(self.clients)

    async def add_chat_rule(self, pattern: str, action: str, by: str = "telegram") -> str | None:
        """Add or replace the rule from the chat for ``pattern``: stored first, then applied. Returns the
        action it had before (None: new). Raises ValueError for a pattern or action the engine refuses,
        StoreError when it cannot be stored (then nothing changes)."""
        PolicyEngine("deny", {pattern: action})  # validates both, as config rules are
        if self.store is None:
            raise ValueError("rules from the chat need the store")
        await self.store.set_chat_rule(pattern, action, by, time.time())
        before = self.chat_rules.get(pattern)
        self.set_chat_rules({**self.chat_rules, pattern: action})
        return before

    async def remove_chat_rule(self, pattern: str) -> str | None:
        """Remove the rule from the chat for ``pattern``; returns its action (None: there was none)."""
        if self.store is None:
            return None
        await self.store.delete_chat_rule(pattern)
        rules = dict(self.chat_rules)
        before = rules.pop(pattern, None)
        self.set_chat_rules(rules)
        return before

    def _client(self, ctx: RequestContext) -> tuple[ClientView, PolicyEngine]:
        """The view of the request's client (by its session) and the policy engine that decides for it."""
        name = ctx.session.client if ctx.session is not None else "default"
        view = self.clients.get(name, NOBODY)
        return view, view.policy if view.policy is not None else self.policy

    def _session_ended(self, session: ClientSession) -> None:
        for (sid, server), (up, scope) in list(self._session_upstreams.items()):
            if sid == session.id:
                scope.cancel()  # the process is stopped (stdin, SIGTERM, SIGKILL)
                del self._session_upstreams[(sid, server)]
                self.attribution.drop_owner(up.name)

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
        if log.isEnabledFor(logging.DEBUG):
            what = f" {params.get('name')!r}" if method in ("tools/call", "prompts/get") else ""
            sid = ctx.session.id[:6] if ctx.session else "-"
            log.debug("%s%s (session %s…)", method, self.anonymizer.to_fake_text(what), sid)
        if self.tracing is None:
            resp = await self._dispatch(rid, params, handler, ctx)
        else:
            tool = self._span_tool(params) if method == "tools/call" else None
            session_id = ctx.session.id if ctx.session else None
            with self.tracing.request(method, params, rid, session_id, tool) as finish:
                resp = finish(await self._dispatch(rid, params, handler, ctx))
        if resp is not None and ctx.session is not None and ctx.session.modern:
            return self._modern_response(method, resp)
        return resp

    def _modern_response(self, method: str, resp: dict[str, Any]) -> dict[str, Any]:
        """A response as the stateless era (2026-07-28) sends it (see :func:`portero.core.modern.decorate`);
        a resource that does not exist is -32602 there."""
        result = resp.get("result")
        if isinstance(result, dict):
            return {**resp, "result": modern.decorate(method, result, SERVER_INFO)}
        error = resp.get("error")
        if isinstance(error, dict) and error.get("code") == jsonrpc.RESOURCE_NOT_FOUND:
            return {**resp, "error": {**error, "code": jsonrpc.INVALID_PARAMS}}
        return resp

    def _span_tool(self, params: dict[str, Any]) -> str | None:
        """A tools/call's tool for its span: the canonical name if known, else as the client sent it."""
        name = params.get("name")
        if not isinstance(name, str):
            return None
        entry = self.catalog.tools.get(name) or self._known_tools.get(name)
        return entry.canonical if entry is not None else self.anonymizer.to_fake_text(name)

    async def _dispatch(
        self, rid: Any, params: dict[str, Any], handler: Handler, ctx: RequestContext
    ) -> dict[str, Any] | None:
        scope = trio.CancelScope()
        if ctx.session is not None:
            ctx.session.inflight[rid] = scope
        try:
            with scope:
                result = await handler(self, params, ctx)
            if ctx.failure is not None:
                raise ctx.failure  # the call was ended on purpose (see _refuse_mid_call)
            if scope.cancelled_caught:
                return None  # cancelled by the client: no response is sent
            return jsonrpc.result_response(rid, result)
        except RpcError as exc:
            return {"jsonrpc": "2.0", "id": rid, "error": self._client_error(exc)}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = self.anonymizer.to_fake_text(str(exc))
            return jsonrpc.error_response(rid, jsonrpc.INVALID_PARAMS, f"Invalid params: {detail}")
        finally:
            if ctx.session is not None and ctx.session.inflight.get(rid) is scope:
                del ctx.session.inflight[rid]

    def _client_error(self, exc: RpcError) -> dict[str, Any]:
        """The one way an error (ours or a server's) becomes the client's: message and data anonymized."""
        return jsonrpc.error_object(
            exc.code, self.anonymizer.to_fake_text(exc.message), self.anonymizer.to_fake(exc.data)
        )

    async def _client_notification(self, msg: dict[str, Any], ctx: RequestContext) -> None:
        method = msg.get("method")
        params = msg.get("params")
        params = params if isinstance(params, dict) else {}
        if method == "notifications/cancelled" and ctx.session is not None:
            rid = params.get("requestId")
            scope = ctx.session.inflight.get(rid) if jsonrpc.hashable_id(rid) else None
            if scope is not None:
                scope.cancel()
        elif method == "notifications/roots/list_changed":
            for up in self.upstreams.values():
                if up.peer is not None:
                    try:
                        await up.peer.notify("notifications/roots/list_changed")
                    except RpcError:
                        pass
        # notifications/initialized and unknown notifications need nothing.

    def _client_answer(self, msg: dict[str, Any], session: ClientSession | None) -> None:
        rid = msg.get("id")
        if session is None or not isinstance(rid, str):
            return  # our own ids are strings; anything else answers nothing of ours
        ans = session.waiting.get(rid)
        if ans is not None:
            ans.resolve(msg)

    # -- methods ---------------------------------------------------------------------------
    async def m_initialize(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        requested = params.get("protocolVersion")
        version = requested if requested in SUPPORTED_PROTOCOLS else LATEST_PROTOCOL
        if ctx.session is not None:
            info, caps = params.get("clientInfo"), params.get("capabilities")
            ctx.session.protocol_version = version
            ctx.session.client_info = info if isinstance(info, dict) else {}
            ctx.session.capabilities = caps if isinstance(caps, dict) else {}
        return {
            "protocolVersion": version,
            "capabilities": capabilities(),
            "serverInfo": SERVER_INFO,
            "instructions": self._instructions(),
        }

    def _instructions(self) -> str:
        return f"Portero aggregates several MCP servers; tool names are <server>{self.separator}<tool>."

    async def m_server_discover(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """The stateless era's ``server/discover`` (a handshake-era session has ``initialize``)."""
        if ctx.session is None or not ctx.session.modern:
            raise RpcError(
                jsonrpc.METHOD_NOT_FOUND, "Method not found: server/discover (this session used initialize)"
            )
        return {
            "supportedVersions": [*modern.MODERN_PROTOCOLS, *SUPPORTED_PROTOCOLS],
            "capabilities": {**capabilities(), "extensions": {TASKS_EXTENSION: {}}},
            "instructions": self._instructions(),
        }

    async def m_ping(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {}

    async def m_tools_list(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await self.settled()
        view, policy = self._client(ctx)
        listed = self._tool_list_cache.get(view.name)
        if listed is None:
            # Each item says whose tool it is (``portero tools`` reads it); the server's own _meta stays.
            tools = [
                {**e.item, "_meta": {**_meta_of(e.item), CANONICAL_META: e.canonical}}
                for e in self._shown_tools()
                if view.sees(e.canonical) and policy.visible(e.canonical)
            ]
            listed = self._tool_list_cache[view.name] = self.anonymizer.to_fake(tools)
        if ctx.session is not None and ctx.session.modern:
            # The stateless era asks for a deterministic order (its caches compare lists).
            return {"tools": sorted(listed, key=lambda t: str(t.get("name")))}
        return {"tools": listed}

    async def m_tools_call(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        task = self._approval_task(params, ctx)
        if task is not None:
            return task
        return await self.call_tool(params, ctx)

    # -- approvals as tasks (the tasks extension of 2026-07-28; see gateway/tasks.py) -------------
    def _approval_task(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any] | None:
        """For a stateless-era client that declared the tasks extension, a call that needs the admin's
        approval becomes a task: the call goes on in the background and this returns the task."""
        session = ctx.session
        if session is None or not session.modern or not wants_tasks(session.capabilities):
            return None
        name = params.get("name")
        entry = self.catalog.tools.get(name) if isinstance(name, str) else None
        view, policy = self._client(ctx)
        if entry is None or not view.sees(entry.canonical):
            return None
        decision = policy.decide(entry.canonical)
        if self.broker is not None:
            decision = self.broker.grants.apply(decision, entry.canonical, session.client)
        if decision.action != "require-approval" or self.broker is None:
            return None
        waiting = f"Waiting for the admin's approval of {self.anonymizer.to_fake_text(entry.canonical)}."
        task = self.tasks.create(session.client, waiting)
        if task is None:
            return None  # too many tasks: the call blocks as for any other client
        self.sessions.start_call(lambda: self._run_task(task, params, RequestContext(session=session)))
        return {**task.wire(), "resultType": "task"}

    async def _run_task(self, task: Task, params: dict[str, Any], ctx: RequestContext) -> None:
        with task.scope:
            try:
                result = await self.call_tool(params, ctx)
            except RpcError as exc:
                self.tasks.finish(task, "failed", error=self._client_error(exc), message=exc.message)
            except Exception as exc:  # a bug costs this task, never the gateway
                log.exception("task %s failed", task.id[:6])
                self.tasks.finish(task, "failed", error=jsonrpc.error_from_exception(exc))
            else:
                self.tasks.finish(task, "completed", result=result, message=_first_text(result) or "")
        if task.scope.cancelled_caught:
            self.tasks.finish(task, "cancelled", message="cancelled by the client")

    def _relayed_task(self, server: str, ctx: RequestContext, result: dict[str, Any]) -> dict[str, Any]:
        """A server's task handle (its CreateTaskResult), as the client sees it: the id namespaced
        ``<server>/<id>`` (so tasks/get finds the server, and two servers' ids never collide), and
        bound to the client that got it."""
        task_id = result.get("taskId")
        if result.get("resultType") != "task" or not isinstance(task_id, str) or ctx.session is None:
            return result
        ours = f"{server}/{task_id}"
        self._child_tasks[ours] = ctx.session.client
        while len(self._child_tasks) > MAX_CHILD_TASKS:
            del self._child_tasks[next(iter(self._child_tasks))]  # the oldest
        return {**result, "taskId": ours}

    async def _child_task(
        self, method: str, params: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any] | None:
        """tasks/get, tasks/update or tasks/cancel of a relayed task, asked of its server; None when
        the id is not of the ``<server>/<id>`` form (then it is one of the gateway's own)."""
        task_id = params.get("taskId")
        if not isinstance(task_id, str) or "/" not in task_id:
            return None
        owner = self._child_tasks.get(task_id)
        if owner is None or ctx.session is None or not secrets.compare_digest(owner, ctx.session.client):
            raise RpcError(jsonrpc.INVALID_PARAMS, "Unknown task")
        server, _, theirs = task_id.partition("/")
        result = await self._forward(server, method, {**params, "taskId": theirs}, ctx, params)
        if isinstance(result, dict) and result.get("taskId") == theirs:
            result = {**result, "taskId": task_id}
        return result if isinstance(result, dict) else {}

    def _own_task(self, params: dict[str, Any], ctx: RequestContext) -> Task:
        session = ctx.session
        if session is None or not session.modern:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, "Method not found: tasks are a 2026-07-28 extension")
        task = self.tasks.get(params.get("taskId"), session.client)
        if task is None:
            raise RpcError(jsonrpc.INVALID_PARAMS, "Unknown task")
        return task

    async def m_tasks_get(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        relayed = await self._child_task("tasks/get", params, ctx) if _is_modern(ctx) else None
        return relayed if relayed is not None else self._own_task(params, ctx).wire()

    async def m_tasks_update(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        relayed = await self._child_task("tasks/update", params, ctx) if _is_modern(ctx) else None
        if relayed is None:
            self._own_task(params, ctx)  # the gateway's tasks never ask for input: nothing to deliver
        return {}

    async def m_tasks_cancel(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        relayed = await self._child_task("tasks/cancel", params, ctx) if _is_modern(ctx) else None
        if relayed is None:
            self._own_task(params, ctx).scope.cancel()  # the approval is withdrawn, the call not run
        return {}

    # -- the tools/call pipeline -----------------------------------------------------------------
    async def call_tool(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """The tools/call pipeline, top to bottom; every path leaves one audit record."""
        started = time.monotonic()
        name = params.get("name")
        args_fake = params.get("arguments")
        if args_fake is None:
            args_fake = {}
        record = AuditDraft(
            session=ctx.session.id if ctx.session else None,
            tool=name if isinstance(name, str) else repr(name)[:200],
            args=args_fake,
            client=ctx.session.client if ctx.session else None,
        )
        try:
            return await self._call_tool(name, args_fake, record, started, ctx, params)
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
        name: Any,
        args_fake: Any,
        record: AuditDraft,
        started: float,
        ctx: RequestContext,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        # 1. resolve the name
        if not isinstance(name, str):
            return await self._reject(
                record, started, RpcError(jsonrpc.INVALID_PARAMS, "tools/call needs a tool name")
            )
        entry = self.catalog.tools.get(name)
        if entry is None and not self._settled:
            await self.settled()
            entry = self.catalog.tools.get(name)
        view, policy = self._client(ctx)
        if entry is None or not view.sees(entry.canonical):
            known = self._known_tools.get(name)
            if known is None or not view.sees(known.canonical):  # what a client does not see is unknown
                return await self._reject(
                    record, started, RpcError(jsonrpc.INVALID_PARAMS, f"Unknown tool: {name}")
                )
            entry = known  # its server is down: the policy still decides, the call then says why
        record.tool = entry.canonical
        if not isinstance(args_fake, dict):
            return await self._reject(
                record, started, RpcError(jsonrpc.INVALID_PARAMS, "tools/call arguments must be an object")
            )

        refusal = self.pins.refusal(entry.server, entry.original)
        if refusal is not None:  # its definition is quarantined or blocked: hidden, and refused
            record.decision, record.source = "deny", "pins"
            return await self._refuse(record, started, f"Call to {entry.canonical} refused: {refusal}.")

        # 2. decide (policy, then grants)
        decision: Decision = policy.decide(entry.canonical)
        if self.broker is not None:
            decision = self.broker.grants.apply(decision, entry.canonical, view.name)
        record.decision, record.source = decision.action, decision.source
        if decision.action == "deny":
            where = f"rule {decision.rule!r}" if decision.rule else "the default policy"
            return await self._refuse(record, started, f"Call to {entry.canonical} denied by {where}.")

        # 3. wait for approval
        args_real = self.anonymizer.to_real(args_fake)
        if decision.action == "require-approval":
            log.info("%s needs approval (%s)", entry.canonical, decision.source)
            outcome = await self._approve(entry, decision, args_real, args_fake, ctx, params)
            record.decision, record.source = outcome.decision, outcome.source
            if outcome.decision != "approved":
                return await self._refuse(
                    record, started, f"Call to {entry.canonical} refused: {outcome.reason}."
                )
            log.info("%s approved (%s)", entry.canonical, outcome.source)
            if outcome.arguments is not None:
                # The admin's edited arguments, as written (real values): the audit keeps the client's and
                # says so; the approval keeps the edited ones (approvals.edited_arguments).
                args_real = outcome.arguments
                record.note = f"arguments edited by the admin (approval {outcome.approval})"
        else:
            record.decision = "allow"

        # 4. record the call before anything runs; no record, no call (fail closed)
        if not await self._record_start(record):
            return tool_error(AUDIT_UNAVAILABLE)

        # 5. call the upstream (the request anonymized fake → real)
        up = self.upstreams[entry.server]
        result: dict[str, Any]
        error: str | None = None
        try:
            up_params = {"name": entry.original, "arguments": args_real, **self._input_responses(params)}
            resp = await self._upstream_request(up, "tools/call", up_params, ctx, params)
        except UpstreamGone as exc:
            result = tool_error(f"Server {entry.server} failed during the call: {exc.message}")
        except ValueError as exc:  # the arguments cannot be encoded (nested too deeply): nothing was sent
            result = tool_error(f"The call was not sent to {entry.server}: {exc}")
        except RpcError as exc:
            result = tool_error(exc.message)
        else:
            if "error" in resp:
                # A protocol error from the server: recorded as the client will see it, then passed
                # on; handle() anonymizes it for the client (once, with every other error).
                err = jsonrpc.error_from_message(resp.get("error"))
                record.outcome = "error"
                await self._record(record, started, self.anonymizer.to_fake_text(err.message)[:500])
                raise err
            raw = resp.get("result")
            result = (
                raw if isinstance(raw, dict) else tool_error(f"Server {entry.server} sent an invalid result")
            )

        # 6. anonymize the answer (real → fake)
        answer: dict[str, Any] = self._relayed_task(entry.server, ctx, self._to_fake_result(result))
        if answer.get("isError"):
            record.outcome = "error"
            error = _first_text(answer)

        # 7. record the outcome in the same row (committed before the answer is sent)
        await self._record(record, started, error)
        return answer

    async def _reject(self, record: AuditDraft, started: float, exc: RpcError) -> dict[str, Any]:
        """A call that is not valid: recorded as refused, answered with the JSON-RPC error."""
        record.decision, record.source, record.outcome = "deny", "invalid", "refused"
        await self._record(record, started, self.anonymizer.to_fake_text(exc.message))
        raise exc

    async def _refuse(self, record: AuditDraft, started: float, reason: str) -> dict[str, Any]:
        record.outcome = "refused"
        log.info("refused %s (%s, %s)", record.tool, record.decision, record.source)
        await self._record(record, started, reason)
        return tool_error(reason)

    def _audit_fields(self, record: AuditDraft, outcome: str) -> dict[str, Any]:
        return {
            "ts": record.ts,
            "session": record.session,
            "tool": record.tool,
            "arguments": record.args,
            "decision": record.decision,
            "source": record.source,
            "outcome": outcome,
            "client": record.client,
        }

    async def _record_start(self, record: AuditDraft) -> bool:
        """Write the record of a call about to run (outcome pending); False if it could not be written."""
        if self.store is None:
            return True
        try:
            record.row_id = await self.store.record_audit(self._audit_fields(record, "pending"))
        except Exception as exc:
            # Nothing ran and nothing can be recorded: the refusal is in the log only.
            record.outcome, record.recorded = "refused", True
            metrics.call_finished(record.tool, record.decision, record.outcome, None, record.client or "")
            log.error("%s (%s): %s", AUDIT_UNAVAILABLE, record.tool, exc, exc_info=_unexpected(exc))
            return False
        return True

    async def _record(self, record: AuditDraft, started: float, error: str | None = None) -> None:
        """The final record: the outcome of the row written before the call, or (a call that never ran)
        the one record of the refusal."""
        record.recorded = True
        # A refused invalid call's tool is whatever the client sent: one label value, not unbounded ones.
        tool = "(invalid)" if record.source == "invalid" else record.tool
        elapsed = time.monotonic() - started
        metrics.call_finished(tool, record.decision, record.outcome, elapsed, record.client or "")
        if self.on_call_finished is not None:
            self.on_call_finished(tool, record.decision, record.source, record.outcome)
        if self.store is None:
            return
        duration_ms = round((time.monotonic() - started) * 1000, 3)
        if record.note is not None:
            error = f"{error}; {record.note}" if error else record.note
        try:
            if record.row_id is not None:
                await self.store.finish_audit(
                    record.row_id, outcome=record.outcome, duration_ms=duration_ms, error=error
                )
            else:
                await self.store.record_audit(
                    {**self._audit_fields(record, record.outcome), "duration_ms": duration_ms, "error": error}
                )
        except Exception as exc:
            if record.row_id is not None:
                log.error(
                    "could not write the outcome of %s (%s); its audit record stays pending: %s",
                    record.tool,
                    record.outcome,
                    exc,
                    exc_info=_unexpected(exc),
                )
            else:
                log.error(
                    "could not write the audit record of %s (%s): %s",
                    record.tool,
                    record.outcome,
                    exc,
                    exc_info=_unexpected(exc),
                )

    async def _approve(
        self,
        entry: Entry,
        decision: Decision,
        args_real: dict[str, Any],
        args_fake: dict[str, Any],
        ctx: RequestContext,
        params: dict[str, Any],
    ) -> Outcome:
        from ..approvals import NO_APPROVER_REASON, Outcome

        if self.broker is None:
            return Outcome("rejected", "no-approver", NO_APPROVER_REASON)
        token = _progress_token(params)
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
            client=ctx.session.client if ctx.session else None,
            input_schema=entry.item.get("inputSchema"),
            to_fake=self.anonymizer.to_fake,
        )

    async def _upstream_request(
        self,
        up: Upstream,
        method: str,
        up_params: dict[str, Any],
        ctx: RequestContext,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """Send one request to a server on behalf of a client request, with progress remapping.

        ``up_params`` are already on the real side; the client's ``_meta`` is anonymized here."""
        if up.cfg.per_session and ctx.session is not None and not ctx.session.modern:
            # A stateless-era request has no session to own a process: it uses the shared one.
            up = await self._session_upstream(ctx.session, up)
        peer = up.peer
        if peer is None:
            raise RpcError(jsonrpc.SERVER_UNAVAILABLE, f"Server {up.name} is not running ({up.state}).")
        meta_in = params.get("_meta")
        meta = {k: v for k, v in meta_in.items() if k != "progressToken"} if isinstance(meta_in, dict) else {}
        meta = self.anonymizer.to_real(meta)
        token = _progress_token(params)
        gw_token = None
        if token is not None:
            gw_token = self.attribution.progress_token(ctx, token)
            meta["progressToken"] = gw_token
        if self.tracing is not None:
            self.tracing.inject(meta)
        if meta:
            up_params = {**up_params, "_meta": meta}
        session = ctx.session
        if up.modern:
            level = session.log_level if session is not None else None
            up_params = up.with_envelope(up_params, _client_capabilities(session), level) or {}
        self.attribution.begin(up.name, ctx)
        try:
            # The peer delivers the response only after the server's notifications read before it
            # were routed, so progress and log messages precede the answer.
            resp = await peer.request(method, up_params, timeout=up.call_timeout)
            for _ in range(MAX_INPUT_ROUNDS):
                result = resp.get("result")
                if session is None or session.modern or not _input_required(result):
                    break
                # A stateless-era server needs input from a handshake-era client: ask the client
                # as a server of its era would (sampling, elicitation, roots), then ask again.
                assert isinstance(result, dict)
                answers = await self._fulfil_input_requests(up.name, ctx, result.get("inputRequests"))
                retry = {**up_params, "inputResponses": answers}
                retry.pop("requestState", None)
                if isinstance(result.get("requestState"), str):
                    retry["requestState"] = result["requestState"]
                resp = await peer.request(method, retry, timeout=up.call_timeout)
            return resp
        finally:
            self.attribution.end(up.name, ctx)
            if gw_token is not None:
                self.attribution.release_progress(gw_token)

    async def _fulfil_input_requests(self, server: str, ctx: RequestContext, requests: Any) -> dict[str, Any]:
        """The client's answers to a server's ``inputRequests``, each asked as a request of the
        client's own era; a request the client cannot answer ends the call with the reason."""
        if not isinstance(requests, dict) or not requests or len(requests) > MAX_INPUT_REQUESTS:
            raise RpcError(
                jsonrpc.INTERNAL_ERROR, f"Server {server} asked for input in a form the gateway cannot relay"
            )
        answers: dict[str, Any] = {}
        for key, request in requests.items():
            method = request.get("method") if isinstance(request, dict) else None
            needed = CLIENT_CAPABILITY.get(method) if isinstance(method, str) else None
            if needed is None or ctx.session is None or not ctx.session.wants(needed):
                raise RpcError(
                    modern.MISSING_REQUIRED_CLIENT_CAPABILITY,
                    f"Server {server} needs {method} from the client, which it does not support",
                )
            msg = jsonrpc.request(f"input-{key}", str(method), request.get("params") or {})
            try:
                reply = await self._ask_client(server, ctx, msg, self.anonymizer.to_fake(msg))
            finally:
                self.attribution.forget_ask(server, msg["id"])
            if reply is None or "result" not in reply:
                error = (reply or {}).get("error") or {}
                raise RpcError(
                    jsonrpc.INTERNAL_ERROR, f"The client did not answer {method}: {error.get('message')}"
                )
            answers[key] = reply["result"]
        return answers

    async def _forward(
        self, server: str, method: str, up_params: dict[str, Any], ctx: RequestContext, params: dict[str, Any]
    ) -> Any:
        up = self.upstreams.get(server)
        if up is None:
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown server {server}")
        state = up_params.get("requestState")
        up_params = self.anonymizer.to_real({k: v for k, v in up_params.items() if k != "requestState"})
        if isinstance(state, str):
            up_params["requestState"] = state
        resp = await self._upstream_request(up, method, up_params, ctx, params)
        if "error" in resp:
            raise jsonrpc.error_from_message(resp.get("error"))  # anonymized in handle()
        result = resp.get("result")
        return self._to_fake_result(result if isinstance(result, dict) else {})

    # A server of the 2026-07-28 era may answer tools/call, prompts/get and resources/read with an
    # ``input_required`` result: what it needs from the client (``inputRequests``) and an opaque
    # ``requestState``; the client asks again with ``inputResponses`` and that state. The gateway
    # relays both ways, anonymizing what is readable and leaving the state byte for byte.
    def _input_responses(self, params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(params.get("inputResponses"), dict):
            out["inputResponses"] = self.anonymizer.to_real(params["inputResponses"])
        if isinstance(params.get("requestState"), str):
            out["requestState"] = params["requestState"]
        return out

    def _to_fake_result(self, result: dict[str, Any]) -> dict[str, Any]:
        state = result.get("requestState")
        answer: dict[str, Any] = self.anonymizer.to_fake(
            {k: v for k, v in result.items() if k != "requestState"} if state is not None else result
        )
        if state is not None:
            answer["requestState"] = state
        return answer

    async def _audited_forward(
        self,
        canonical: str,
        server: str,
        method: str,
        up_params: dict[str, Any],
        ctx: RequestContext,
        params: dict[str, Any],
    ) -> Any:
        """:meth:`_forward` with one audit record, written before the server is asked (a prompt get or
        a resource read reaches a server as a tool call does). The tool column holds the canonical
        name (``server/prompt`` or ``server/uri``); the arguments, the method and the client's params."""
        started = time.monotonic()
        args = {"method": method, **{k: v for k, v in params.items() if k != "_meta"}}
        decision = self._client(ctx)[1].decide(canonical)
        record = AuditDraft(
            session=ctx.session.id if ctx.session else None,
            tool=canonical,
            args=args,
            source=decision.source,
            client=ctx.session.client if ctx.session else None,
        )
        if not await self._record_start(record):
            raise RpcError(jsonrpc.INTERNAL_ERROR, AUDIT_UNAVAILABLE)
        error: str | None = "cancelled before it finished"
        record.outcome = "error"
        try:
            result = await self._forward(server, method, up_params, ctx, params)
            record.outcome, error = "ok", None
            return result
        except RpcError as exc:
            error = self.anonymizer.to_fake_text(exc.message)[:500]
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self._record(record, started, error)

    # Prompts, resources and completions obey the server's policy like its tools: each is named
    # `<server>/<prompt name>` or `<server>/<uri>`; what a rule denies is neither listed nor served.
    def _deny(self, canonical: str, ctx: RequestContext | None = None) -> None:
        view, policy = self._client(ctx) if ctx is not None else (None, self.policy)
        if view is not None and not view.sees(canonical):
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown: {canonical.partition('/')[2]}")
        decision = policy.decide(canonical)
        if decision.action == "deny":
            where = f"rule {decision.rule!r}" if decision.rule else "the default policy"
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Access to {canonical} denied by {where}.")

    async def m_prompts_list(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await self.settled()
        view, policy = self._client(ctx)
        prompts = [
            e.item
            for e in self.catalog.prompts.values()
            if view.sees(e.canonical) and policy.visible(e.canonical)
        ]
        return {"prompts": self.anonymizer.to_fake(prompts)}

    async def m_prompts_get(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        name = params.get("name")
        entry = self.catalog.prompts.get(name) if isinstance(name, str) else None
        if entry is None or not self._client(ctx)[0].sees(entry.canonical):
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {name}")
        self._deny(entry.canonical, ctx)
        return await self._audited_forward(
            entry.canonical, entry.server, "prompts/get", {**params, "name": entry.original}, ctx, params
        )

    async def m_resources_list(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await self.settled()
        owner = self.catalog.resources
        view, policy = self._client(ctx)
        items = [
            r
            for r in self.catalog.resource_items
            if view.sees(f"{owner[r['uri']]}/{r['uri']}") and policy.visible(f"{owner[r['uri']]}/{r['uri']}")
        ]
        return {"resources": self.anonymizer.to_fake(items)}

    async def m_resources_templates_list(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await self.settled()
        view, policy = self._client(ctx)
        templates = [
            tpl
            for _, server, tpl in self.catalog.templates
            if view.sees(f"{server}/{tpl['uriTemplate']}")
            and policy.visible(f"{server}/{tpl['uriTemplate']}")
        ]
        return {"resourceTemplates": self.anonymizer.to_fake(templates)}

    def _resource_server(self, params: dict[str, Any], ctx: RequestContext | None = None) -> tuple[str, str]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise RpcError(jsonrpc.INVALID_PARAMS, "uri must be a string")
        real_uri = self.anonymizer.to_real_text(uri)
        # A listed resource belongs to its server; otherwise the first server whose template
        # matches and whose policy allows the URI serves it.
        candidates = [self.catalog.resources[u] for u in (real_uri, uri) if u in self.catalog.resources]
        candidates += [srv for rx, srv, _ in self.catalog.templates if rx.match(real_uri) or rx.match(uri)]
        view, policy = self._client(ctx) if ctx is not None else (None, self.policy)
        if view is not None:  # what the client does not see does not exist for it
            candidates = [srv for srv in candidates if view.sees(f"{srv}/{real_uri}")]
        if not candidates:
            raise RpcError(jsonrpc.RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
        allowed = [srv for srv in candidates if policy.visible(f"{srv}/{real_uri}")]
        if not allowed:
            self._deny(f"{candidates[0]}/{real_uri}", ctx)
        return allowed[0], uri

    async def m_resources_read(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        server, uri = self._resource_server(params, ctx)
        return await self._audited_forward(f"{server}/{uri}", server, "resources/read", params, ctx, params)

    async def m_resources_subscribe(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        server, uri = self._resource_server(params, ctx)
        if ctx.session is not None:
            ctx.session.subscriptions.add(uri)
        return await self._forward(server, "resources/subscribe", params, ctx, params)

    async def m_resources_unsubscribe(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        server, uri = self._resource_server(params, ctx)
        if ctx.session is not None:
            ctx.session.subscriptions.discard(uri)
        return await self._forward(server, "resources/unsubscribe", params, ctx, params)

    async def m_completion_complete(self, params: dict[str, Any], ctx: RequestContext) -> Any:
        ref = params.get("ref")
        ref = ref if isinstance(ref, dict) else {}
        if ref.get("type") == "ref/prompt":
            entry = self.catalog.prompts.get(str(ref.get("name")))
            if entry is None or not self._client(ctx)[0].sees(entry.canonical):
                raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {ref.get('name')}")
            self._deny(entry.canonical, ctx)
            return await self._forward(
                entry.server,
                "completion/complete",
                {**params, "ref": {**ref, "name": entry.original}},
                ctx,
                params,
            )
        if ref.get("type") == "ref/resource":
            server, _ = self._resource_server({"uri": ref.get("uri")}, ctx)
            return await self._forward(server, "completion/complete", params, ctx, params)
        raise RpcError(jsonrpc.INVALID_PARAMS, "completion/complete needs a ref/prompt or ref/resource")

    async def m_logging_set_level(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        level = params.get("level")
        if level not in MCP_LOG_LEVELS:
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Invalid log level: {level}")
        if ctx.session is not None:
            ctx.session.log_level = level
        # Servers are shared: ask them for the most verbose level any session wants, and filter
        # per session on the way out (wants_log).
        levels = [s.log_level for s in self.sessions.all() if s.log_level in MCP_LOG_LEVELS] or [level]
        up_level = min(levels, key=MCP_LOG_LEVELS.index)
        for up in self.upstreams.values():
            if up.peer is not None and "logging" in up.capabilities and not up.modern:
                # (A stateless-era server gets the level in each request's _meta instead.)
                try:
                    await up.peer.request("logging/setLevel", {"level": up_level}, timeout=5)
                except RpcError:
                    pass
        return {}

    _methods: dict[str, Handler] = {
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
        "server/discover": m_server_discover,
        "tasks/get": m_tasks_get,
        "tasks/update": m_tasks_update,
        "tasks/cancel": m_tasks_cancel,
    }

    # -- upstream → gateway ------------------------------------------------------------------
    async def on_upstream_message(self, peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        method = msg.get("method", "")
        params = msg.get("params")
        params = params if isinstance(params, dict) else {}
        up = self.upstreams.get(peer.name)
        if method.endswith("/list_changed") and up is not None:
            what = method.split("/")[1]
            if what in ("tools", "prompts", "resources") and self._nursery is not None:
                # In the background: the refresh asks the server, whose answers are held until its
                # notifications are handled (the peer keeps their order). One refresh per server and
                # list at a time: a flood of list_changed costs one more refresh, not a task each.
                key = (peer.name, what)
                if key in self._refreshing:
                    self._refreshing[key] = True  # run once more when the current one is done
                else:
                    self._refreshing[key] = False
                    self._nursery.start_soon(self._refresh_upstream, up, peer, what)
            return None
        if method == "notifications/progress":
            target = self.attribution.progress_target(params.get("progressToken"))
            if target is not None:
                ctx, token = target
                await ctx.send(
                    jsonrpc.notification(method, self.anonymizer.to_fake({**params, "progressToken": token}))
                )
            return None
        if method == "notifications/resources/updated":
            uri = self.anonymizer.to_fake_text(str(params.get("uri", "")))
            out = jsonrpc.notification(method, self.anonymizer.to_fake(params))
            self.sessions.resource_updated(out, uri)
            return None
        if method == "ping" and "id" in msg:
            return jsonrpc.result_response(msg["id"], {})
        if method == "notifications/cancelled":
            # The server withdrew one of its own requests to a client: tell that client, stop waiting.
            rid = params.get("requestId")
            asked = self.attribution.asked(peer.name, rid) if jsonrpc.hashable_id(rid) else None
            if asked is not None:
                ctx, our_id, ans = asked
                reason = params.get("reason")
                reason = self.anonymizer.to_fake_text(reason) if isinstance(reason, str) else "cancelled"
                await ctx.send(jsonrpc.notification(method, {"requestId": our_id, "reason": reason}))
                ans.withdraw()
            return None
        out = self.anonymizer.to_fake(msg)
        attributed = self.attribution.attributed(peer.name)
        if "id" not in msg or msg.get("id") is None:
            # Logging and other notifications: to the attributed session, else to every session's
            # GET stream; log messages below a session's `logging/setLevel` are not sent to it.
            if attributed is not None:
                if wants_log(attributed.session, out):
                    await attributed.send(out)
            else:
                for s in self.sessions.all():
                    if wants_log(s, out):
                        s.push(out)
            return None
        # A server→client request (sampling, elicitation, roots): ask the attributed session.
        if attributed is None or attributed.session is None:
            why = (
                "several client sessions use this server; set per_session = true for it"
                if self.attribution.busy_sessions(peer.name) > 1
                else "no client session can answer this now"
            )
            return jsonrpc.error_response(msg["id"], jsonrpc.METHOD_NOT_FOUND, f"{method}: {why}")
        if attributed.session.modern:
            return self._refuse_mid_call(peer.name, attributed, msg)
        needed = CLIENT_CAPABILITY.get(method)
        if needed is not None and not attributed.session.wants(needed):
            return jsonrpc.error_response(
                msg["id"], jsonrpc.METHOD_NOT_FOUND, f"{method}: the client does not support {needed}"
            )
        try:
            return await self._ask_client(peer.name, attributed, msg, out)
        finally:
            self.attribution.forget_ask(peer.name, msg["id"])

    def _refuse_mid_call(self, server: str, ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
        """A server asked a stateless-era (2026-07-28) client something in the middle of a call:
        such a client takes no request then. The call ends at once with an error that says why
        (whatever the server answers later is dropped), and the server is told no."""
        method = msg.get("method")
        why = (
            f"server {server} asked the client for {method} during the call; a client of MCP "
            f"{ctx.session.protocol_version if ctx.session else '2026-07-28'} cannot be asked anything "
            "in the middle of a call (use a 2025-era session for this tool)"
        )
        needed = CLIENT_CAPABILITY.get(str(method))
        declared = ctx.session is not None and needed is not None and ctx.session.wants(needed)
        data: dict[str, Any] | None = None
        if needed is not None and not declared:
            data = {"requiredCapabilities": {needed: {}}}
        ctx.failure = RpcError(modern.MISSING_REQUIRED_CLIENT_CAPABILITY, why, data)
        scope = ctx.session.inflight.get(ctx.request_id) if ctx.session is not None else None
        if scope is not None:
            scope.cancel()
        log.warning("%s", why)
        return jsonrpc.error_response(msg["id"], jsonrpc.METHOD_NOT_FOUND, f"{method}: {why}")

    async def _refresh_upstream(self, up: Upstream, peer: Peer, what: str) -> None:
        key = (peer.name, what)
        try:
            while True:
                self._refreshing[key] = False
                try:
                    await up.refresh(peer, what)
                except RpcError as exc:
                    log.warning("server %s: refreshing %s failed: %s", peer.name, what, exc.message)
                    return
                if up.peer is peer:
                    self.rebuild_catalog()
                if not self._refreshing.get(key):
                    return  # no list_changed came in meanwhile
        finally:
            self._refreshing.pop(key, None)

    async def _session_upstream(self, session: ClientSession, shared: Upstream) -> Upstream:
        """The session's own process of a ``per_session`` server, started on first use."""
        key = (session.id, shared.name)
        found = self._session_upstreams.get(key)
        if found is None:
            assert self._nursery is not None
            up = shared.clone(
                f"{shared.name}@{session.id[:8]}",
                transport_for(shared.cfg, self._env, clean_log=self._clean_log, oauth=self._oauth),
            )
            scope = trio.CancelScope()
            self._session_upstreams[key] = (up, scope)
            self.attribution.set_owner(up.name, session)

            async def run() -> None:
                with scope:
                    await up.run()

            self._nursery.start_soon(run)
            found = (up, scope)
        up = found[0]
        # First use: wait for it to come up (or fail: then the call reports it as not running).
        with trio.move_on_after(INIT_TIMEOUT):
            await up.ready.wait()
        return up

    async def _ask_client(
        self, upstream: str, ctx: RequestContext, msg: dict[str, Any], out: dict[str, Any]
    ) -> dict[str, Any] | None:
        session = ctx.session
        assert session is not None
        our_id, ans = self.attribution.ask(upstream, msg["id"], ctx)
        session.waiting[our_id] = ans
        try:
            sent = await ctx.send({**out, "id": our_id})
            if not sent:
                return jsonrpc.error_response(
                    msg["id"], jsonrpc.METHOD_NOT_FOUND, f"{msg['method']}: the client has no open stream"
                )
            with trio.move_on_after(CLIENT_REQUEST_TIMEOUT):
                await ans.event.wait()
            if ans.withdrawn:
                return None  # the receiver of a cancellation does not answer the cancelled request
            reply = ans.message
            if reply is None:
                return jsonrpc.error_response(msg["id"], jsonrpc.INTERNAL_ERROR, "the client did not answer")
            reply = self.anonymizer.to_real(reply)
            return {**reply, "id": msg["id"]}
        finally:
            session.waiting.pop(our_id, None)


def capabilities() -> dict[str, Any]:
    """What the gateway serves, as initialize and server/discover declare it (a fresh dict each time)."""
    return {
        "tools": {"listChanged": True},
        "prompts": {"listChanged": True},
        "resources": {"subscribe": True, "listChanged": True},
        "logging": {},
        "completions": {},
    }


MAX_CHILD_TASKS = 10_000  # relayed task handles remembered (the oldest are forgotten first)


def _is_modern(ctx: RequestContext) -> bool:
    return ctx.session is not None and ctx.session.modern


MAX_INPUT_ROUNDS = 8  # input_required rounds the gateway answers for a handshake-era client
MAX_INPUT_REQUESTS = 16  # input requests in one round


def _input_required(result: Any) -> bool:
    return isinstance(result, dict) and result.get("resultType") == "input_required"


def _client_capabilities(session: ClientSession | None) -> dict[str, Any]:
    """What the client on whose behalf a stateless-era server is asked can answer: a modern client's
    own declaration; for a handshake-era client, what it declared at initialize of those the gateway
    can relay (it asks such a client mid-call); nothing without a session."""
    if session is None:
        return {}
    if session.modern:
        return session.capabilities
    return {name: {} for name in ("sampling", "elicitation", "roots") if session.wants(name)}


def wants_log(session: ClientSession | None, msg: dict[str, Any]) -> bool:
    """False for a log message below the level the session asked for with logging/setLevel (or, in
    the stateless era, in the request's ``_meta``: without one, no logs at all)."""
    if session is None or msg.get("method") != "notifications/message":
        return True
    if session.log_level is None:
        return not session.modern
    params = msg.get("params")
    level = params.get("level") if isinstance(params, dict) else None
    if level not in MCP_LOG_LEVELS:
        return True
    return MCP_LOG_LEVELS.index(level) >= MCP_LOG_LEVELS.index(session.log_level)


def _progress_token(params: dict[str, Any]) -> Any:
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        return None
    token = meta.get("progressToken")
    return token if isinstance(token, str | int) and not isinstance(token, bool) else None


def _unexpected(exc: Exception) -> bool:
    """A bug rather than a database that failed or stayed locked: worth a traceback in the log."""
    from ..store import StoreError

    return not isinstance(exc, StoreError)


def _first_text(result: dict[str, Any]) -> str | None:
    content = result.get("content")
    if isinstance(content, list):
        for item in content:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                return str(item["text"])[:500]
    return None


def _meta_of(item: dict[str, Any]) -> dict[str, Any]:
    """The ``_meta`` object a server sent with a list item, or an empty one."""
    meta = item.get("_meta")
    return meta if isinstance(meta, dict) else {}
